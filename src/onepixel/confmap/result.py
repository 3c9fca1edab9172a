"""The one confidence-map type, its colour grid and its file, ``confmap.npz``.

A map holds, per pixel, the ``min``, ``max`` and ``mean`` score over a grid of colours (arrays
(H, W)), and the colours reaching the min and max (``argmin_rgb``, ``argmax_rgb``, (H, W, 3)).
:func:`write_confmap_npz` writes it; :func:`load_confmap` reads it back (leniently: maps made
by hand or by older versions may lack the run facts, which then take neutral defaults).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.errors import ConfigError, ConfmapError, OnepixelError, is_integer
from onepixel.fileio import save_npz_atomic
from onepixel.version import __version__

log = logging.getLogger(__name__)

RESULT_NAME = "confmap.npz"
FORMAT = 1
_REQUIRED = ("min", "max", "mean")
#: npz entries that are arrays of the map, not metadata.
_ARRAYS = ("min", "max", "mean", "argmin_rgb", "argmax_rgb", "original", "levels")
#: npz entries that are fields of :class:`ConfidenceMap`.
_FACTS = {"original_score": float, "step": int, "evaluations": int, "seconds": float, "model": str,
          "method": str, "device": str, "dtype": str}


def check_step(step) -> None:
    """Raise :class:`ConfigError` unless ``step`` is an integer in 1..255."""
    if not is_integer(step) or not 1 <= step <= 255:
        raise ConfigError(f"colour step must be an integer from 1 to 255, got {step!r} "
                          "(5 gives the papers' grid of 52 values per channel)")


def colour_levels(step: int) -> np.ndarray:
    """Channel values ``{0, step, 2*step, ...} ∪ {255}``, shape (K,), uint8, ascending.

    Raises
    ------
    ConfmapError
        ``step`` is not an integer in 1..255.
    """
    check_step(step)
    levels = list(range(0, 256, step))
    if levels[-1] != 255:
        levels.append(255)
    return np.asarray(levels, dtype=np.uint8)


def colour_grid(step: int) -> np.ndarray:
    """All colours of the grid, shape (K**3, 3), uint8; index ``(ir * K + ig) * K + ib``."""
    lv = colour_levels(step)
    r, g, b = np.meshgrid(lv, lv, lv, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


@dataclass(frozen=True, eq=False)
class ConfidenceMap:
    """A one-pixel confidence map of one image.

    Attributes
    ----------
    min, max, mean : ndarray, shape (H, W), float64
        Score range per pixel over the colour grid (NaN for pixels not mapped).
    argmin_rgb, argmax_rgb : ndarray, shape (H, W, 3), uint8, or None
        The first grid colour (r-major order) that reaches the minimum / maximum.
    original_score : float
        Score of the unmodified image (NaN when unknown).
    step : int
        Colour grid step (0 when unknown).
    evaluations : int
        Model evaluations the map stands for (pixels mapped x colours).
    seconds : float
        Wall time spent computing it (summed over resumed sessions).
    model, method, device, dtype : str
        The model's name, the path that computed it (``fast`` or ``brute``), where, in what.
    metadata : dict
        Further facts stored with the map (``image``, ``direction``, ``why``, ...).
    original : ndarray, shape (H, W, 3), uint8, or None
        The mapped image, when stored with the map or found in the dataset.
    path : Path or None
        The file it was read from.
    """

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    argmin_rgb: np.ndarray | None = None
    argmax_rgb: np.ndarray | None = None
    original_score: float = float("nan")
    step: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    model: str = ""
    method: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    metadata: dict = field(default_factory=dict)
    original: np.ndarray | None = None
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.min.shape  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The folder the map was read from (its name under ``RUN/confmaps``), else the model's."""
        return self.path.parent.name if self.path is not None else self.model

    @property
    def n_colours(self) -> int:
        return len(colour_levels(self.step)) ** 3 if self.step else 0

    def extreme(self, kind: str = "min") -> tuple[int, int, float, tuple[int, int, int] | None]:
        """The best pixel for ``kind`` (min or max): (x, y, score, (r, g, b) or None)."""
        if kind not in ("min", "max"):
            raise ValueError(f"kind must be 'min' or 'max', got {kind!r}")
        arr = self.min if kind == "min" else self.max
        flat = np.nanargmin(arr) if kind == "min" else np.nanargmax(arr)
        y, x = np.unravel_index(flat, arr.shape)
        colours = self.argmin_rgb if kind == "min" else self.argmax_rgb
        rgb = None if colours is None else tuple(int(v) for v in colours[y, x])
        return int(x), int(y), float(arr[y, x]), rgb  # type: ignore[return-value]

    def facts(self) -> dict:
        """JSON-able facts about the map (no arrays), as stored in the npz's ``metadata``."""
        x0, y0, lo, rgb0 = self.extreme("min")
        x1, y1, hi, rgb1 = self.extreme("max")
        return {"format": FORMAT, "onepixel_version": __version__, "model": self.model,
                "step": self.step, "n_colours": self.n_colours,
                "levels": [int(v) for v in colour_levels(self.step)] if self.step else [],
                "original_score": self.original_score, "evaluations": self.evaluations,
                "seconds": self.seconds, "method": self.method, "device": self.device,
                "dtype": self.dtype, "shape": list(self.shape),
                "min_score": lo, "min_at": {"x": x0, "y": y0, "rgb": None if rgb0 is None else list(rgb0)},
                "max_score": hi, "max_at": {"x": x1, "y": y1, "rgb": None if rgb1 is None else list(rgb1)}}


def write_confmap_npz(result: ConfidenceMap, path: str | Path, image: np.ndarray | None = None,
                      metadata: dict | None = None) -> Path:
    """Write ``result`` to ``path`` (``confmap.npz``), atomically.

    The npz holds ``min``, ``max``, ``mean`` (H, W) float64, ``argmin_rgb``, ``argmax_rgb``
    (H, W, 3) uint8, ``levels`` (K,) uint8, ``original_score``, ``step``, ``evaluations``,
    ``seconds`` (0-d), ``model``, ``method``, ``device``, ``dtype`` (0-d str) and ``metadata``
    (a JSON string: :meth:`ConfidenceMap.facts` plus ``metadata``); with ``image``, also
    ``original`` (H, W, 3) uint8. Scalar values of ``metadata`` (e.g. ``image``: the image's id
    in a dataset, ``direction``) are also stored as 0-d entries of their own.
    """
    extra = {**result.metadata, **(metadata or {})}
    arrays: dict[str, np.ndarray] = {
        "min": result.min, "max": result.max, "mean": result.mean,
        "levels": colour_levels(result.step) if result.step else np.zeros(0, np.uint8),
        **{key: np.asarray(getattr(result, key)) for key in _FACTS},
        "metadata": np.asarray(json.dumps({**result.facts(), **extra,
                                           "created": datetime.now(UTC).isoformat()})),
    }
    for key in ("argmin_rgb", "argmax_rgb"):
        if getattr(result, key) is not None:
            arrays[key] = getattr(result, key)
    for key, value in extra.items():
        if isinstance(value, str | int | float) and key not in arrays:
            arrays[key] = np.asarray(value)
    if image is not None:
        arrays["original"] = np.asarray(image, dtype=np.uint8)
    save_npz_atomic(path, **arrays)
    return Path(path)


def _scalar(value: np.ndarray) -> Any:
    if value.ndim == 0:
        return value.item()
    if value.size == 1 and value.dtype.kind in "USO":
        return value.reshape(()).item()
    return None


def load_confmap(path: str | Path, dataset_root: Path | None = None) -> ConfidenceMap:
    """Read a ``confmap.npz`` (or the folder holding one).

    Parameters
    ----------
    path : path
        The npz file, or its folder.
    dataset_root : Path, optional
        Where to find the original image named by the ``image`` metadata entry when the npz
        does not hold it.

    Metadata is read leniently: scalar entries of the npz, a JSON string entry ``metadata``, or a
    ``metadata.json`` / ``meta.json`` file beside it.

    Raises
    ------
    ConfmapError
        No such file, an unreadable one, or ``min``/``max``/``mean`` missing or not 2-D arrays of
        one shape.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_NAME
    if not path.is_file():
        raise ConfmapError(f"no confidence map at {path}: run `onepixel confmap` first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ConfmapError(f"cannot read confidence map {path}: {exc}") from exc
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfmapError(f"{path}: missing array(s) {', '.join(missing)} (found "
                           f"{', '.join(sorted(data)) or 'none'}); re-create it with `onepixel confmap`")
    maps = {k: np.asarray(data[k], dtype=np.float64) for k in _REQUIRED}
    shape = maps["min"].shape
    if len(shape) != 2 or any(m.shape != shape for m in maps.values()):
        raise ConfmapError(f"{path}: min, max and mean must be (H, W) arrays of one shape, got "
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
        if key in _ARRAYS:
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
    facts: dict[str, Any] = {}
    for key, kind in _FACTS.items():
        value = meta.get(key)
        if key == "original_score" and value is None:
            value = meta.get("score", meta.get("base_score"))
        if value is not None:
            try:
                facts[key] = kind(value)
            except (TypeError, ValueError):
                log.warning("%s: ignoring %s=%r (not a %s)", path, key, value, kind.__name__)
    rgb = {}
    for key in ("argmin_rgb", "argmax_rgb"):
        arr = data.get(key)
        rgb[key] = arr.astype(np.uint8) if arr is not None and arr.shape == (*shape, 3) else None
    original = data.get("original")
    if original is not None and original.shape != (*shape, 3):
        original = None
    if original is None and isinstance(meta.get("image"), str):
        original = _find_original(str(meta["image"]), dataset_root, shape)
    return ConfidenceMap(**maps, **rgb, **facts, metadata=meta, path=path,
                         original=None if original is None else np.asarray(original, dtype=np.uint8))


def _find_original(image: str, root: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    from onepixel.datasets.images import load_image

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
