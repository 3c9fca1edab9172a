"""One-pixel confidence maps: every pixel x a colour grid, reduced per pixel.

For one image and a model, every pixel is set to every colour of the grid
``{0, k, 2k, ..., 255}`` per channel (``k`` the step; 255 is always included) and the scores are
reduced per pixel to their minimum, maximum and mean, with the colours that reach the minimum
and the maximum (section 2.2 of the chromatic/spatial paper; step 5 gives its 52^3 = 140,608
colours and 575,930,368 evaluations for a 64x64 image).

Two methods give the same maps:

``brute``
    The reference. Perturbed images go through the evaluator (:mod:`onepixel.evaluate`): for
    torch classifiers they are built on the device from the image held there, so no batch
    crosses to the host; any other classifier gets host-built batches.
``fast``
    Exact incremental inference for KerasNet-based torch classifiers
    (:mod:`onepixel.confmap_fast`): only the window of each early feature map that a pixel can
    change is recomputed. Scores agree with brute force to ~1e-6 (fp32).

``auto`` (the default) takes ``fast`` when it applies and ``brute`` otherwise.

Arrays are in image orientation: ``min[y, x]`` is the score range of pixel column ``x``, row
``y``. Long maps checkpoint to ``DIR/confmap.partial.npz`` and resume when the configuration
matches; a tqdm bar shows evaluations/s and the ETA.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from onepixel import __version__
from onepixel.atomic import atomic_open
from onepixel.errors import ImageError, ModelError, OnepixelError
from onepixel.evaluate import HostEvaluator, TorchEvaluator, make_evaluator
from onepixel.models.base import Classifier
from onepixel.models.registry import ModelOptions
from onepixel.models.torch_backend import TorchClassifier, resolve_device

log = logging.getLogger(__name__)

METHODS = ("auto", "fast", "brute")
RESULT_NAME = "confmap.npz"
PARTIAL_NAME = "confmap.partial.npz"
FORMAT = 1


class ConfmapError(OnepixelError):
    """A confidence map cannot be computed as asked (bad option, image, or checkpoint)."""


def colour_levels(step: int) -> np.ndarray:
    """Channel values ``{0, step, 2*step, ...} ∪ {255}``, shape (K,), uint8, ascending.

    Raises
    ------
    ConfmapError
        ``step`` is not an integer in 1..255.
    """
    _check_step(step)
    levels = list(range(0, 256, step))
    if levels[-1] != 255:
        levels.append(255)
    return np.asarray(levels, dtype=np.uint8)


def colour_grid(step: int) -> np.ndarray:
    """All colours of the grid, shape (K**3, 3), uint8; index ``(ir * K + ig) * K + ib``."""
    lv = colour_levels(step)
    r, g, b = np.meshgrid(lv, lv, lv, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def _check_step(step) -> None:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or not 1 <= step <= 255:
        raise ConfmapError(f"colour step must be an integer from 1 to 255, got {step!r} "
                           "(5 gives the papers' grid of 52 values per channel)")


@dataclass(frozen=True)
class ConfmapConfig:
    """How to compute a confidence map.

    Attributes
    ----------
    step : int
        Grid spacing per channel, 1..255 (5: the papers' 52^3 = 140,608 colours).
    method : {"auto", "fast", "brute"}
        ``auto`` uses the exact fast path when the classifier allows it, else brute force.
    batch_size : int or None
        Evaluations per model call; None sizes batches to the device (free GPU memory on CUDA).
    device, dtype : str
        Used only when the model is given as a spec string (see :func:`load_confmap_classifier`);
        a classifier object runs where it was loaded.
    checkpoint_seconds : float
        With a checkpoint folder, save the partial map this often.
    progress : bool
        Show a tqdm progress bar (evaluations/s, ETA).
    pixels : tuple of (x, y) or None
        Map only these pixels (others are NaN in the result); None maps all.
    workers : int or None
        Threads evaluating batches in parallel. None: on CPU torch paths one per torch thread,
        each running torch single-threaded while the map runs (small batches scale better
        across cores than torch's intra-op threads, and do not stall on a busy machine);
        1 on CUDA and for other classifiers.
    """

    step: int = 5
    method: str = "auto"
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    checkpoint_seconds: float = 60.0
    progress: bool = True
    pixels: tuple[tuple[int, int], ...] | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        _check_step(self.step)
        if self.method not in METHODS:
            raise ConfmapError(f"unknown confmap method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ConfmapError(f"batch size must be a positive integer or None, got {self.batch_size!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ConfmapError(f"workers must be a positive integer or None, got {self.workers!r}")
        if not self.checkpoint_seconds > 0:
            raise ConfmapError(f"checkpoint interval must be > 0 seconds, got {self.checkpoint_seconds}")
        if self.pixels is not None:
            object.__setattr__(self, "pixels", tuple((int(x), int(y)) for x, y in self.pixels))
            if not self.pixels:
                raise ConfmapError("pixels is empty: give at least one (x, y) or None for all")

    @property
    def levels(self) -> np.ndarray:
        return colour_levels(self.step)

    @property
    def n_colours(self) -> int:
        return len(self.levels) ** 3


@dataclass(frozen=True, eq=False)
class ConfidenceMap:
    """A one-pixel confidence map of one image.

    Attributes
    ----------
    min, max, mean : ndarray, shape (H, W), float64
        Score range per pixel over the colour grid (NaN for pixels not mapped).
    argmin_rgb, argmax_rgb : ndarray, shape (H, W, 3), uint8
        The first grid colour (r-major order) that reaches the minimum / maximum.
    original_score : float
        Score of the unmodified image.
    step : int
    evaluations : int
        Model evaluations the map stands for (pixels mapped x colours).
    seconds : float
        Wall time spent computing it (summed over resumed sessions).
    model : str
    method : {"fast", "brute"}
        The path that computed it.
    device, dtype : str
    """

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    argmin_rgb: np.ndarray
    argmax_rgb: np.ndarray
    original_score: float
    step: int
    evaluations: int
    seconds: float
    model: str
    method: str
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, int]:
        return self.min.shape  # type: ignore[return-value]

    @property
    def n_colours(self) -> int:
        return len(colour_levels(self.step)) ** 3

    def extreme(self, kind: str = "min") -> tuple[int, int, float, tuple[int, int, int]]:
        """The best pixel for ``kind`` (min or max): (x, y, score, (r, g, b))."""
        arr = self.min if kind == "min" else self.max
        flat = np.nanargmin(arr) if kind == "min" else np.nanargmax(arr)
        y, x = np.unravel_index(flat, arr.shape)
        rgb = (self.argmin_rgb if kind == "min" else self.argmax_rgb)[y, x]
        return int(x), int(y), float(arr[y, x]), tuple(int(v) for v in rgb)

    def metadata(self) -> dict:
        """JSON-able facts about the map (no arrays)."""
        x0, y0, lo, rgb0 = self.extreme("min")
        x1, y1, hi, rgb1 = self.extreme("max")
        return {"format": FORMAT, "onepixel_version": __version__, "model": self.model,
                "step": self.step, "n_colours": self.n_colours,
                "levels": [int(v) for v in colour_levels(self.step)],
                "original_score": self.original_score, "evaluations": self.evaluations,
                "seconds": self.seconds, "method": self.method, "device": self.device,
                "dtype": self.dtype, "shape": list(self.shape),
                "min_score": lo, "min_at": {"x": x0, "y": y0, "rgb": list(rgb0)},
                "max_score": hi, "max_at": {"x": x1, "y": y1, "rgb": list(rgb1)}}


# ---------------------------------------------------------------------------- model loading
def load_confmap_classifier(spec: str, options: ModelOptions | None = None,
                            method: str = "auto") -> Classifier:
    """Load a model for confidence maps.

    Keras and built-in models get an eager torch classifier (so the fast path applies) unless
    ``method`` is ``brute``, which uses :func:`~onepixel.models.load_classifier` as is (ONNX
    Runtime on CPU by default: the fastest brute force there).
    """
    from onepixel.models.registry import is_keras_spec, load_classifier, load_eager_keras

    options = options or ModelOptions()
    if method == "brute" or not is_keras_spec(spec) or options.engine == "onnxruntime":
        return load_classifier(spec, options)
    try:
        return load_eager_keras(spec, options)
    except ModelError as exc:
        raise ConfmapError(str(exc)) from exc


# ---------------------------------------------------------------------------- reductions
class _Reducer:
    """Running per-pixel min / argmin / max / argmax / sum / count, on a torch device."""

    def __init__(self, n_pixels: int, n_colours: int, device: torch.device):
        f64 = dict(dtype=torch.float64, device=device)
        i64 = dict(dtype=torch.int64, device=device)
        self.n_colours = n_colours
        self.min = torch.full((n_pixels,), math.inf, **f64)
        self.max = torch.full((n_pixels,), -math.inf, **f64)
        self.sum = torch.zeros(n_pixels, **f64)
        self.argmin = torch.zeros(n_pixels, **i64)
        self.argmax = torch.zeros(n_pixels, **i64)
        self.count = torch.zeros(n_pixels, **i64)

    def update(self, pix: torch.Tensor, c0: int, scores: torch.Tensor) -> None:
        """Merge scores (k, n) of distinct pixels ``pix`` (k,) for colours ``c0 .. c0+n``."""
        lo, ilo = scores.min(dim=1)
        hi, ihi = scores.max(dim=1)
        old_lo, old_hi = self.min[pix], self.max[pix]
        better_lo, better_hi = lo < old_lo, hi > old_hi
        self.min[pix] = torch.where(better_lo, lo, old_lo)
        self.argmin[pix] = torch.where(better_lo, ilo + c0, self.argmin[pix])
        self.max[pix] = torch.where(better_hi, hi, old_hi)
        self.argmax[pix] = torch.where(better_hi, ihi + c0, self.argmax[pix])
        self.sum[pix] += scores.sum(dim=1)
        self.count[pix] += scores.shape[1]

    def state(self) -> dict[str, np.ndarray]:
        done = (self.count == self.n_colours).cpu().numpy()
        return {"min": self.min.cpu().numpy(), "max": self.max.cpu().numpy(),
                "sum": self.sum.cpu().numpy(), "argmin": self.argmin.cpu().numpy(),
                "argmax": self.argmax.cpu().numpy(), "done": done}

    def load(self, state: dict[str, np.ndarray]) -> int:
        """Restore the pixels marked done; returns how many."""
        done = torch.from_numpy(np.asarray(state["done"], dtype=bool)).to(self.min.device)
        for name in ("min", "max", "sum", "argmin", "argmax"):
            src = torch.from_numpy(np.asarray(state[name])).to(self.min.device)
            getattr(self, name)[done] = src[done].to(getattr(self, name).dtype)
        self.count[done] = self.n_colours
        return int(done.sum())


# ---------------------------------------------------------------------------- checkpoints
def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _checkpoint_key(image: np.ndarray, classifier: Classifier, config: ConfmapConfig,
                    dtype: str) -> dict:
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    pixels = None
    if config.pixels is not None:
        pixels = hashlib.sha256(json.dumps(sorted(config.pixels)).encode()).hexdigest()
    return {"format": FORMAT, "step": config.step, "model": classifier.name,
            "model_sha256": getattr(classifier, "fingerprint", "") or "",
            "image_sha256": digest, "shape": list(image.shape), "dtype": dtype, "pixels": pixels}


def _load_partial(path: Path, key: dict) -> tuple[dict[str, np.ndarray], float] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["config"]))
            state = {k: data[k] for k in ("min", "max", "sum", "argmin", "argmax", "done")}
            seconds = float(data["seconds"])
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ConfmapError(f"cannot read the checkpoint {path} ({exc}); delete it to start over") from exc
    if saved != key:
        diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
        raise ConfmapError(
            f"{path} belongs to another confidence map (differs in {', '.join(diff)}); delete it "
            "or choose another output folder to start over")
    return state, seconds


# ---------------------------------------------------------------------------- work plans
@dataclass
class _Work:
    """One batch: pixels ``pix`` (k,) x colours ``c0:c1``; ``run`` returns scores (k, n).

    ``pix_t`` is ``pix`` already on the reduction device (sliced from one upload per image).
    """

    pix: np.ndarray
    pix_t: torch.Tensor
    c0: int
    c1: int
    run: Callable[[], torch.Tensor] = field(repr=False)


def _chunks(n_pixels: int, n_colours: int, batch: int) -> Iterator[tuple[slice, int, int]]:
    """(pixel slice, c0, c1): several whole pixels per batch, or one pixel in colour chunks."""
    if n_colours <= batch:
        per = max(1, batch // n_colours)
        for s in range(0, n_pixels, per):
            yield slice(s, min(s + per, n_pixels)), 0, n_colours
    else:
        # Equal chunks (no small remainder batch): ceil(C / batch) pieces per pixel.
        pieces = -(-n_colours // batch)
        size = -(-n_colours // pieces)
        for s in range(n_pixels):
            for c in range(0, n_colours, size):
                yield slice(s, s + 1), c, min(c + size, n_colours)


class _BrutePlan:
    """Brute force through an evaluator (device-built batches for torch classifiers)."""

    method = "brute"

    def __init__(self, classifier: Classifier, batch: int):
        self.evaluator = make_evaluator(classifier, max_batch=batch)
        self.batch = batch
        self.device = self.evaluator.device if isinstance(self.evaluator, TorchEvaluator) \
            else torch.device("cpu")

    def work(self, image: np.ndarray, pixels: np.ndarray, grid: np.ndarray) -> Iterator[_Work]:
        w = image.shape[1]
        n_col = len(grid)
        if isinstance(self.evaluator, TorchEvaluator):
            ev = self.evaluator
            img = ev.to_device(image)[None]
            grid_t = torch.from_numpy(grid.astype(np.int64)).to(ev.device)
            pix_t = torch.from_numpy(pixels).to(ev.device)

            def run_torch(sl: slice, c0: int, c1: int) -> torch.Tensor:
                p = pix_t[sl]
                k, n = len(p), c1 - c0
                cand = torch.empty((k, n, 5), dtype=torch.int64, device=ev.device)
                cand[:, :, 0] = (p % w)[:, None]
                cand[:, :, 1] = (p // w)[:, None]
                cand[:, :, 2:] = grid_t[c0:c1][None]
                return ev.scores_tensor(img, cand.reshape(1, k * n, 5)).reshape(k, n)

            for sl, c0, c1 in _chunks(len(pixels), n_col, self.batch):
                yield _Work(pixels[sl], pix_t[sl], c0, c1,
                            lambda sl=sl, c0=c0, c1=c1: run_torch(sl, c0, c1))
        else:
            host: HostEvaluator = self.evaluator  # type: ignore[assignment]

            def run_host(sl: slice, c0: int, c1: int) -> torch.Tensor:
                p = pixels[sl]
                k, n = len(p), c1 - c0
                cand = np.empty((k, n, 5), dtype=np.int64)
                cand[:, :, 0] = (p % w)[:, None]
                cand[:, :, 1] = (p // w)[:, None]
                cand[:, :, 2:] = grid[c0:c1][None]
                return torch.from_numpy(host.scores(image[None], cand.reshape(1, k * n, 5))).reshape(k, n)

            pix_cpu = torch.from_numpy(pixels)
            for sl, c0, c1 in _chunks(len(pixels), n_col, self.batch):
                yield _Work(pixels[sl], pix_cpu[sl], c0, c1,
                            lambda sl=sl, c0=c0, c1=c1: run_host(sl, c0, c1))


class _FastPlan:
    """The exact incremental path (:class:`onepixel.confmap_fast.FastConfmap`)."""

    method = "fast"

    def __init__(self, classifier: TorchClassifier, batch: int):
        from onepixel.confmap_fast import FastConfmap

        self.engine = FastConfmap.from_classifier(classifier)
        self.classifier = classifier
        self.batch = batch
        self.device = self.engine.device

    def work(self, image: np.ndarray, pixels: np.ndarray, grid: np.ndarray) -> Iterator[_Work]:
        eng = self.engine
        prep = eng.prepare(torch.from_numpy(np.ascontiguousarray(image)))
        grid_t = torch.from_numpy(grid).to(eng.device)
        w = image.shape[1]
        wanted = np.zeros(image.shape[0] * w, dtype=bool)
        wanted[pixels] = True
        for group in eng.groups():
            ids = group.ys * w + group.xs
            keep = np.flatnonzero(wanted[ids])
            if len(keep) == 0:
                continue
            ids_t = torch.from_numpy(ids).to(eng.device)
            # Runs of kept pixels are contiguous slices of the group (all of it, usually).
            for run in np.split(keep, np.flatnonzero(np.diff(keep) != 1) + 1):
                start = int(run[0])
                for sl, c0, c1 in _chunks(len(run), len(grid), self.batch):
                    gsl = slice(start + sl.start, start + sl.stop)
                    yield _Work(ids[gsl], ids_t[gsl], c0, c1,
                                lambda gsl=gsl, c0=c0, c1=c1, group=group:
                                self._scores(prep, group, gsl, grid_t[c0:c1]))

    def _scores(self, prep, group, gsl: slice, colours: torch.Tensor) -> torch.Tensor:
        out = self.engine.logits(prep, group, gsl, colours)
        k = gsl.stop - gsl.start
        return _probabilities(out, self.classifier).reshape(k, len(colours))


def _probabilities(out: torch.Tensor, classifier: TorchClassifier) -> torch.Tensor:
    """Raw network outputs (N, K) -> positive probabilities (N,) float64, as score_tensor does."""
    out = out.to(torch.float64)
    io = classifier.io
    if out.shape[1] == 1:
        return torch.sigmoid(out[:, 0]) if io.output == "logit" else out[:, 0]
    idx = io.positive_index
    if idx is None or idx >= out.shape[1]:
        raise ConfmapError(f"{classifier.name} returns {out.shape[1]} outputs per image; give a "
                           "valid --positive-index")
    return torch.softmax(out, dim=1)[:, idx] if io.output == "logit" else out[:, idx]


def _default_batch(method: str, device: torch.device, plan_hint: int | None = None) -> int:
    """Batch size when none is given: small on CPU (cache-friendly), memory-sized on CUDA.

    ``method`` is ``fast``, ``brute`` (torch) or ``host`` (any other classifier, which chunks
    batches itself).
    """
    if device.type != "cuda":
        return {"fast": 256, "brute": 64}.get(method, 512)
    free, _total = torch.cuda.mem_get_info(device)
    per_eval = plan_hint or (1 << 20)
    batch = int(0.25 * free / per_eval)
    return int(min(1 << 16, max(1024, 1 << max(0, batch.bit_length() - 1))))


def _choose_plan(classifier: Classifier, config: ConfmapConfig):
    from onepixel.confmap_fast import fast_path_unavailable_reason

    reason = fast_path_unavailable_reason(classifier)
    method = config.method
    if method == "fast" and reason is not None:
        raise ConfmapError(f"the fast confidence-map path does not apply: {reason}; use method "
                           "'brute' (or 'auto', which falls back to it)")
    if method == "auto":
        method = "fast" if reason is None else "brute"
        if reason is not None:
            log.info("confmap: brute force (%s)", reason)
    if method == "fast":
        device = classifier.device  # type: ignore[union-attr]
        hint = None
        if device.type == "cuda":
            hint = 64 << 10  # bytes per evaluation: windows are small; the 8x8 stage dominates
        batch = config.batch_size or _default_batch("fast", device, hint)
        return _FastPlan(classifier, batch)  # type: ignore[arg-type]
    if isinstance(classifier, TorchClassifier):
        batch = config.batch_size or _default_batch("brute", classifier.device, 1 << 20)
    else:
        batch = config.batch_size or _default_batch("host", torch.device("cpu"))
    return _BrutePlan(classifier, batch)


# ---------------------------------------------------------------------------- main entry points
def _check_image(image, classifier: Classifier) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"confidence maps need a uint8 RGB image, got dtype {image.dtype}")
    h, w = classifier.input_shape[:2]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected one RGB image of shape (H, W, 3), got {image.shape}")
    if image.shape[:2] != (h, w):
        raise ImageError(f"image is {image.shape[1]}x{image.shape[0]} (WxH) but {classifier.name} "
                         f"takes {w}x{h}; crop or tile it to {w}x{h} first (images are never resized)")
    return np.array(image, dtype=np.uint8, order="C", copy=True)  # writable: torch wants that


def _pixel_ids(config: ConfmapConfig, h: int, w: int) -> np.ndarray:
    if config.pixels is None:
        return np.arange(h * w, dtype=np.int64)
    ids = []
    for x, y in config.pixels:
        if not (0 <= x < w and 0 <= y < h):
            raise ConfmapError(f"pixel (x={x}, y={y}) is outside the {w}x{h} image")
        ids.append(y * w + x)
    return np.unique(np.asarray(ids, dtype=np.int64))


def _classifier_dtype(classifier: Classifier) -> str:
    if isinstance(classifier, TorchClassifier):
        return str(classifier.dtype).replace("torch.", "")
    return "float32"


def compute_confmap(image: np.ndarray, classifier: Classifier | str,
                    config: ConfmapConfig | None = None,
                    checkpoint: str | Path | None = None) -> ConfidenceMap:
    """Compute the one-pixel confidence map of one image.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
        Must match the model's input size.
    classifier : Classifier or str
        A loaded classifier, or a model spec loaded with :func:`load_confmap_classifier` on
        ``config.device`` / ``config.dtype``.
    config : ConfmapConfig
    checkpoint : folder, optional
        Save partial results to ``checkpoint/confmap.partial.npz`` every
        ``config.checkpoint_seconds`` (and on Ctrl-C); resume from it when its configuration
        (model, image, step, dtype, pixels) matches.

    Returns
    -------
    ConfidenceMap

    Raises
    ------
    ImageError
        Not a uint8 (H, W, 3) image of the model's input size.
    ConfmapError
        Bad options, ``method="fast"`` where it does not apply, or a checkpoint of another map.
    """
    config = config or ConfmapConfig()
    classifier = _resolve_classifier(classifier, config)
    return compute_confmaps([image], classifier, config,
                            None if checkpoint is None else [checkpoint])[0]


def _resolve_classifier(classifier: Classifier | str, config: ConfmapConfig) -> Classifier:
    if isinstance(classifier, str):
        return load_confmap_classifier(classifier, ModelOptions(device=config.device, dtype=config.dtype),
                                       config.method)
    if isinstance(classifier, TorchClassifier) and config.device != "auto":
        wanted = resolve_device(config.device)
        if wanted.type != classifier.device.type:
            raise ConfmapError(f"{classifier.name} is loaded on {classifier.device} but device "
                               f"{config.device!r} was asked for; load the model there")
    return classifier


def compute_confmaps(images: Sequence[np.ndarray] | np.ndarray, classifier: Classifier | str,
                     config: ConfmapConfig | None = None,
                     checkpoints: Sequence[str | Path | None] | None = None) -> list[ConfidenceMap]:
    """Confidence maps of several images with one model (the fast path is built once).

    ``images`` is (B, H, W, 3) uint8 or a sequence of (H, W, 3); ``checkpoints`` one folder (or
    None) per image. See :func:`compute_confmap`.
    """
    config = config or ConfmapConfig()
    classifier = _resolve_classifier(classifier, config)
    images = [_check_image(im, classifier) for im in images]
    if checkpoints is not None and len(checkpoints) != len(images):
        raise ConfmapError(f"{len(checkpoints)} checkpoint folders for {len(images)} images")
    plan = _choose_plan(classifier, config)
    grid = colour_grid(config.step)
    out = []
    for i, image in enumerate(images):
        ckpt = None if checkpoints is None or checkpoints[i] is None else Path(checkpoints[i])
        out.append(_one_map(image, classifier, config, plan, grid, ckpt))
    return out


def _one_map(image: np.ndarray, classifier: Classifier, config: ConfmapConfig, plan,
             grid: np.ndarray, ckpt_dir: Path | None) -> ConfidenceMap:
    h, w = image.shape[:2]
    n_col = len(grid)
    pixels = _pixel_ids(config, h, w)
    dtype = _classifier_dtype(classifier)
    reducer = _Reducer(h * w, n_col, plan.device)
    key = _checkpoint_key(image, classifier, config, dtype)
    partial = None if ckpt_dir is None else ckpt_dir / PARTIAL_NAME
    seconds_before = 0.0
    done_before = np.zeros(h * w, dtype=bool)
    if partial is not None:
        loaded = _load_partial(partial, key)
        if loaded is not None:
            state, seconds_before = loaded
            n_done = reducer.load(state)
            done_before = np.asarray(state["done"], dtype=bool)
            log.info("resuming %s: %d of %d pixels already mapped", partial, n_done, len(pixels))
    todo = pixels[~done_before[pixels]]
    original = float(classifier.scores(image[None])[0])
    start = time.perf_counter()
    last_save = time.monotonic()

    def save() -> None:
        if partial is None:
            return
        elapsed = seconds_before + time.perf_counter() - start
        _atomic_savez(partial, config=np.asarray(json.dumps(key)), seconds=np.asarray(elapsed),
                      **reducer.state())

    bar = _progress(config, len(todo) * n_col, len(pixels) * n_col,
                    f"confmap {classifier.name} step {config.step} [{plan.method}]")
    workers = _workers(config, plan)

    def merge(item: _Work, scores: torch.Tensor) -> None:
        nonlocal last_save
        reducer.update(item.pix_t, item.c0, scores.to(reducer.min.device))
        bar.update(len(item.pix) * (item.c1 - item.c0))
        if partial is not None and time.monotonic() - last_save >= config.checkpoint_seconds:
            save()
            last_save = time.monotonic()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="confmap") if workers > 1 else None
    try:
        with _intraop_threads(1 if pool else None), torch.inference_mode():
            items = plan.work(image, todo, grid) if len(todo) else iter(())
            if pool is None:
                for item in items:
                    merge(item, item.run())
            else:
                # Results are merged in submission order: ties resolve as with one worker.
                pending: deque = deque()
                for item in items:
                    pending.append((item, pool.submit(_run_inference, item.run)))
                    if len(pending) >= 2 * workers:
                        done_item, fut = pending.popleft()
                        merge(done_item, fut.result())
                while pending:
                    done_item, fut = pending.popleft()
                    merge(done_item, fut.result())
    except KeyboardInterrupt:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        save()
        if partial is not None:
            log.warning("interrupted: partial map saved to %s; run again to resume", partial)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    state = reducer.state()  # copies to the host: waits for the device to finish
    seconds = seconds_before + time.perf_counter() - start
    if partial is not None:
        _atomic_savez(partial, config=np.asarray(json.dumps(key)), seconds=np.asarray(seconds), **state)
    return _as_result(state, pixels, grid, h, w, n_col, original, config, classifier, plan,
                      seconds, dtype)


def _run_inference(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():  # thread-local: enter it in the worker
        return fn()


def _workers(config: ConfmapConfig, plan) -> int:
    """Worker threads: on CPU torch plans one per torch thread (each op single-threaded)."""
    if config.workers is not None:
        return config.workers
    if plan.device.type != "cpu" or isinstance(getattr(plan, "evaluator", None), HostEvaluator):
        return 1
    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def _intraop_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (process-wide); None leaves it alone."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(config: ConfmapConfig, remaining: int, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=total - remaining, unit="eval", unit_scale=True,
                desc=desc, disable=not config.progress, smoothing=0.05, dynamic_ncols=True)


def _as_result(state: dict[str, np.ndarray], pixels: np.ndarray, grid: np.ndarray, h: int,
               w: int, n_col: int, original: float, config: ConfmapConfig, classifier: Classifier,
               plan, seconds: float, dtype: str) -> ConfidenceMap:
    mask = np.zeros(h * w, dtype=bool)
    mask[pixels] = True
    lo = np.where(mask, state["min"], np.nan).reshape(h, w)
    hi = np.where(mask, state["max"], np.nan).reshape(h, w)
    mean = np.where(mask, state["sum"] / n_col, np.nan).reshape(h, w)
    amin = np.where(mask[:, None], grid[state["argmin"]], 0).astype(np.uint8).reshape(h, w, 3)
    amax = np.where(mask[:, None], grid[state["argmax"]], 0).astype(np.uint8).reshape(h, w, 3)
    return ConfidenceMap(lo, hi, mean, amin, amax, original, config.step, len(pixels) * n_col,
                         seconds, classifier.name, plan.method, str(plan.device), dtype)


# ---------------------------------------------------------------------------- files
def save_confmap(result: ConfidenceMap, out_dir: str | Path, image: np.ndarray | None = None,
                 figures: bool = True, metadata: dict | None = None) -> list[Path]:
    """Write ``out_dir/confmap.npz`` (+ figures) and drop the finished checkpoint.

    The npz holds ``min``, ``max``, ``mean`` (H, W) float64, ``argmin_rgb``, ``argmax_rgb``
    (H, W, 3) uint8, ``levels`` (K,) uint8, ``original_score``, ``step``, ``evaluations``,
    ``seconds`` (0-d), ``model``, ``method``, ``device``, ``dtype`` (0-d str) and ``metadata``
    (a JSON string: :meth:`ConfidenceMap.metadata` plus ``metadata``); with ``image``, also
    ``original`` (H, W, 3) uint8. String values of ``metadata`` (e.g. ``image``: the image's id
    in a dataset, ``direction``) are also stored as 0-d entries of their own. Figures, when
    matplotlib is installed: ``confmap_min.png``, ``confmap_max.png``, ``confmap_mean.png``, each
    the heatmap beside the original image (the papers' Figure 5).

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"min": result.min, "max": result.max, "mean": result.mean,
              "argmin_rgb": result.argmin_rgb, "argmax_rgb": result.argmax_rgb,
              "levels": colour_levels(result.step),
              "original_score": np.asarray(result.original_score),
              "step": np.asarray(result.step), "evaluations": np.asarray(result.evaluations),
              "seconds": np.asarray(result.seconds), "model": np.asarray(result.model),
              "method": np.asarray(result.method), "device": np.asarray(result.device),
              "dtype": np.asarray(result.dtype),
              "metadata": np.asarray(json.dumps({**result.metadata(), **(metadata or {}),
                                                 "created": datetime.now(UTC).isoformat()}))}
    for key, value in (metadata or {}).items():
        if isinstance(value, str | int | float) and key not in arrays:
            arrays[key] = np.asarray(value)
    if image is not None:
        arrays["original"] = np.asarray(image, dtype=np.uint8)
    path = out_dir / RESULT_NAME
    _atomic_savez(path, **arrays)
    written = [path]
    (out_dir / PARTIAL_NAME).unlink(missing_ok=True)
    if figures:
        try:
            from onepixel.confmap_figures import save_confmap_figures
        except ImportError as exc:  # matplotlib missing
            log.warning("no confmap figures (%s): pip install 'onepixel[analysis]'", exc)
        else:
            written += save_confmap_figures(result, out_dir, image)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def load_confmap(path: str | Path) -> tuple[ConfidenceMap, np.ndarray | None]:
    """Read a ``confmap.npz`` (or the folder holding one): the map and the image if saved."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_NAME
    if not path.is_file():
        raise ConfmapError(f"no confidence map at {path}: run `onepixel confmap` first")
    try:
        with np.load(path, allow_pickle=False) as d:
            result = ConfidenceMap(
                d["min"], d["max"], d["mean"], d["argmin_rgb"], d["argmax_rgb"],
                float(d["original_score"]), int(d["step"]), int(d["evaluations"]),
                float(d["seconds"]), str(d["model"]), str(d["method"]), str(d["device"]),
                str(d["dtype"]))
            image = d.get("original")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfmapError(f"cannot read confidence map {path}: {exc}") from exc
    return result, image


def confmap_image_file(image: str | Path, out_dir: str | Path, model: str = "max-mitosis",
                       model_options: ModelOptions | None = None,
                       config: ConfmapConfig | None = None) -> tuple[ConfidenceMap, list[Path]]:
    """``onepixel confmap IMAGE --out DIR``: map one image file, checkpointing into ``out_dir``.

    Returns the map and the files written (``confmap.npz`` and the figures).
    """
    from onepixel.data import load_image

    config = config or ConfmapConfig()
    options = model_options or ModelOptions(device=config.device, dtype=config.dtype)
    classifier = load_confmap_classifier(model, options, config.method)
    array = load_image(image, classifier.input_shape)
    result = compute_confmap(array, classifier, config, checkpoint=out_dir)
    return result, save_confmap(result, out_dir, image=array)


# ---------------------------------------------------------------------------- attack runs
@dataclass(frozen=True)
class RunImage:
    """An attacked image of a RUN chosen for a confidence map.

    ``why`` is ``most successful``, ``least successful`` or ``named``; ``change`` the score
    change in the attack's goal direction (positive = the attack helped).
    """

    image: str
    direction: str
    goal: str
    why: str
    original_score: float
    attacked_score: float | None
    change: float | None


def select_run_images(run_dir: str | Path, names: Sequence[str] | None = None) -> list[RunImage]:
    """Pick images of an attack run for confidence maps.

    Without ``names``: per direction, the most and the least successful attacked image (by
    score change in the goal direction; ties by name). With ``names``: those images, matched
    against the ``image`` column, its file name or its stem.

    Raises
    ------
    ConfmapError
        No ``attacks.csv``, no attacked image, or a name that matches nothing (or several).
    """
    rows = _read_attacks(Path(run_dir))
    if names:
        chosen = []
        for name in names:
            hits = [r for r in rows if name in (r["image"], Path(r["image"]).name, Path(r["image"]).stem)]
            if not hits:
                raise ConfmapError(f"no image {name!r} in {run_dir}/attacks.csv (use the 'image' column)")
            if len(hits) > 1:
                raise ConfmapError(f"{name!r} matches {len(hits)} images in {run_dir}/attacks.csv: "
                                   f"{', '.join(r['image'] for r in hits[:5])}; give the full path")
            chosen.append(_run_image(hits[0], "named"))
        return chosen
    attacked = [r for r in rows if r.get("status") == "attacked" and r.get("attacked_score")]
    if not attacked:
        raise ConfmapError(f"{run_dir}/attacks.csv has no attacked image to map; name images "
                           "with --images")
    out: list[RunImage] = []
    for direction in sorted({r["direction"] for r in attacked}):
        ranked = sorted((_run_image(r, "") for r in attacked if r["direction"] == direction),
                        key=lambda ri: (-(ri.change or 0.0), ri.image))
        out.append(_replace_why(ranked[0], "most successful"))
        if len(ranked) > 1:
            out.append(_replace_why(ranked[-1], "least successful"))
    return out


def _replace_why(ri: RunImage, why: str) -> RunImage:
    from dataclasses import replace

    return replace(ri, why=why)


def _read_attacks(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "attacks.csv"
    if not path.is_file():
        raise ConfmapError(f"{path} not found: is {run_dir} an attack run (onepixel attack --out RUN)?")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _run_image(row: dict[str, str], why: str) -> RunImage:
    original = float(row["original_score"])
    attacked = float(row["attacked_score"]) if row.get("attacked_score") else None
    change = None
    if attacked is not None:
        change = original - attacked if row.get("goal") == "decrease" else attacked - original
    return RunImage(row["image"], row.get("direction", ""), row.get("goal", ""), why, original,
                    attacked, change)


def confmap_run(run_dir: str | Path, images: Sequence[str] | None = None,
                config: ConfmapConfig | None = None, classifier: Classifier | None = None,
                model_options: ModelOptions | None = None,
                model: str | None = None) -> list[tuple[RunImage, Path, ConfidenceMap]]:
    """Confidence maps of selected images of an attack run, into ``RUN/confmaps/<image-stem>/``.

    The model is ``classifier``, else the spec ``model``, else the run's (``config.json``:
    ``model.spec``), loaded with ``model_options``; the images come from the run's dataset
    folder. Each map checkpoints into its own folder, so an
    interrupted call resumes. ``RUN/confmaps/index.csv`` lists what was mapped.

    Returns
    -------
    list of (RunImage, folder, ConfidenceMap)
    """
    from onepixel.data import load_image

    run_dir = Path(run_dir)
    config = config or ConfmapConfig()
    run_cfg = _read_run_config(run_dir)
    chosen = select_run_images(run_dir, images)
    if classifier is None:
        spec = model or run_cfg.get("model", {}).get("spec")
        if not spec:
            raise ConfmapError(f"{run_dir}/config.json names no model (model.spec); give --model")
        options = model_options or ModelOptions(device=config.device, dtype=config.dtype)
        classifier = load_confmap_classifier(spec, options, config.method)
    want_sha = run_cfg.get("model", {}).get("sha256")
    have_sha = getattr(classifier, "fingerprint", "")
    if want_sha and have_sha and want_sha != have_sha:
        log.warning("the model's sha256 differs from the one the run attacked (%s...): maps are of "
                    "the model loaded now", want_sha[:12])
    dataset = Path(run_cfg.get("dataset", ""))
    folders = _folder_names([c.image for c in chosen])
    results = []
    for ri in chosen:
        path = dataset / ri.image
        if not path.is_file():
            raise ConfmapError(f"image {ri.image} of {run_dir}/attacks.csv is not under the run's "
                               f"dataset folder {dataset} (moved?)")
        image = load_image(path, classifier.input_shape)
        out_dir = run_dir / "confmaps" / folders[ri.image]
        log.info("confmap of %s (%s, %s) -> %s", ri.image, ri.direction, ri.why, out_dir)
        result = compute_confmap(image, classifier, config, checkpoint=out_dir)
        extra = {"image": ri.image, "direction": ri.direction, "goal": ri.goal, "why": ri.why}
        if ri.attacked_score is not None:
            extra["attacked_score"] = ri.attacked_score
        save_confmap(result, out_dir, image=image, metadata=extra)
        results.append((ri, out_dir, result))
    _write_index(run_dir / "confmaps" / "index.csv", results)
    return results


def _read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfmapError(f"{path} not found: is {run_dir} an attack run (onepixel attack --out RUN)?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfmapError(f"{path} is not valid JSON: {exc}") from exc


def _folder_names(images: Sequence[str]) -> dict[str, str]:
    """Folder per image: its stem, or its path with '/' -> '__' where stems collide."""
    stems: dict[str, int] = {}
    for im in images:
        stems[Path(im).stem] = stems.get(Path(im).stem, 0) + 1
    return {im: Path(im).stem if stems[Path(im).stem] == 1
            else str(Path(im).with_suffix("").as_posix()).replace("/", "__") for im in images}


def _write_index(path: Path, results) -> None:
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "direction", "why", "folder", "original_score",
                         "attacked_score", "min_score", "max_score", "step", "method"])
        for ri, folder, res in results:
            writer.writerow([ri.image, ri.direction, ri.why, folder.name,
                             f"{res.original_score:.10g}",
                             "" if ri.attacked_score is None else f"{ri.attacked_score:.10g}",
                             f"{np.nanmin(res.min):.10g}", f"{np.nanmax(res.max):.10g}",
                             res.step, res.method])
