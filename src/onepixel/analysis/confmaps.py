"""One-pixel confidence maps stored in a RUN (``RUN/confmaps/*/confmap.npz``).

A map holds, per pixel, the ``min``, ``max`` and ``mean`` score over a grid of colours (arrays
(H, W)), and the colours reaching the min and max (``argmin_rgb``, ``argmax_rgb``, (H, W, 3)).
Metadata is read leniently: scalar entries of the npz (``image``, ``original_score``, ``step``,
``direction``, ...), a JSON string entry ``metadata``, or a ``metadata.json`` / ``meta.json``
file beside it. An ``original`` (H, W, 3) uint8 entry, or an ``image`` entry naming a file in
the dataset, gives the original image for the panel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.analysis.run import AnalysisError

log = logging.getLogger(__name__)

__all__ = ["Confmap", "ConfmapStats", "confmap_stats", "load_confmap"]

REQUIRED = ("min", "max", "mean")


@dataclass(frozen=True, eq=False)
class Confmap:
    """One confidence map.

    Attributes
    ----------
    name : str
        Its folder name under ``RUN/confmaps``.
    min, max, mean : ndarray, (H, W) float64
    argmin_rgb, argmax_rgb : ndarray, (H, W, 3) int or None
    metadata : dict
    original : ndarray, (H, W, 3) uint8 or None
    """

    name: str
    path: Path
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    argmin_rgb: np.ndarray | None = None
    argmax_rgb: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    original: np.ndarray | None = None

    @property
    def original_score(self) -> float:
        for key in ("original_score", "score", "base_score"):
            if key in self.metadata:
                try:
                    return float(self.metadata[key])
                except (TypeError, ValueError):
                    pass
        return float("nan")


def _scalar(value: np.ndarray) -> Any:
    if value.ndim == 0:
        return value.item()
    if value.size == 1 and value.dtype.kind in "USO":
        return value.reshape(()).item()
    return None


def load_confmap(path: str | Path, dataset_root: Path | None = None) -> Confmap:
    """Read ``confmap.npz``.

    Parameters
    ----------
    path : path
        The npz file.
    dataset_root : Path, optional
        Where to find the original image named by the ``image`` metadata entry.

    Raises
    ------
    AnalysisError
        Unreadable file, or ``min``/``max``/``mean`` missing or not 2-D arrays of one shape.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise AnalysisError(f"cannot read confidence map {path}: {exc}") from exc
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise AnalysisError(f"{path}: missing array(s) {', '.join(missing)} (found "
                            f"{', '.join(sorted(data)) or 'none'}); re-create it with `onepixel confmap`")
    maps = {k: np.asarray(data[k], dtype=np.float64) for k in REQUIRED}
    shape = maps["min"].shape
    if len(shape) != 2 or any(m.shape != shape for m in maps.values()):
        raise AnalysisError(f"{path}: min, max and mean must be (H, W) arrays of one shape, got "
                            f"{', '.join(str(m.shape) for m in maps.values())}")
    meta: dict[str, Any] = {}
    for sidecar in ("metadata.json", "meta.json"):
        side = path.parent / sidecar
        if side.is_file():
            try:
                loaded = json.loads(side.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    meta.update(loaded)
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable %s: %s", side, exc)
    for key, value in data.items():
        if key in REQUIRED or key in ("argmin_rgb", "argmax_rgb", "original"):
            continue
        scalar = _scalar(value)
        if key == "metadata" and isinstance(scalar, str):
            try:
                loaded = json.loads(scalar)
                if isinstance(loaded, dict):
                    meta.update(loaded)
                    continue
            except ValueError:
                pass
        if scalar is not None:
            meta[key] = scalar
    rgb = {}
    for key in ("argmin_rgb", "argmax_rgb"):
        arr = data.get(key)
        rgb[key] = arr if arr is not None and arr.shape == (*shape, 3) else None
    original = data.get("original")
    if original is not None and original.shape != (*shape, 3):
        original = None
    if original is None and isinstance(meta.get("image"), str):
        original = _find_original(str(meta["image"]), dataset_root, shape)
    return Confmap(name=path.parent.name, path=path, argmin_rgb=rgb["argmin_rgb"],
                   argmax_rgb=rgb["argmax_rgb"], metadata=meta,
                   original=None if original is None else np.asarray(original, dtype=np.uint8), **maps)


def _find_original(image: str, root: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    from onepixel.data import load_image
    from onepixel.errors import OnepixelError

    candidates = [Path(image)]
    if root is not None:
        candidates.insert(0, root / image)
    for cand in candidates:
        if cand.is_file():
            try:
                img = load_image(cand)
            except OnepixelError as exc:
                log.warning("confidence map original %s: %s", cand, exc)
                return None
            return img if img.shape[:2] == tuple(shape) else None
    return None


@dataclass(frozen=True)
class ConfmapStats:
    """Where a confidence map is lowest and highest, and its checkerboard contrast.

    ``even_min_mean`` / ``other_min_mean``: mean of the ``min`` map over pixels with both
    coordinates even / all other pixels (the chromatic paper's checkerboard, Fig. 5).
    """

    lowest: float
    lowest_xy: tuple[int, int]
    lowest_rgb: tuple[int, int, int] | None
    highest: float
    highest_xy: tuple[int, int]
    highest_rgb: tuple[int, int, int] | None
    mean: float
    even_min_mean: float
    other_min_mean: float


def confmap_stats(cm: Confmap) -> ConfmapStats:
    """Summarise one :class:`Confmap`."""
    ly, lx = np.unravel_index(int(np.nanargmin(cm.min)), cm.min.shape)
    hy, hx = np.unravel_index(int(np.nanargmax(cm.max)), cm.max.shape)
    yy, xx = np.indices(cm.min.shape)
    even = (yy % 2 == 0) & (xx % 2 == 0)

    def rgb(arr: np.ndarray | None, y: int, x: int) -> tuple[int, int, int] | None:
        return None if arr is None else tuple(int(v) for v in arr[y, x])  # type: ignore[return-value]

    return ConfmapStats(float(cm.min[ly, lx]), (int(lx), int(ly)), rgb(cm.argmin_rgb, ly, lx),
                        float(cm.max[hy, hx]), (int(hx), int(hy)), rgb(cm.argmax_rgb, hy, hx),
                        float(np.nanmean(cm.mean)), float(np.nanmean(cm.min[even])),
                        float(np.nanmean(cm.min[~even])))
