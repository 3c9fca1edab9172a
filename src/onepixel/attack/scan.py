"""The scan search (``AttackConfig(method="scan")``): the audit's exhaustive coarse scan, then
integer refinement, on one image at a time.

:class:`ScanSearch` is the :class:`~onepixel.attack.methods.Search` that campaigns, every
executor and ``onepixel evaluate`` run for ``method="scan"``; ``onepixel audit`` uses the same
pieces (:func:`scan`, :class:`Refiner`, :func:`prove_best`).

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

from onepixel.attack.goals import Goal
from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.engine import MapExecutor, compute_confmap
from onepixel.confmap.result import ConfidenceMap, colour_levels
from onepixel.errors import ConfigError
from onepixel.models.base import Classifier, ClassProbability
from onepixel.models.options import ModelOptions
from onepixel.optimize.de import DEResult
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
    """What the audit minimises for a goal name: the score when the goal lowers it (decrease,
    untargeted), else ``1 - score`` (the goal's own :meth:`Goal.energy` on its score)."""
    s = np.asarray(scores, dtype=np.float64)
    return s if lowers_score(goal) else 1.0 - s


def goal_class(goal: Goal | None) -> int | None:
    """The class whose probability a K-class goal scores (:attr:`Goal.class_index`); None for
    a binary goal or None."""
    return None if goal is None else goal.class_index


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


#: The scan step without ``max_queries`` or ``scan_step``: the audit's (``AuditConfig.step``,
#: 64 colours).
SCAN_STEP = 85
#: Refinement starts and rounds of a scan attack: the audit's (``AuditConfig.top``, ``.rounds``).
SCAN_TOP = 8
SCAN_ROUNDS = 4
#: Queries the automatic scan step leaves for refinement and re-scoring: one round from one
#: start (16 neighbour proposals + 3 x 256 colour values) and a margin.
REFINE_RESERVE = 1024
#: ``DEResult.message`` of a scan attack (not written to the RUN).
MESSAGE_SCAN = "scan + refinement"


def scan_cost(n_pixels: int, step: int, channels: int = 3) -> int:
    """Evaluations of a scan of ``n_pixels`` pixels (``H x W`` for a whole image) at colour
    ``step``: every colour of the grid for RGB (``channels`` 3), every grey level for 1."""
    return n_pixels * len(colour_levels(step)) ** channels


def choose_scan_step(n_pixels: int, max_queries: int | None, scan_step: int | None = None,
                     channels: int = 3) -> int:
    """The scan's colour step for ``n_pixels`` scanned pixels of ``channels`` (3 or 1) under a
    query budget.

    ``scan_step`` when given (it must fit the budget); else, with ``max_queries``, the finest
    grid (smallest step) whose scan leaves :data:`REFINE_RESERVE` queries; else
    :data:`SCAN_STEP`.

    Raises
    ------
    ConfigError
        ``max_queries`` is too small for the coarsest scan (8 colours per pixel, 2 grey
        levels) or for the given ``scan_step``.
    """
    if scan_step is not None:
        cost = scan_cost(n_pixels, scan_step, channels)
        if max_queries is not None and cost >= max_queries:
            raise ConfigError(f"AttackConfig.scan_step {scan_step} costs {cost:,} queries on "
                              f"{n_pixels:,} pixels, not less than AttackConfig.max_queries "
                              f"{max_queries:,}; raise max_queries or the step, or leave "
                              "scan_step None to fit the budget")
        return scan_step
    if max_queries is None:
        return SCAN_STEP
    for step in range(1, 256):
        if scan_cost(n_pixels, step, channels) + REFINE_RESERVE <= max_queries:
            return step
    need = scan_cost(n_pixels, 255, channels) + REFINE_RESERVE
    coarsest = "8 colours" if channels == 3 else "2 grey levels"
    raise ConfigError(f"AttackConfig.max_queries {max_queries:,} is below the coarsest scan of "
                      f"{n_pixels:,} pixels ({coarsest} each) plus {REFINE_RESERVE} refinement "
                      f"queries: give at least {need:,}")


class ScanSearch:
    """The scan search as a :class:`~onepixel.attack.methods.Search`: per image, the exhaustive
    coarse scan, integer refinement from the best ``top`` scan pixels, and the end points
    re-scored on the whole classifier (the reported score is the classifier's own).

    The result is DE's with these meanings: ``nfev`` the queries spent (scan + refinement +
    re-scoring, at most ``max_queries``), ``nit`` the refinement rounds that scored anything,
    ``converged`` False, and the history the best score after the scan's best pixels were scored
    (generation 0) and after each refinement round, the last one the re-scored score.

    K-class models are scanned and refined on the goal class's probability (as DE's energy);
    the finalists are chosen and judged by the goal (successful first, then by energy).

    Parameters
    ----------
    classifier : Classifier
        Scanned on the exact confidence-map engine (load it with
        :func:`~onepixel.scoring.policy.load_confmap_classifier` for the fast path).
    config : AttackConfig
        ``max_queries`` and ``scan_step`` set the budget and the grid.
    top, rounds : int
        Refinement starts and rounds (the audit's defaults).
    pixels : tuple of (x, y) or None
        Scan only these pixels (None: every pixel); refinement may step outside them.
    """

    name = "scan"

    def __init__(self, classifier: Classifier, config, top: int = SCAN_TOP,
                 rounds: int = SCAN_ROUNDS, pixels: tuple[tuple[int, int], ...] | None = None):
        from onepixel.scoring.policy import evaluator_for

        if top < 1 or rounds < 0:
            raise ConfigError(f"scan search: top must be >= 1 and rounds >= 0, got top={top}, "
                              f"rounds={rounds}")
        self.classifier = classifier
        self.config = config
        self.top, self.rounds = int(top), int(rounds)
        self.pixels = None if pixels is None else tuple((int(x), int(y)) for x, y in pixels)
        # The refinement's moves are scored in one call each: the incremental evaluator where it
        # applies (as the audit), whatever the campaign's DE evaluator is.
        self.evaluator = evaluator_for(classifier, "auto", updating="deferred")
        self._spent = 0
        channels = int(self.input_shape[2])
        if channels not in (1, 3):
            raise ConfigError(f"AttackConfig.method 'scan' needs an RGB or greyscale model, this "
                              f"one has {channels} channels; use method 'de' or 'rs'")
        self.step = self.check(self.input_shape)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.classifier.input_shape)

    @property
    def n_evaluations(self) -> int:
        """Queries spent so far (scan + refinement + re-scoring)."""
        return self._spent

    def check(self, input_shape: tuple[int, ...]) -> int:
        """The scan step for images of ``input_shape`` (H, W, C) under the budget.

        Raises
        ------
        ConfigError
            The budget does not fit (see :func:`choose_scan_step`).
        """
        h, w = input_shape[:2]
        n_pixels = h * w if self.pixels is None else len(self.pixels)
        channels = input_shape[2] if len(input_shape) > 2 else 3
        return choose_scan_step(n_pixels, self.config.max_queries, self.config.scan_step, channels)

    def run(self, images: np.ndarray, goals: Sequence[Goal], problem_ids: Sequence[int],
            on_finish=None, on_generation=None) -> list:
        """Scan, refine and re-score each image (one after the other); see
        :meth:`onepixel.attack.methods.Search.run`. ``on_finish`` also gets the class
        probabilities (K,) of the best end point for K-class goals."""
        results = []
        for i, (image, goal) in enumerate(zip(images, goals, strict=True)):
            result, history, final = self._attack_image(np.asarray(image), goal)
            results.append(result)
            if on_finish is not None:
                on_finish(i, result, history, final)
            if on_generation is not None:
                on_generation(len(images) - i - 1, self.n_evaluations)
        return results

    def _attack_image(self, image: np.ndarray, goal: Goal):
        attack = self.config
        name = goal.name
        k = goal.class_index
        # A K-class model is searched on the goal class's probability, as DE's energy is.
        searched = self.classifier if k is None else ClassProbability(self.classifier, k)
        channels = int(image.shape[2])
        cmap = scan(image, searched, self.step, pixels=self.pixels)
        queries = int(cmap.evaluations)
        starts = scan_candidates(cmap, name, self.top)
        budget = None
        if attack.max_queries is not None:
            # What is left after the scan, less one re-scoring query per start.
            budget = max(attack.max_queries - queries - len(starts), 0)
        refiner = Refiner(self.evaluator, image, name, cmap, max_evaluations=budget, class_index=k)
        refined = refiner.refine([c.vector for c in starts], self.rounds)
        queries += refiner.evaluations
        # Prove by evaluation on the whole network: the reported score is the classifier's own.
        finalists = list(dict.fromkeys(c.vector for c in refined or starts[:1]))
        best, final = prove_best(self.classifier, image, finalists, name,
                                 None if k is None else goal)
        queries += len(finalists)
        self._spent += queries
        history = list(refiner.history) or [best.score]
        history[-1] = best.score
        # DE's genome layout: (x, y, r, g, b), or (x, y, v) for a greyscale model.
        x = np.asarray(best.vector[: 2 + channels], dtype=np.float64)
        x.setflags(write=False)
        energies = np.asarray([energy(name, s) for s in history])
        result = DEResult(problem_id=0, x=x, fun=float(energies[-1]), nit=len(history) - 1,
                          nfev=queries, converged=False, message=MESSAGE_SCAN, history=energies)
        log.debug("scan: step %d, %d queries, best %.4g at (%d, %d)", self.step, queries,
                  best.score, best.x, best.y)
        return result, np.asarray(history, dtype=np.float64), final
