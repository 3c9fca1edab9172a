"""``auto`` by measurement: time each eligible evaluator on the call shape it will serve, keep the faster.

Which evaluator is faster depends on the machine, the model and how many candidates each call
carries: the incremental evaluator pays a fixed cost per call (eager torch) and wins on large
calls; ONNX Runtime's full network wins on small ones (bench/results/). A constant cannot know a
user's CPU, so :func:`choose_evaluator` times each candidate evaluator for a fraction of a second
on random images and candidates of the real shape, and picks the one with the lowest time per
candidate. Every evaluator gives the same scores (tested), so the choice changes speed only.

Decisions are cached per machine, library versions, model and call shape in
``engine-choices.json`` beside the asset cache (``$ONEPIXEL_CACHE`` or the user cache folder), so
a resumed campaign does not measure again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from onepixel.fileio import write_json_atomic

log = logging.getLogger(__name__)

#: Seconds each evaluator is timed for (after one warm-up call).
MEASURE_SECONDS = 0.25
#: Most candidates in one timed call: beyond a few thousand, every evaluator's time grows linearly
#: with the candidates (they are scored in chunks), so a slice of a big call measures its rate.
MAX_MEASURED_CANDIDATES = 2048
CACHE_FILE = "engine-choices.json"


@dataclass(frozen=True)
class EngineChoice:
    """The evaluator ``auto`` chose, and why.

    Attributes
    ----------
    chosen : str
        The winning evaluator's name (``incremental`` or ``full``).
    seconds_per_candidate : dict of str to float
        What each evaluator took per candidate on the measured shape.
    call_shape : (int, int)
        (images, candidates per image) of the calls the evaluator will serve.
    measured_shape : (int, int)
        The shape actually timed (a slice of large calls; see :data:`MAX_MEASURED_CANDIDATES`).
    cached : bool
        Read from the cache instead of measured in this process.
    """

    chosen: str
    seconds_per_candidate: Mapping[str, float]
    call_shape: tuple[int, int]
    measured_shape: tuple[int, int]
    cached: bool = False
    key: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        """What config.json records (``engine_choice``)."""
        return {"chosen": self.chosen,
                "seconds_per_candidate": dict(self.seconds_per_candidate),
                "call_shape": list(self.call_shape), "measured_shape": list(self.measured_shape),
                "cached": self.cached}


def cache_path() -> Path:
    """Where decisions are cached: ``$ONEPIXEL_CACHE/engine-choices.json`` or the user cache."""
    env = os.environ.get("ONEPIXEL_CACHE")
    if env:
        return Path(env) / CACHE_FILE
    import platformdirs

    return platformdirs.user_cache_path("onepixel") / CACHE_FILE


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows (benchmarks name it too)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> str:
    import torch

    parts = [f"torch={torch.__version__}", f"threads={torch.get_num_threads()}"]
    try:
        import onnxruntime

        parts.append(f"onnxruntime={onnxruntime.__version__}")
    except ImportError:
        pass
    return ",".join(parts)


def decision_key(model: str, device: str, input_shape: tuple[int, ...], call_shape: tuple[int, int],
                 names: tuple[str, ...]) -> str:
    """The cache key of a decision: machine, versions, model, device, shapes and the evaluators."""
    # "prepared": decisions timed on scores_prepared; those cached by the first version (which
    # timed scores, base pass included) are not reused.
    text = json.dumps([cpu_name(), os.cpu_count(), platform.machine(), _versions(), model, device,
                       list(input_shape), list(call_shape), sorted(names), "prepared"])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _time_per_candidate(evaluator, images: np.ndarray, candidates: np.ndarray,
                        budget: float) -> float:
    """Seconds per candidate of ``evaluator.scores_prepared`` on images prepared once, as an
    attack calls it (the incremental evaluator's base pass runs once per image per attack, not
    per call: timing ``scores`` would charge it to every candidate and, at one candidate per
    image, always pick the full network). One warm-up call, then calls until ``budget`` seconds
    have passed, the fastest kept (the least disturbed by other work on the machine). A warm-up
    call that alone takes over four budgets is answer enough (an engine that slow on this shape
    loses anyway), so the measurement stays bounded."""
    n = candidates.shape[0] * candidates.shape[1]
    prepared = evaluator.prepare(images)
    rows = np.arange(len(images))
    t0 = time.perf_counter()
    evaluator.scores_prepared(prepared, rows, candidates)  # warm-up: allocations, kernel choice
    warm = time.perf_counter() - t0
    if warm > 4 * budget:
        return warm / n
    best, spent, calls = warm, 0.0, 0
    while calls < 1 or spent < budget:
        t0 = time.perf_counter()
        evaluator.scores_prepared(prepared, rows, candidates)
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best / n


def measured_shape(call_shape: tuple[int, int]) -> tuple[int, int]:
    """The slice of a call that is timed: every candidate per image, as many images as fit in
    :data:`MAX_MEASURED_CANDIDATES` (at least one)."""
    images, per_image = max(1, int(call_shape[0])), max(1, int(call_shape[1]))
    return max(1, min(images, MAX_MEASURED_CANDIDATES // per_image)), per_image


def choose_evaluator(evaluators: Mapping[str, object], call_shape: tuple[int, int], *,
                     model: str = "", seed: int = 0, budget: float = MEASURE_SECONDS,
                     cache: bool | Path = True) -> EngineChoice:
    """Time each evaluator on ``call_shape`` and return the fastest (see the module docstring).

    Parameters
    ----------
    evaluators : mapping of str to Evaluator
        The eligible evaluators by name; all score the same model (same ``input_shape``).
    call_shape : (int, int)
        (images, candidates per image) of the calls they will serve: a deferred DE generation
        is (batch images, population); immediate updating (batch images, 1).
    model : str
        The model's identity for the cache (its sha256, or its spec).
    seed : int
        Seeds the random images and candidates that are timed.
    budget : float
        Seconds per evaluator.
    cache : bool or Path
        True: the default cache file (:func:`cache_path`); a path: that file; False: none.

    Returns
    -------
    EngineChoice
    """
    names = tuple(evaluators)
    if not names:
        raise ValueError("choose_evaluator needs at least one evaluator")
    first = evaluators[names[0]]
    shape = tuple(int(v) for v in first.input_shape)
    device = str(getattr(first, "device", "cpu"))
    call_shape = (int(call_shape[0]), int(call_shape[1]))
    key = decision_key(model, device, shape, call_shape, names)
    path = None if cache is False else (cache_path() if cache is True else Path(cache))
    if len(names) == 1:
        return EngineChoice(names[0], {}, call_shape, (0, 0), key=key)
    if path is not None and model:
        hit = _read_cache(path).get(key)
        if isinstance(hit, dict) and hit.get("chosen") in names:
            log.info("engine: %s (cached decision for calls of %d x %d candidates)",
                     hit["chosen"], *call_shape)
            return EngineChoice(hit["chosen"], hit.get("seconds_per_candidate", {}), call_shape,
                                tuple(hit.get("measured_shape", (0, 0))), cached=True, key=key)
    timed = measured_shape(call_shape)
    rng = np.random.default_rng(seed)
    h, w, c = shape
    images = rng.integers(0, 256, size=(timed[0], h, w, c), dtype=np.uint8)
    candidates = np.concatenate([rng.integers(0, w, size=(*timed, 1)), rng.integers(0, h, size=(*timed, 1)),
                                 rng.integers(0, 256, size=(*timed, c))], axis=2).astype(np.int64)
    per = {name: _time_per_candidate(ev, images, candidates, budget) for name, ev in evaluators.items()}
    chosen = min(per, key=per.get)
    log.info("engine: %s (measured on %d x %d candidates: %s per candidate)", chosen, *timed,
             ", ".join(f"{n} {s * 1e6:.1f} us" for n, s in per.items()))
    choice = EngineChoice(chosen, per, call_shape, timed, key=key)
    if path is not None and model:
        try:
            data = _read_cache(path)
            data[key] = {**choice.to_dict(), "measured": datetime.now(UTC).isoformat(timespec="seconds")}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, data)
        except OSError as exc:  # a read-only cache costs a measurement next time, nothing else
            log.debug("cannot cache the engine decision in %s: %s", path, exc)
    return choice
