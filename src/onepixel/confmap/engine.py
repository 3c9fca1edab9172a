"""One-pixel confidence maps: every pixel x a colour grid, reduced per pixel.

For one image and a model, every pixel is set to every colour of the grid
``{0, k, 2k, ..., 255}`` per channel (``k`` the step; 255 is always included) and the scores are
reduced per pixel to their minimum, maximum and mean, with the colours that reach the minimum
and the maximum (section 2.2 of the chromatic/spatial paper; step 5 gives its 52^3 = 140,608
colours and 575,930,368 evaluations for a 64x64 image).

Two methods give the same maps:

``brute``
    The reference. Perturbed images go through the evaluator (:mod:`onepixel.scoring.evaluators`): for
    torch classifiers they are built on the device from the image held there, so no batch
    crosses to the host; any other classifier gets host-built batches.
``fast``
    Exact incremental inference for KerasNet-based torch classifiers
    (:mod:`onepixel.confmap.incremental`): only the window of each early feature map that a pixel can
    change is recomputed. Scores agree with brute force to ~1e-6 (fp32).

``auto`` (the default) takes ``fast`` when it applies and ``brute`` otherwise.

Arrays are in image orientation: ``min[y, x]`` is the score range of pixel column ``x``, row
``y``. Long maps checkpoint to ``DIR/confmap.partial.npz`` and resume when the configuration
matches; a tqdm bar shows evaluations/s and the ETA.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.result import (
    FORMAT,
    RESULT_NAME,
    ConfidenceMap,
    colour_grid,
    colour_levels,
    write_confmap_npz,
)
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ConfigError, ConfmapError, ImageError
from onepixel.fileio import save_npz_atomic
from onepixel.models.base import Classifier, ClassProbability, capabilities_of
from onepixel.models.registry import ModelOptions
from onepixel.models.torch_backend import TorchClassifier, resolve_device
from onepixel.scoring.evaluators import make_evaluator
from onepixel.scoring.policy import load_confmap_classifier

log = logging.getLogger(__name__)

PARTIAL_NAME = "confmap.partial.npz"


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
def _checkpoint_key(image: np.ndarray, classifier: Classifier, config: ConfmapConfig,
                    dtype: str) -> dict:
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    pixels = None
    if config.pixels is not None:
        pixels = hashlib.sha256(json.dumps(sorted(config.pixels)).encode()).hexdigest()
    return {"format": FORMAT, "step": config.step, "model": classifier.name,
            "model_sha256": capabilities_of(classifier).fingerprint,
            "image_sha256": digest, "shape": list(image.shape), "dtype": dtype, "pixels": pixels}


def map_key(image: np.ndarray, classifier: Classifier, config: ConfmapConfig) -> dict:
    """What decides a map's values (image, model, step, mapped pixels, dtype): a finished map
    saved with this key in its metadata can be reused instead of mapped again."""
    return _checkpoint_key(np.asarray(image), classifier, config, _classifier_dtype(classifier))


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


class _FullPlan:
    """The full network on every candidate, through an evaluator (device-built batches for torch
    classifiers)."""

    method = "full"

    def __init__(self, classifier: Classifier, batch: int):
        self.evaluator = make_evaluator(classifier, max_batch=batch)
        self.batch = batch
        self.device = self.evaluator.device
        self.on_host = not self.evaluator.on_device

    def work(self, image: np.ndarray, pixels: np.ndarray, grid: np.ndarray) -> Iterator[_Work]:
        w = image.shape[1]
        width = 2 + image.shape[2]  # x, y and one value per channel
        n_col = len(grid)
        if self.evaluator.on_device:
            ev = self.evaluator
            img = ev.to_device(image)[None]
            grid_t = torch.from_numpy(grid.astype(np.int64)).to(ev.device)
            pix_t = torch.from_numpy(pixels).to(ev.device)

            def run_torch(sl: slice, c0: int, c1: int) -> torch.Tensor:
                p = pix_t[sl]
                k, n = len(p), c1 - c0
                cand = torch.empty((k, n, width), dtype=torch.int64, device=ev.device)
                cand[:, :, 0] = (p % w)[:, None]
                cand[:, :, 1] = (p // w)[:, None]
                cand[:, :, 2:] = grid_t[c0:c1][None]
                return ev.scores_tensor(img, cand.reshape(1, k * n, width)).reshape(k, n)

            for sl, c0, c1 in _chunks(len(pixels), n_col, self.batch):
                yield _Work(pixels[sl], pix_t[sl], c0, c1,
                            lambda sl=sl, c0=c0, c1=c1: run_torch(sl, c0, c1))
        else:
            host = self.evaluator

            def run_host(sl: slice, c0: int, c1: int) -> torch.Tensor:
                p = pixels[sl]
                k, n = len(p), c1 - c0
                cand = np.empty((k, n, width), dtype=np.int64)
                cand[:, :, 0] = (p % w)[:, None]
                cand[:, :, 1] = (p // w)[:, None]
                cand[:, :, 2:] = grid[c0:c1][None]
                scores = host.scores(image[None], cand.reshape(1, k * n, width))
                return torch.from_numpy(scores).reshape(k, n)

            pix_cpu = torch.from_numpy(pixels)
            for sl, c0, c1 in _chunks(len(pixels), n_col, self.batch):
                yield _Work(pixels[sl], pix_cpu[sl], c0, c1,
                            lambda sl=sl, c0=c0, c1=c1: run_host(sl, c0, c1))


class _IncrementalPlan:
    """The exact incremental path (:class:`onepixel.confmap.incremental.IncrementalConfmap`)."""

    method = "incremental"
    on_host = False

    def __init__(self, classifier: TorchClassifier, batch: int):
        from onepixel.confmap.incremental import IncrementalConfmap

        self.engine = IncrementalConfmap.from_classifier(classifier)
        self.classifier = classifier
        self.batch = batch
        self.device = self.engine.device

    def work(self, image: np.ndarray, pixels: np.ndarray, grid: np.ndarray) -> Iterator[_Work]:
        eng = self.engine
        # A read-only image (PIL-decoded) is copied: torch warns on non-writable arrays.
        prep = eng.prepare(torch.from_numpy(np.require(image, requirements=("C", "W"))))
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
        return self.classifier.scores_from_outputs(out).reshape(k, len(colours))


def _default_batch(method: str, device: torch.device, plan_hint: int | None = None) -> int:
    """Batch size when none is given: small on CPU (cache-friendly), memory-sized on CUDA.

    ``method`` is ``incremental``, ``full`` (torch) or ``host`` (any other classifier, which
    chunks batches itself).
    """
    if device.type != "cuda":
        return {"incremental": 256, "full": 64}.get(method, 512)
    free, _total = torch.cuda.mem_get_info(device)
    per_eval = plan_hint or (1 << 20)
    batch = int(0.25 * free / per_eval)
    return int(min(1 << 16, max(1024, 1 << max(0, batch.bit_length() - 1))))


def _choose_plan(classifier: Classifier, config: ConfmapConfig):
    from onepixel.confmap.incremental import incremental_unavailable_reason

    reason = incremental_unavailable_reason(classifier)
    method = config.evaluator
    if method == "incremental" and reason is not None:
        raise ConfigError(f"the incremental evaluator does not apply: {reason}; use "
                           "ConfmapConfig.evaluator='full' (or 'auto', which falls back to it)",
                           field="ConfmapConfig.evaluator")
    if method == "auto":
        method = "incremental" if reason is None else "full"
        if reason is not None:
            log.info("confmap: scoring the full network on every candidate (slower): %s", reason)
    if method == "incremental":
        device = classifier.device  # type: ignore[union-attr]
        hint = None
        if device.type == "cuda":
            hint = 64 << 10  # bytes per evaluation: windows are small; the 8x8 stage dominates
        batch = config.batch_size or _default_batch("incremental", device, hint)
        return _IncrementalPlan(classifier, batch)  # type: ignore[arg-type]
    if capabilities_of(classifier).tensor_scoring:
        batch = config.batch_size or _default_batch("full", classifier.device, 1 << 20)
    else:
        batch = config.batch_size or _default_batch("host", torch.device("cpu"))
    return _FullPlan(classifier, batch)


# ---------------------------------------------------------------------------- main entry points
def _check_image(image, classifier: Classifier) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"confidence maps need a uint8 image, got dtype {image.dtype}")
    h, w, c = classifier.input_shape
    if image.ndim == 2 and c == 1:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != c:
        raise ImageError(f"expected one image of shape (H, W, {c}), got {image.shape}")
    if image.shape[:2] != (h, w):
        raise ImageError(f"image is {image.shape[1]}x{image.shape[0]} (WxH) but {classifier.name} "
                         f"takes {w}x{h}; crop or tile it to {w}x{h} first (images are never resized)")
    return np.array(image, dtype=np.uint8, order="C", copy=True)  # writable: torch wants that


def pixel_ids(config: ConfmapConfig, h: int, w: int) -> np.ndarray:
    """Flat ids ``y * w + x`` of the pixels ``config`` maps, sorted, (P,) int64; a
    :class:`ConfmapError` for a pixel outside the image."""
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
        Bad options, ``evaluator="incremental"`` where it does not apply, or a checkpoint of another map.
    """
    config = config or ConfmapConfig()
    classifier = _resolve_classifier(classifier, config)
    return compute_confmaps([image], classifier, config,
                            None if checkpoint is None else [checkpoint])[0]


def _resolve_classifier(classifier: Classifier | str, config: ConfmapConfig) -> Classifier:
    if isinstance(classifier, str):
        return load_confmap_classifier(classifier, ModelOptions(device=config.device, dtype=config.dtype),
                                       config.evaluator)
    have = capabilities_of(classifier).device
    if config.device != "auto" and have != "remote":
        wanted = resolve_device(config.device)
        if wanted.type != torch.device(have).type:
            raise ConfmapError(f"{classifier.name} is loaded on {have} but device "
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
    channels = classifier.input_shape[2]
    grid = colour_grid(config.step) if channels == 3 else colour_levels(config.step)[:, None]
    out = []
    k_classes = capabilities_of(classifier).n_classes
    plan = None if k_classes > 1 else _choose_plan(classifier, config)
    for i, image in enumerate(images):
        ckpt = None if checkpoints is None or checkpoints[i] is None else Path(checkpoints[i])
        model = classifier
        if k_classes > 1:
            # A K-class model is mapped by the probability of the class it predicts for the image.
            predicted = int(np.argmax(classifier.scores(image[None])[0]))
            model = ClassProbability(classifier, predicted)
            plan = _choose_plan(model, config)
        out.append(_one_map(image, model, config, plan, grid, ckpt))
    return out


def _one_map(image: np.ndarray, classifier: Classifier, config: ConfmapConfig, plan,
             grid: np.ndarray, ckpt_dir: Path | None) -> ConfidenceMap:
    h, w = image.shape[:2]
    n_col = len(grid)
    pixels = pixel_ids(config, h, w)
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
        save_npz_atomic(partial, config=np.asarray(json.dumps(key)), seconds=np.asarray(elapsed),
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
        save_npz_atomic(partial, config=np.asarray(json.dumps(key)), seconds=np.asarray(seconds), **state)
    return _as_result(state, pixels, grid, h, w, n_col, original, config, classifier, plan,
                      seconds, dtype)


def _run_inference(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():  # thread-local: enter it in the worker
        return fn()


def _workers(config: ConfmapConfig, plan) -> int:
    """Worker threads: on CPU torch plans one per torch thread (each op single-threaded)."""
    if config.workers is not None:
        return config.workers
    if plan.device.type != "cpu" or plan.on_host:
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
    from onepixel.progress import progress_bar

    return progress_bar(total=total, initial=total - remaining, unit="eval", unit_scale=True,
                desc=desc, disable=not config.progress, smoothing=0.05, dynamic_ncols=True)


def _as_result(state: dict[str, np.ndarray], pixels: np.ndarray, grid: np.ndarray, h: int,
               w: int, n_col: int, original: float, config: ConfmapConfig, classifier: Classifier,
               plan, seconds: float, dtype: str) -> ConfidenceMap:
    mask = np.zeros(h * w, dtype=bool)
    mask[pixels] = True
    lo = np.where(mask, state["min"], np.nan).reshape(h, w)
    hi = np.where(mask, state["max"], np.nan).reshape(h, w)
    mean = np.where(mask, state["sum"] / n_col, np.nan).reshape(h, w)
    # Greyscale grids hold one value per colour: the map stores it as the grey (v, v, v).
    colours = np.broadcast_to(grid, (len(grid), 3)) if grid.shape[1] == 1 else grid
    amin = np.where(mask[:, None], colours[state["argmin"]], 0).astype(np.uint8).reshape(h, w, 3)
    amax = np.where(mask[:, None], colours[state["argmax"]], 0).astype(np.uint8).reshape(h, w, 3)
    return ConfidenceMap(lo, hi, mean, amin, amax, original, config.step, len(pixels) * n_col,
                         seconds, classifier.name, plan.method, str(plan.device), dtype)


# ---------------------------------------------------------------------------- files
def save_confmap(result: ConfidenceMap, out_dir: str | Path, image: np.ndarray | None = None,
                 figures: bool = True, metadata: dict | None = None) -> list[Path]:
    """Write ``out_dir/confmap.npz`` (:func:`~onepixel.confmap.result.write_confmap_npz`), the
    figures, and drop the finished checkpoint.

    Figures, when matplotlib is installed: ``confmap_min.png``, ``confmap_max.png``,
    ``confmap_mean.png``, each the heatmap beside the original image (the papers' Figure 5).

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_confmap_npz(result, out_dir / RESULT_NAME, image=image, metadata=metadata)
    written = [path]
    (out_dir / PARTIAL_NAME).unlink(missing_ok=True)
    if figures:
        try:
            from onepixel.confmap.figures import save_confmap_figures
        except ImportError as exc:  # matplotlib missing
            log.warning("no confmap figures (%s): pip install 'onepixel[analysis]'", exc)
        else:
            written += save_confmap_figures(result, out_dir, image)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


class MapExecutor(Protocol):
    """Computes one image's map somewhere (:func:`compute_confmap` here; on Ray workers in
    :mod:`onepixel.scaleout`), given the loaded ``classifier`` and the spec and options it was
    loaded from (for workers that load their own copy)."""

    def __call__(self, image: np.ndarray, classifier: Classifier, config: ConfmapConfig,
                 checkpoint: Path | None, spec: str, options: ModelOptions) -> ConfidenceMap: ...


def local_map(image: np.ndarray, classifier: Classifier, config: ConfmapConfig,
              checkpoint: Path | None, spec: str, options: ModelOptions) -> ConfidenceMap:
    """The local :class:`MapExecutor`: :func:`compute_confmap` in this process."""
    del spec, options
    return compute_confmap(image, classifier, config, checkpoint=checkpoint)


#: Maps with more evaluations than this are measured and their cost logged before they start.
ESTIMATE_ABOVE = 5_000_000
#: About this many evaluations are timed for the estimate, on a grid of this step.
ESTIMATE_EVALUATIONS = 4_000
PROBE_STEP = 51


@dataclass(frozen=True)
class ConfmapEstimate:
    """What a map will cost, from a short measurement on this machine.

    Attributes
    ----------
    evaluations : int
        Model evaluations of the whole map (pixels x colours).
    seconds : float
        Expected wall time: ``evaluations`` at the measured rate.
    rate : float
        Evaluations per second measured on ``measured`` evaluations (a few pixels).
    step, colours, pixels : int
        The map's colour step, colours per pixel and pixels.
    """

    evaluations: int
    seconds: float
    rate: float
    measured: int
    step: int
    colours: int
    pixels: int

    def describe(self) -> str:
        """One paragraph for the user: the cost, and the cheaper settings."""
        hours = self.seconds / 3600
        when = f"{hours:.1f} h" if hours >= 1 else f"{self.seconds / 60:.1f} min"
        text = (f"confmap: {self.evaluations:,} evaluations ({self.pixels:,} pixels x {self.colours:,} "
                f"colours at step {self.step}), at most about {when}: {self.rate:,.0f} evaluations/s "
                f"measured here on {self.measured:,} evaluations of a coarse grid (finer grids run "
                "faster per evaluation).")
        if self.step < 85:
            cheap = len(colour_levels(85)) ** 3
            text += (f" Cheaper: ConfmapConfig.step 85 (`--step 85`: {cheap} colours, "
                     f"{self.colours / cheap:,.0f}x fewer evaluations), or a GPU; the exact incremental "
                     "engine (ConfmapConfig.method 'fast', `--method fast`) is the fastest on CPU.")
        return text


def estimate_confmap(image: np.ndarray, classifier: Classifier, config: ConfmapConfig) -> ConfmapEstimate:
    """Time a map of a few pixels of ``image`` and extrapolate to the whole map (no checkpoint,
    nothing written)."""
    h, w = classifier.input_shape[:2]
    grey = classifier.input_shape[2] != 3
    pixels = len(config.pixels) if config.pixels is not None else h * w
    colours = len(config.levels) if grey else config.n_colours
    # The rate (evaluations/s) hardly depends on the grid: measure on a coarse one (step 51:
    # 216 colours) at pixels spread over the image (the incremental engine's cost depends on
    # the position), so the measurement takes seconds, not the hours of one step-5 pixel.
    probe_step = max(config.step, PROBE_STEP)
    probe_colours = len(colour_levels(probe_step)) ** (1 if grey else 3)
    n_px = int(min(pixels, max(1, ESTIMATE_EVALUATIONS // probe_colours)))
    sample = tuple((int(x), int(y)) for x, y in zip(np.linspace(0, w - 1, n_px).round(),
                                                    np.linspace(0, h - 1, n_px).round(), strict=True))
    probe = replace(config, step=probe_step, pixels=sample, progress=False)
    start = time.perf_counter()
    compute_confmap(image, classifier, probe)
    elapsed = max(time.perf_counter() - start, 1e-6)
    rate = n_px * probe_colours / elapsed
    evaluations = pixels * colours
    return ConfmapEstimate(evaluations, evaluations / rate, rate, n_px * probe_colours, config.step,
                           colours, pixels)


def confmap_image_file(image: str | Path, out_dir: str | Path, model: str = "max-mitosis",
                       model_options: ModelOptions | None = None,
                       config: ConfmapConfig | None = None,
                       mapper: MapExecutor | None = None,
                       defence: str | None = None) -> tuple[ConfidenceMap, list[Path]]:
    """``onepixel confmap IMAGE --out DIR``: map one image file, checkpointing into ``out_dir``.

    ``mapper`` computes the map (default: :func:`local_map`). With a ``defence`` (a spec such
    as ``median3``) the defended model is mapped, by the full network (see
    :func:`~onepixel.scoring.policy.load_confmap_classifier`). Returns the map and the files
    written (``confmap.npz`` and the figures).
    """
    from onepixel.datasets.images import load_image

    config = config or ConfmapConfig()
    options = model_options or ModelOptions(device=config.device, dtype=config.dtype)
    classifier = load_confmap_classifier(model, options, config.evaluator, defence)
    array = load_image(image, classifier.input_shape)
    # The output folder once the inputs are good (a missing image leaves no empty folder), and
    # before the map: an unusable --out fails now, not after the whole map.
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    h, w = classifier.input_shape[:2]
    if mapper is None and config.n_colours * h * w > ESTIMATE_ABOVE:
        # Say what a long job costs before it starts (the papers' step 5 is ~44 h on 2 CPU cores).
        log.info("%s", estimate_confmap(array, classifier, config).describe())
    result = (mapper or local_map)(array, classifier, config, Path(out_dir), model, options)
    return result, save_confmap(result, out_dir, image=array,
                                metadata={"defence": defence_of(classifier)})
