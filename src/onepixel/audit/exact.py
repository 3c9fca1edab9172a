"""Exact per-position optima: every colour of a grid (step 1: all 16,777,216) at one pixel.

This is the confidence-map engine restricted to the chosen pixels
(``ConfmapConfig(step=1, pixels=((x, y),))``): on the fast path each colour is one exact
incremental evaluation, so a position costs 16.7M evaluations (minutes on CPU, seconds on a
GPU). Coarser steps run the same code; the tests use them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.audit.search import Candidate
from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.engine import compute_confmap
from onepixel.models.base import Classifier
from onepixel.runs.schema import lowers_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PositionOptimum:
    """The best colour at one position over a grid.

    Attributes
    ----------
    best : Candidate
        The position, the first grid colour (r-major order) reaching the optimum, its score.
    step : int
        The grid's step (1: exact at integer resolution).
    evaluations : int
    seconds : float
        Wall time, shared equally among the positions computed together.
    """

    best: Candidate
    step: int
    evaluations: int
    seconds: float


def position_optima(image: np.ndarray, classifier: Classifier, goal: str,
                    positions: list[tuple[int, int]], step: int = 1,
                    batch_size: int | None = None, progress: bool = False,
                    checkpoint: Path | None = None) -> list[PositionOptimum]:
    """The optimum of every colour of the ``step`` grid at each ``(x, y)`` of ``positions``.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), uint8
    classifier : Classifier
        One score per image: a binary model, or ``ClassProbability(model, k)`` for a K-class
        model's goal class.
    goal : {"decrease", "increase", "untargeted", "targeted"}
        The minimum (decrease, untargeted) or maximum (increase, targeted) score is the optimum.
    positions : list of (x, y)
    step : int
        Colour grid step; 1 is the whole cube, exact at integer resolution.
    checkpoint : folder, optional
        Where the confidence-map engine checkpoints (every minute, and on Ctrl-C): an
        interrupted run resumes there. Removed once done.

    Returns
    -------
    list of PositionOptimum, in the order of ``positions``.
    """
    if not positions:
        return []
    t0 = time.perf_counter()
    # One map over all the positions: the engine is built once (about 2 s on CPU).
    config = ConfmapConfig(step=step, batch_size=batch_size, progress=progress,
                           pixels=tuple(positions))
    cmap = compute_confmap(image, classifier, config, checkpoint=checkpoint)
    if checkpoint is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)
    best, colours = (cmap.min, cmap.argmin_rgb) if lowers_score(goal) else (cmap.max, cmap.argmax_rgb)
    per_position = cmap.n_colours
    seconds = (time.perf_counter() - t0) / len(set(positions))
    out = []
    for x, y in positions:
        rgb = tuple(int(v) for v in colours[y, x])
        log.info("exact optimum at (%d, %d) over %d colours: %.6g at rgb %s", x, y, per_position,
                 best[y, x], rgb)
        out.append(PositionOptimum(Candidate(x, y, rgb, float(best[y, x])), step, per_position,
                                   seconds))
    return out
