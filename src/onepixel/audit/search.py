"""The audit's search on one image: an exhaustive coarse scan, then integer refinement.

The scan is the exact confidence-map engine (:func:`onepixel.confmap.engine.compute_confmap`):
every pixel x every colour of the grid, reduced per pixel to the best score and the colour
reaching it. Refinement starts from the best ``top`` scan pixels and the RUN's own DE pixel and
climbs at integer resolution: the 3x3 positions around (with the current colour and with each
neighbour's best scan colour), then each colour channel over all 256 values, until a round
improves nothing. Candidates are scored on the evaluator the scoring policy picks (the exact
incremental one on CPU for Keras / built-in models).

K-class models are searched on one class's probability (the goal's: the true class, pushed
down, or the target, pushed up): the scan maps ``ClassProbability(classifier, k)`` and the
refinement reads column ``k`` of the evaluator's class probabilities. Greyscale models
(``C = 1``) search grey levels; candidates still carry ``rgb = (v, v, v)``, as attacks.csv
writes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from onepixel.attack.goals import Goal, Targeted, Untargeted
from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.engine import MapExecutor, compute_confmap
from onepixel.confmap.result import ConfidenceMap
from onepixel.models.base import Classifier
from onepixel.models.options import ModelOptions
from onepixel.runs.schema import lowers_score
from onepixel.scoring.evaluators import Evaluator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One pixel vector and its score: ``x`` the column, ``y`` the row, ``rgb`` 0..255
    (``(v, v, v)`` for a greyscale value ``v``)."""

    x: int
    y: int
    rgb: tuple[int, int, int]
    score: float

    @property
    def vector(self) -> tuple[int, int, int, int, int]:
        return (self.x, self.y, *self.rgb)


def energy(goal: str, scores):
    """What the audit minimises: the score for ``decrease``, ``1 - score`` for ``increase``."""
    s = np.asarray(scores, dtype=np.float64)
    return s if lowers_score(goal) else 1.0 - s


def goal_class(goal: Goal | None) -> int | None:
    """The class whose probability a K-class goal scores (the true class of
    :class:`~onepixel.attack.goals.Untargeted`, the target of
    :class:`~onepixel.attack.goals.Targeted`); None for a binary goal or None."""
    if isinstance(goal, Untargeted):
        return goal.true_class
    if isinstance(goal, Targeted):
        return goal.target_class
    return None


def pick_best(goal: Goal, scores: np.ndarray) -> tuple[int, bool]:
    """The best of re-scored finalists by ``goal`` and whether it succeeds.

    Successful finalists first (the campaign's criterion: for K-class goals the predicted
    class), then the lowest energy, then the first listed. For binary goals the lowest energy
    is also the most successful, so this is the energy order.

    Parameters
    ----------
    goal : Goal
    scores : ndarray, (N,) or (N, K)
        The classifier's scores of each finalist.

    Returns
    -------
    (int, bool)
        The index of the best finalist and its success.
    """
    scores = np.asarray(scores, dtype=np.float64)
    success = np.array([goal.judge(s)[0] for s in scores], dtype=bool)
    e = np.asarray(goal.energy(scores), dtype=np.float64)
    best = int(np.lexsort((np.arange(len(e)), e, ~success))[0])
    return best, bool(success[best])


def scan(image: np.ndarray, classifier: Classifier, step: int, batch_size: int | None = None,
         pixels: tuple[tuple[int, int], ...] | None = None, mapper: MapExecutor | None = None,
         spec: str = "", options: ModelOptions | None = None) -> ConfidenceMap:
    """Every pixel x the colour grid of ``step`` on the exact confidence-map engine.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), uint8
    classifier : Classifier
        Loaded with :func:`~onepixel.scoring.policy.load_confmap_classifier` so that the fast
        exact path applies; for a K-class model, ``ClassProbability(classifier, k)`` (the map
        of one class's probability).
    mapper : MapExecutor, optional
        Where the map is computed (default: here; :class:`onepixel.scaleout.RayMapper`: Ray
        actors, which load the model from ``spec`` and ``options``).

    Returns
    -------
    ConfidenceMap
        ``min`` / ``argmin_rgb`` (decrease) and ``max`` / ``argmax_rgb`` (increase), (H, W).
    """
    config = ConfmapConfig(step=step, batch_size=batch_size, progress=False, pixels=pixels)
    if mapper is not None:
        return mapper(image, classifier, config, None, spec, options or ModelOptions())
    return compute_confmap(image, classifier, config)


def scan_candidates(cmap: ConfidenceMap, goal: str, k: int) -> list[Candidate]:
    """The ``k`` best scanned pixels (best first; ties by row, then column)."""
    best, colours = (cmap.min, cmap.argmin_rgb) if lowers_score(goal) else (cmap.max, cmap.argmax_rgb)
    e = energy(goal, best).ravel()
    scanned = np.flatnonzero(~np.isnan(e))
    order = scanned[np.argsort(e[scanned], kind="stable")][:k]
    w = best.shape[1]
    out = []
    for flat in order:
        y, x = divmod(int(flat), w)
        out.append(Candidate(x, y, tuple(int(v) for v in colours[y, x]), float(best[y, x])))
    return out


@contextlib.contextmanager
def single_threaded_torch():
    """Torch ops single-threaded for a while (process-wide, restored after): on a busy CPU,
    intra-op threads on these small batches stall (measured about 8x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Refiner:
    """Integer hill-climbing of one-pixel candidates on one image.

    Parameters
    ----------
    evaluator : Evaluator
        Chosen by the scoring policy (the exact incremental one on CPU where it applies).
    image : ndarray, shape (H, W, C), uint8
        C = 3 (RGB) or 1 (greyscale: candidates are ``(x, y, v)``, one channel line per round).
    goal : {"decrease", "increase", "untargeted", "targeted"}
        Whether the score is pushed down (decrease, untargeted) or up.
    scan_map : ConfidenceMap or None
        The scan, whose best colour per pixel seeds the moves to neighbouring positions.
    max_evaluations : int or None
        A query budget (``onepixel attack --method scan --max-queries``): a move whose
        proposals do not all fit moves only the best starts whose proposals fit, and the climb
        ends when not even one fits. None: no budget (the audit).
    class_index : int or None
        A K-class model: the class whose probability is the score (column of the evaluator's
        (P, K) output). None: a binary model's one score.

    Attributes
    ----------
    evaluations : int
        Candidates scored so far.
    rounds_run : int
        Rounds of the last :meth:`refine` that scored anything.
    history : list of float
        The best score over all starts after the starts were scored, then after each round.
    """

    def __init__(self, evaluator: Evaluator, image: np.ndarray, goal: str,
                 scan_map: ConfidenceMap | None = None, max_evaluations: int | None = None,
                 class_index: int | None = None):
        self.evaluator = evaluator
        self.prepared = evaluator.prepare(image[None])
        self.goal = goal
        self.h, self.w = image.shape[:2]
        self.channels = int(image.shape[2])
        self.class_index = class_index
        self.evaluations = 0
        self.max_evaluations = max_evaluations
        self.rounds_run = 0
        self.history: list[float] = []
        self.seeds = None
        if scan_map is not None:
            seeds = scan_map.argmin_rgb if lowers_score(goal) else scan_map.argmax_rgb
            # Greyscale maps hold (v, v, v); a candidate holds v once.
            self.seeds = seeds[..., : self.channels]
            self.scanned = ~np.isnan(scan_map.min)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Scores (P,) of pixel vectors (P, 2 + C): the goal class's probability for K classes."""
        if len(vectors) == 0:
            return np.zeros(0)
        self.evaluations += len(vectors)
        cand = np.ascontiguousarray(vectors, dtype=np.int64)[None]
        out = np.asarray(self.evaluator.scores_prepared(self.prepared, np.zeros(1, np.int64), cand),
                         dtype=np.float64)[0]
        return out if self.class_index is None else out[:, self.class_index]

    def _neighbours(self, v: np.ndarray) -> list[np.ndarray]:
        x, y = int(v[0]), int(v[1])
        out = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nx, ny = x + dx, y + dy
                if (dx or dy) and 0 <= nx < self.w and 0 <= ny < self.h:
                    out.append(np.array([nx, ny, *v[2:]]))
                    if self.seeds is not None and self.scanned[ny, nx]:
                        out.append(np.array([nx, ny, *self.seeds[ny, nx]]))
        return out

    def _channel_line(self, v: np.ndarray, channel: int) -> list[np.ndarray]:
        line = np.repeat(v[None], 256, axis=0)
        line[:, 2 + channel] = np.arange(256)
        return list(line)

    def refine(self, starts: list[tuple[int, int, int, int, int]], rounds: int) -> list[Candidate]:
        """Climb from each start; returns the end point of each, in the order of ``starts``.

        One round: move to the best of the 3x3 positions around, then set each colour channel
        in turn to its best of the 256 values. All starts move together (one evaluator call per
        move), and a start stops once a round improves nothing. Under ``max_evaluations``
        only the first starts that fit are scored, so fewer end points may come back.
        """
        with single_threaded_torch():
            return self._refine(starts, rounds)

    def _left(self) -> float:
        """Queries left in the budget (infinite without one)."""
        return np.inf if self.max_evaluations is None else self.max_evaluations - self.evaluations

    def _refine(self, starts: list[tuple[int, int, int, int, int]], rounds: int) -> list[Candidate]:
        width = 2 + self.channels
        # Starts are (x, y, r, g, b); a greyscale candidate is (x, y, v) with v = r = g = b.
        cur = np.asarray(starts, dtype=np.int64).reshape(-1, 5)[:, :width]
        # Under a budget only the first starts that fit are climbed (callers list the best first).
        cur = cur[: int(min(len(cur), max(self._left(), 0)))]
        self.rounds_run, self.history = 0, []
        if not len(cur):
            return []
        cur_e = energy(self.goal, self.scores(cur))
        self.history.append(self._best_score(cur_e))
        active = np.ones(len(cur), dtype=bool)
        moves = [self._neighbours] + [lambda v, c=c: self._channel_line(v, c)
                                      for c in range(self.channels)]
        spent = False
        for _ in range(rounds):
            if not active.any() or spent:
                break
            before = cur_e.copy()
            scored = False
            for move in moves:
                idx = np.flatnonzero(active)
                proposals = [np.asarray(move(cur[i]), dtype=np.int64).reshape(-1, width)
                             for i in idx]
                if not proposals or not sum(len(p) for p in proposals):
                    continue
                if self.max_evaluations is not None:
                    idx, proposals = self._fit(idx, proposals, cur_e)
                    if not len(idx):
                        spent = True
                        break
                scored = True
                e = energy(self.goal, self.scores(np.concatenate(proposals)))
                at = 0
                for i, prop in zip(idx, proposals, strict=True):
                    part = e[at:at + len(prop)]
                    at += len(prop)
                    if len(part) and part.min() < cur_e[i]:
                        j = int(part.argmin())
                        cur[i], cur_e[i] = prop[j], part[j]
            active &= cur_e < before
            if scored:
                self.rounds_run += 1
                self.history.append(self._best_score(cur_e))
        scores = cur_e if lowers_score(self.goal) else 1.0 - cur_e
        return [Candidate(int(v[0]), int(v[1]), _rgb(v[2:]), float(s))
                for v, s in zip(cur, scores, strict=True)]


    def _best_score(self, e: np.ndarray) -> float:
        best = float(np.min(e))
        return best if lowers_score(self.goal) else 1.0 - best

    def _fit(self, idx: np.ndarray, proposals: list[np.ndarray],
             cur_e: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The best starts (lowest energy first) whose proposals fit in the budget together."""
        order = np.argsort(cur_e[idx], kind="stable")
        left, keep = self._left(), []
        for k in order:
            if len(proposals[k]) <= left:
                keep.append(int(k))
                left -= len(proposals[k])
        keep.sort()
        return idx[keep], [proposals[k] for k in keep]


def _rgb(values) -> tuple[int, int, int]:
    """A candidate's colour values (3 for RGB, 1 for greyscale) as ``(r, g, b)``."""
    v = [int(c) for c in values]
    return (v[0], v[0], v[0]) if len(v) == 1 else (v[0], v[1], v[2])


def apply_pixel(image: np.ndarray, x: int, y: int, rgb) -> np.ndarray:
    """A copy of ``image`` (H, W, C) uint8 with pixel column ``x``, row ``y`` set to ``rgb``
    (its first value for a greyscale image, C = 1)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[y, x] = np.asarray(rgb, dtype=np.uint8)[: out.shape[2]]
    return out


def rescore(classifier: Classifier, image: np.ndarray, candidates: list[Candidate]) -> np.ndarray:
    """The classifier's own scores of ``image`` with each candidate's pixel applied: (N,) for a
    binary model, (N, K) class probabilities for a K-class one."""
    batch = np.stack([apply_pixel(image, c.x, c.y, c.rgb) for c in candidates])
    return np.asarray(classifier.scores(batch), dtype=np.float64)


def verify(classifier: Classifier, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
    """Re-score candidates on the whole network (the pixel applied to the image, the classifier
    called directly): the scores an audit reports are these, so each is proven by evaluation."""
    if not candidates:
        return []
    scores = rescore(classifier, image, candidates).reshape(len(candidates))
    return [Candidate(c.x, c.y, c.rgb, float(s)) for c, s in zip(candidates, scores, strict=True)]


def prove_best(classifier: Classifier, image: np.ndarray, vectors: Sequence[tuple[int, ...]],
               goal: str, objective: Goal | None = None) -> tuple[Candidate, np.ndarray | None]:
    """Re-score pixel vectors ``(x, y, r, g, b)`` on the whole classifier and keep the best.

    Binary goals (``objective`` None): the lowest energy, the first of equals (list DE's own
    pixel first and it wins ties). A K-class ``objective``: a success by the predicted class
    first, then the energy (:func:`pick_best`), as the campaign judges.

    Returns
    -------
    (Candidate, ndarray (K,) or None)
        The best, its score the classifier's own (the goal class's probability for K classes),
        and for K classes its class probabilities.
    """
    unscored = [Candidate(v[0], v[1], tuple(v[2:]), float("nan")) for v in vectors]
    if objective is None:
        proven = verify(classifier, image, unscored)
        return proven[int(np.argmin(energy(goal, [c.score for c in proven])))], None
    probs = rescore(classifier, image, unscored)
    i, _success = pick_best(objective, probs)
    c = unscored[i]
    return Candidate(c.x, c.y, c.rgb, float(objective.score(probs[i]))), probs[i]
