"""Chromatic analysis: how far the attack colour is from the pixel's neighbours (chromatic paper, 3.1).

``h = sqrt(((r - rμ)² + (g - gμ)² + (b - bμ)²) / 3)`` with every value scaled to [0, 1] and
``(rμ, gμ, bμ)`` the mean colour of the attack pixel's 8 neighbours in the ORIGINAL image
(5 at an edge, 3 at a corner). The papers' inclusion filter keeps decrease attacks that ended
below 0.9 and increase attacks that ended above 0.1.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.analysis.stats import gain, spearman
from onepixel.errors import OnepixelError
from onepixel.runs.evidence import Evidence, compare_groups
from onepixel.runs.schema import image_path

log = logging.getLogger(__name__)

__all__ = ["ChromaticStats", "OriginalPixels", "chromatic_h", "chromatic_stats", "neighbour_mean",
           "paper_filter", "read_original_pixels", "read_rgb"]


def neighbour_mean(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """Mean colour of the pixels around ``(x, y)``, scaled to [0, 1].

    Parameters
    ----------
    image : ndarray, (H, W, 3) uint8
        The original (unattacked) image.
    x, y : int
        Column and row of the attack pixel.

    Returns
    -------
    ndarray, (3,) float64
        Mean over the 8 neighbours (5 on an edge, 3 in a corner), the pixel itself excluded.

    Raises
    ------
    OnepixelError
        ``(x, y)`` outside the image.
    """
    h, w = image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise OnepixelError(f"pixel ({x}, {y}) is outside the {w}x{h} image")
    if h * w == 1:
        return np.full(3, np.nan)
    window = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].astype(np.float64)
    count = window.shape[0] * window.shape[1] - 1
    total = window.reshape(-1, 3).sum(axis=0) - image[y, x].astype(np.float64)
    return total / count / 255.0


def chromatic_h(rgb: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """RMSE between attack colours and their neighbours' mean colours.

    Parameters
    ----------
    rgb : ndarray, (N, 3)
        Attack colours 0..255.
    neighbours : ndarray, (N, 3)
        Neighbour means already scaled to [0, 1] (see :func:`neighbour_mean`).

    Returns
    -------
    ndarray, (N,) float64 in [0, 1].
    """
    c = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
    mu = np.asarray(neighbours, dtype=np.float64).reshape(-1, 3)
    return np.sqrt(((c - mu) ** 2).sum(axis=1) / 3.0)


def paper_filter(goal: np.ndarray, attacked_score: np.ndarray, positive_below: float = 0.9,
                 negative_above: float = 0.1) -> np.ndarray:
    """The chromatic paper's inclusion filter.

    Parameters
    ----------
    goal : ndarray, (N,) str
        ``decrease`` or ``increase``.
    attacked_score : ndarray, (N,)
    positive_below, negative_above : float
        Decrease attacks are kept when they ended below ``positive_below``, increase attacks
        when they ended above ``negative_above`` (the campaign's skip thresholds, 0.9 / 0.1).

    Returns
    -------
    ndarray, (N,) bool
    """
    goal = np.asarray(goal).astype(str)
    s = np.asarray(attacked_score, dtype=np.float64)
    lowers = np.isin(goal, ("decrease", "untargeted"))
    return np.where(lowers, s < positive_below, s > negative_above) & ~np.isnan(s)


@dataclass(frozen=True)
class ChromaticStats:
    """Distribution of ``h`` in a set of attacks and how it relates to their effect.

    Attributes
    ----------
    n : int
    mean, median, sd : float
        Of ``h`` (``sd`` with ddof=1).
    rho : float
        Spearman correlation between ``h`` and the score change towards the goal.
    gain_high, gain_low : float
        Mean score change towards the goal of attacks with ``h`` above / at-or-below the median.
    split : Evidence or None
        The test of whether the two halves' score changes differ (Mann-Whitney U): what the
        narratives may conclude from ``gain_high`` against ``gain_low``.
    """

    n: int
    mean: float
    median: float
    sd: float
    rho: float
    gain_high: float
    gain_low: float
    split: Evidence | None = None


def chromatic_stats(h: np.ndarray, goal: str, before: np.ndarray, after: np.ndarray) -> ChromaticStats:
    """Summarise ``h`` (N,) for attacks of one goal with original/attacked scores (N,) each."""
    h = np.asarray(h, dtype=np.float64)
    ok = ~np.isnan(h)
    h = h[ok]
    g = gain(goal, np.asarray(before)[ok], np.asarray(after)[ok])
    nan = float("nan")
    if h.size == 0:
        return ChromaticStats(0, nan, nan, nan, nan, nan, nan)
    med = float(np.median(h))
    high, low = g[h > med], g[h <= med]
    return ChromaticStats(int(h.size), float(h.mean()), med,
                          float(np.std(h, ddof=1)) if h.size > 1 else nan, spearman(h, g),
                          float(high.mean()) if high.size else nan, float(low.mean()) if low.size else nan,
                          compare_groups(high, low))


@dataclass(frozen=True)
class OriginalPixels:
    """What the analysis needs from the original images, read once.

    Attributes
    ----------
    neighbours : ndarray, (N, 3) float64
        Neighbour mean colour in [0, 1] per row; ``nan`` where the image could not be read.
    missing : tuple of str
        Images that could not be read (first few reasons are logged).
    image_shape : (H, W) or None
        Size of the first image read.
    """

    neighbours: np.ndarray
    missing: tuple[str, ...]
    image_shape: tuple[int, int] | None


def read_rgb(path: Path) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3), with :func:`onepixel.datasets.images.load_image`'s semantics.

    The common case (an RGB file) is decoded from one ``read`` of the file, about twice as fast
    as letting PIL read the file in small pieces; anything else (greyscale, palette, alpha, a
    broken file) goes through ``load_image`` itself, so conversions and error messages are the same.

    Raises
    ------
    ImageError
        Missing or unreadable file (from ``load_image``).
    """
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            if img.mode == "RGB":
                img.load()
                return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        pass
    from onepixel.datasets.images import load_image

    return load_image(path)


def _neighbour_block(root: str, names: list[str], xs: list[int], ys: list[int]
                     ) -> tuple[np.ndarray, list[tuple[int, int] | None], list[str]]:
    """Neighbour means for a block of rows (runs in a worker process or in-process)."""
    out = np.full((len(names), 3), np.nan)
    shapes: list[tuple[int, int] | None] = []
    errors: list[str] = []
    base = Path(root)
    for k, (name, x, y) in enumerate(zip(names, xs, ys, strict=True)):
        try:
            img = read_rgb(image_path(base, name))
            out[k] = neighbour_mean(img, x, y)
            shapes.append((int(img.shape[0]), int(img.shape[1])))
            errors.append("")
        except OnepixelError as exc:
            shapes.append(None)
            errors.append(str(exc))
        except (OSError, ValueError) as exc:
            shapes.append(None)
            errors.append(f"{base / name}: {exc}")
    return out, shapes, errors


#: Below this many images the analysis reads them in-process (starting workers costs ~0.5 s).
PROCESS_THRESHOLD = 4000


def read_original_pixels(root: Path, images: np.ndarray, x: np.ndarray, y: np.ndarray,
                         workers: int | None = None) -> OriginalPixels:
    """Neighbour means of attack pixels, from the original images in the dataset folder.

    Every image is opened and decoded. PNG decoding holds the GIL, so large sets are read by
    worker processes (``forkserver`` where available, else ``spawn``).

    Parameters
    ----------
    root : Path
        Dataset root (``config["dataset"]``).
    images : ndarray, (N,) str
        Dataset-relative image names.
    x, y : ndarray, (N,) int
        Attack pixel of each row.
    workers : int, optional
        Worker processes; default the number of CPUs (at most 8). 1 reads in-process.

    Returns
    -------
    OriginalPixels
    """
    n = len(images)
    names = [str(v) for v in images]
    xs = [int(v) for v in x]
    ys = [int(v) for v in y]
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    if n < PROCESS_THRESHOLD:
        workers = 1
    size = max(256, -(-n // (workers * 4)))
    starts = range(0, n, size)
    parts = None
    if workers > 1:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method)) as pool:
                futures = [pool.submit(_neighbour_block, str(root), names[s:s + size], xs[s:s + size],
                                       ys[s:s + size]) for s in starts]
                parts = [f.result() for f in futures]
        except (OSError, BrokenProcessPool) as exc:
            log.warning("chromatic analysis: worker processes failed (%s); reading in-process", exc)
    if parts is None:
        parts = [_neighbour_block(str(root), names[s:s + size], xs[s:s + size], ys[s:s + size])
                 for s in starts]
    out = np.concatenate([p[0] for p in parts]) if parts else np.full((0, 3), np.nan)
    shapes = [sh for p in parts for sh in p[1]]
    errors = [e for p in parts for e in p[2]]
    missing = [names[i] for i, e in enumerate(errors) if e]
    for e in [e for e in errors if e][:3]:
        log.warning("chromatic analysis: %s", e)
    if missing:
        log.warning("chromatic analysis: %d of %d original images could not be read", len(missing), n)
    shape = next((sh for sh in shapes if sh is not None), None)
    return OriginalPixels(out, tuple(missing), shape)
