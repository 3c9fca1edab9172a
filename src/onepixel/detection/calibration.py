"""The detector's statistic and its threshold, calibrated on clean tiles to a false-positive rate.

The statistic of an image is the largest, over its pixels, of how much a pixel stands out from
its 8 neighbours: ``h`` (the chromatic paper's h: RMSE on [0, 1] against the neighbours' mean
colour, the default) or ``residual`` (the largest channel difference from the neighbours'
median). An image is flagged when its statistic exceeds the threshold.

Calibration cuts 64x64 tissue tiles from the registered H&E images and splits them in two kept
apart: tiles at an even position in each image's tile order calibrate (the threshold is the
``1 - fpr`` quantile of their statistics), the odd ones measure the false-positive rate on
tiles the threshold never saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

import onepixel.assets as assets
from onepixel.datasets.tiles import iter_slide_tiles
from onepixel.defences.filters import h_map, residual_map
from onepixel.errors import ConfigError

log = logging.getLogger(__name__)

STATISTICS = ("h", "residual")
DEFAULT_FPR = 0.05


def image_statistic(images: np.ndarray, statistic: str = "h") -> np.ndarray:
    """(N,) float64: the largest per-pixel ``statistic`` of each uint8 image (N, H, W, C)."""
    if statistic not in STATISTICS:
        raise ConfigError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}",
                          field="statistic")
    images = np.asarray(images)
    per_pixel = h_map(images) if statistic == "h" else residual_map(images)
    return per_pixel.reshape(len(images), -1).max(axis=1)


@dataclass(frozen=True)
class Calibration:
    """A detector threshold and how it was obtained.

    Attributes
    ----------
    statistic : str
        ``h`` or ``residual``.
    threshold : float
        Flag an image whose statistic is above this.
    target_fpr : float
        The false-positive rate asked for (on the calibration tiles).
    n_calibration, n_heldout : int
        Clean tiles used to set the threshold, and held-out clean tiles (never used to set it).
    heldout_fpr : float
        The fraction of held-out tiles flagged (nan without held-out tiles).
    sources : tuple of str
        The images the tiles were cut from.
    """

    statistic: str
    threshold: float
    target_fpr: float
    n_calibration: int
    n_heldout: int
    heldout_fpr: float
    sources: tuple[str, ...]

    @classmethod
    def fixed(cls, threshold: float, statistic: str = "h") -> Calibration:
        """A threshold given by the user, not calibrated: no target or measured rate, no tiles."""
        if statistic not in STATISTICS:
            raise ConfigError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        return cls(statistic=statistic, threshold=float(threshold), target_fpr=float("nan"),
                   n_calibration=0, n_heldout=0, heldout_fpr=float("nan"), sources=())

    def flag(self, values: np.ndarray) -> np.ndarray:
        """(N,) bool: which statistics are above the threshold."""
        return np.asarray(values) > self.threshold

    def to_dict(self) -> dict:
        return {"statistic": self.statistic, "threshold": self.threshold,
                "target_fpr": self.target_fpr, "n_calibration": self.n_calibration,
                "n_heldout": self.n_heldout, "heldout_fpr": self.heldout_fpr,
                "sources": list(self.sources), "split": "alternate tiles of each image"}


def clean_tiles(assets_dir: str | None = None,
                size: int = 64) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Clean tissue tiles of the registered H&E images, split in two disjoint halves.

    Returns
    -------
    calibration : ndarray, uint8, (Nc, size, size, 3)
        Tiles at even positions in each image's tile order.
    heldout : ndarray, uint8, (Nh, size, size, 3)
        Tiles at odd positions (no tile is in both halves; tiles do not overlap).
    sources : tuple of str
    """
    cal, held, sources = [], [], []
    for name in assets.HE_IMAGES:
        path = assets.ensure(name, assets_dir)
        sources.append(path.name)
        for i, (_, _, tile) in enumerate(iter_slide_tiles(path, size=size)):
            (cal if i % 2 == 0 else held).append(np.array(tile))
    return np.stack(cal), np.stack(held), tuple(sources)


def _check_fpr(fpr: float) -> None:
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"fpr (the target false-positive rate) must be in (0, 1), got {fpr}", field="fpr")


def calibrate_on_clean_tiles(fpr: float = DEFAULT_FPR, statistic: str = "h",
                             assets_dir: str | None = None) -> tuple[Calibration, np.ndarray]:
    """:func:`calibrate` on the registered H&E images' clean tiles, and the held-out tiles'
    statistics (N,) float64 (the clean side of a ROC curve)."""
    _check_fpr(fpr)  # before the tiles are cut
    cal, held, sources = clean_tiles(assets_dir)
    calibration = calibrate(fpr, statistic, tiles=(cal, held))
    return replace(calibration, sources=sources), image_statistic(held, statistic)


def threshold_at(values: np.ndarray, fpr: float) -> float:
    """The smallest observed value above which at most ``fpr`` of ``values`` lie."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    k = int(np.ceil((1.0 - fpr) * len(values))) - 1
    return float(values[min(max(k, 0), len(values) - 1)])


def calibrate(fpr: float = DEFAULT_FPR, statistic: str = "h", assets_dir: str | None = None,
              tiles: tuple[np.ndarray, np.ndarray] | None = None) -> Calibration:
    """Set the threshold on clean calibration tiles for a false-positive rate ``fpr`` and
    measure it on the held-out tiles.

    Parameters
    ----------
    fpr : float
        Target false-positive rate, in (0, 1).
    tiles : (calibration, heldout), optional
        uint8 (N, H, W, C) clean images to use instead of the H&E tiles.
    """
    _check_fpr(fpr)
    if tiles is None:
        cal, held, sources = clean_tiles(assets_dir)
    else:
        (cal, held), sources = tiles, ("given tiles",)
    threshold = threshold_at(image_statistic(cal, statistic), fpr)
    held_fpr = float(np.mean(image_statistic(held, statistic) > threshold)) if len(held) else float("nan")
    log.info("detector: %s > %.4f (FPR %.3f on %d calibration tiles; %.3f on %d held-out tiles)",
             statistic, threshold, fpr, len(cal), held_fpr, len(held))
    return Calibration(statistic, threshold, fpr, len(cal), len(held), held_fpr, tuple(sources))
