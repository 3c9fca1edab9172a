"""Confidence maps on Ray: pixel ranges mapped by actors, merged into one ``confmap.npz``.

Every pixel's min, max, mean and arg-colours depend on that pixel alone, so a map split into
pixel ranges and merged equals the map computed in one piece. Each finished range is saved to
``DIR/confmap.ranges/range-NNNNN.npz`` at once (the checkpoint); a driver run again with the
same command maps only the missing ranges.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.engine import compute_confmap, map_key, pixel_ids
from onepixel.confmap.result import ConfidenceMap, load_confmap, write_confmap_npz
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ConfmapError, ScaleOutError
from onepixel.models.base import Classifier, ClassProbability, capabilities_of
from onepixel.models.options import ModelOptions
from onepixel.progress import progress_bar
from onepixel.scaleout.config import ExecutorConfig
from onepixel.scaleout.runtime import (
    ModelPayload,
    actor_class,
    connect,
    release,
    require_ray,
    worker_count,
)
from onepixel.scoring.policy import load_confmap_classifier

log = logging.getLogger(__name__)

RANGES = "confmap.ranges"


class ConfmapWorker:
    """A Ray actor's state: the model loaded once, mapping pixel ranges of any image."""

    def __init__(self, payload: ModelPayload, options: ModelOptions, method: str, threads: int,
                 defence: str | None = None, class_index: int | None = None):
        import torch

        torch.set_num_threads(threads)
        with payload.materialised(replace(options, threads=threads)) as (spec, options):
            # The driver's --defence: the workers map the same defended pipeline.
            self.classifier = load_confmap_classifier(spec, options, method, defence)
        if class_index is not None:
            # The driver maps one class of a K-class model (the audit's goal class).
            self.classifier = ClassProbability(self.classifier, class_index)

    def fingerprint(self) -> str:
        return capabilities_of(self.classifier).fingerprint

    def map(self, index: int, image: np.ndarray, config: ConfmapConfig) -> tuple[int, ConfidenceMap]:
        """The map of range ``index`` (``config.pixels``), with its index."""
        # Ray hands arrays over read-only (zero copy); the engine wants its own.
        return index, compute_confmap(np.array(image), self.classifier, config)


class RayMapper:
    """A :class:`~onepixel.confmap.engine.MapExecutor` on Ray actors.

    Parameters
    ----------
    config : ExecutorConfig
    ranges_per_worker : int
        Pixel ranges per worker and image: more ranges balance better and checkpoint more
        often, fewer cost less per-task overhead.
    """

    def __init__(self, config: ExecutorConfig | None = None, ranges_per_worker: int = 4):
        self.config = config or ExecutorConfig(kind="ray")
        require_ray()
        self.ranges_per_worker = ranges_per_worker
        self.workers = 0

    def __call__(self, image: np.ndarray, classifier: Classifier, config: ConfmapConfig,
                 checkpoint: Path | None, spec: str, options: ModelOptions) -> ConfidenceMap:
        ray = require_ray()
        from ray.util import ActorPool

        if not spec:
            raise ConfmapError("a map on Ray needs the model as a spec (file, built-in name or URL)")
        h, w = image.shape[:2]
        pixels = pixel_ids(config, h, w)
        started = connect(self.config)
        actors = []
        t0 = time.perf_counter()
        try:
            n = worker_count(self.config)
            self.workers = n
            n_ranges = min(len(pixels), n * self.ranges_per_worker)
            ranges = [r for r in np.array_split(pixels, n_ranges) if len(r)]
            folder = None if checkpoint is None else Path(checkpoint) / RANGES
            key = _key(image, classifier, config, len(ranges))
            done = _load_ranges(folder, key, len(ranges))
            todo = [i for i in range(len(ranges)) if i not in done]
            n_col = config.n_colours if image.shape[2] == 3 else len(config.levels)
            bar = progress_bar(total=len(pixels) * n_col, unit="eval", unit_scale=True,
                       initial=sum(len(ranges[i]) for i in done) * n_col, disable=not config.progress,
                       desc=f"confmap on Ray, {n} workers", dynamic_ncols=True)
            if todo:
                remote = actor_class(ConfmapWorker, self.config)
                payload = ray.put(ModelPayload.of(spec, options))
                # What the driver maps: a defended model, and/or one class of a K-class model.
                one_class = isinstance(classifier, ClassProbability)
                defended = defence_of(classifier.classifier if one_class else classifier)
                actors = [remote.remote(payload, options, config.evaluator, self.config.cpus_per_worker,
                                        None if defended == "none" else defended,
                                        classifier.class_index if one_class else None)
                          for _ in range(min(n, len(todo)))]
                want = capabilities_of(classifier).fingerprint
                for fp in ray.get([a.fingerprint.remote() for a in actors]):
                    if want and fp and fp != want:
                        raise ScaleOutError("a Ray worker loaded another model than the driver")
                image_ref = ray.put(image)
                sub = [(i, replace(config, progress=False, checkpoint_seconds=1e9,
                                   pixels=tuple((int(p % w), int(p // w)) for p in ranges[i])))
                       for i in todo]
                pool = ActorPool(actors)
                for index, part in pool.map_unordered(
                        lambda a, job: a.map.remote(job[0], image_ref, job[1]), sub):
                    done[index] = part
                    if folder is not None:
                        folder.mkdir(parents=True, exist_ok=True)
                        write_confmap_npz(part, folder / f"range-{index:05d}.npz",
                                          metadata={"key": key})
                    bar.update(len(ranges[index]) * n_col)
            bar.close()
        except ray.exceptions.RayError as exc:
            raise ScaleOutError(f"a Ray worker failed beyond {self.config.max_retries} retries: "
                                f"{exc}. Finished ranges are kept; run the same command again") from exc
        finally:
            release(actors, started)
        merged = merge_maps([done[i] for i in range(len(ranges))], time.perf_counter() - t0)
        # The original's score as a local map records it: by the driver's model.
        scores = np.asarray(classifier.scores(image[None])[0], dtype=np.float64).reshape(-1)
        merged = replace(merged, original_score=float(scores.max() if len(scores) > 1 else scores[0]))
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return merged


def merge_maps(parts: list[ConfidenceMap], seconds: float) -> ConfidenceMap:
    """One map from maps of disjoint pixel sets (NaN where a part did not map)."""
    first = parts[0]
    lo, hi, mean = (np.full(first.min.shape, np.nan) for _ in range(3))
    amin = np.zeros((*first.min.shape, 3), dtype=np.uint8)
    amax = np.zeros_like(amin)
    for part in parts:
        m = ~np.isnan(part.min)
        lo[m], hi[m], mean[m] = part.min[m], part.max[m], part.mean[m]
        if part.argmin_rgb is not None:
            amin[m], amax[m] = part.argmin_rgb[m], part.argmax_rgb[m]
    return ConfidenceMap(lo, hi, mean, amin, amax, first.original_score, first.step,
                         sum(p.evaluations for p in parts), seconds, first.model, first.method,
                         first.device, first.dtype)


def _key(image: np.ndarray, classifier: Classifier, config: ConfmapConfig, n_ranges: int) -> str:
    """What the saved ranges must match to be reused: what decides the map
    (:func:`~onepixel.confmap.engine.map_key`), the method and the split into ranges."""
    return json.dumps({**map_key(image, classifier, config), "evaluator": config.evaluator,
                       "ranges": n_ranges}, sort_keys=True)


def _load_ranges(folder: Path | None, key: str, n_ranges: int) -> dict[int, ConfidenceMap]:
    if folder is None or not folder.is_dir():
        return {}
    done = {}
    for path in sorted(folder.glob("range-*.npz")):
        try:
            part = load_confmap(path)
            index = int(path.stem.split("-")[1])
        except Exception as exc:  # a torn or foreign file: map that range again
            log.warning("ignoring %s (%s)", path, exc)
            continue
        if part.metadata.get("key") == key and 0 <= index < n_ranges:
            done[index] = part
    if done:
        log.info("resuming: %d of %d pixel ranges already mapped in %s", len(done), n_ranges, folder)
    return done
