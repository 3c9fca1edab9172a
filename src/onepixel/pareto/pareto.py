"""The (score, visibility) Pareto front of one-pixel attacks on one image, found by NSGA-II.

The two objectives, both minimised, of a pixel ``(x, y, c_1..c_C)`` (``(x, y, r, g, b)`` for RGB,
``(x, y, v)`` for greyscale) are the attack's energy towards its goal
(:meth:`onepixel.attack.goals.Goal.energy`: the model's score for ``decrease``, ``1 - score`` for
``increase``, ``p[true]`` for ``untargeted``, ``1 - p[target]`` for ``targeted``) and its
visibility h (the chromatic paper's RMSE in [0, 1] over the C channels between the colour and the
mean of its existing neighbours in the ORIGINAL image, the colour budget's definition:
:func:`onepixel.attack.budget.budget_h`).

The search is pymoo's NSGA-II over integer variables (integer random sampling, SBX crossover
and polynomial mutation with rounding repair); every generation is scored in one batched
evaluator call. The reported front is the non-dominated set of *every* pixel evaluated during
the search (a superset of NSGA-II's last population, so never worse), re-scored on the
classifier itself: the scores in ``front.csv`` are what ``onepixel predict`` would say of the
attacked image, and each point's success is judged on those re-scored probabilities (binary
goals: the papers' threshold rule; K-class goals: the predicted class).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onepixel.attack.budget import budget_h, neighbour_means
from onepixel.attack.goals import Goal, as_goal
from onepixel.attack.objective import problem_id_for
from onepixel.errors import OnepixelError
from onepixel.models.base import capabilities_of
from onepixel.pareto.config import ParetoConfig
from onepixel.runs.schema import lowers_score
from onepixel.scoring.evaluators import Evaluator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFront:
    """One image's search result.

    Attributes
    ----------
    name, goal : str
        The image's name and its goal's name (``decrease``, ``increase``, ``untargeted``,
        ``targeted``).
    original_score : float
        The goal's score of the unchanged image (:meth:`Goal.score`).
    pixels : ndarray, (F, 2 + C) int64
        The front's pixels ``(x, y, c_1..c_C)``, by increasing h.
    score, h : ndarray, (F,) float64
        The goal's score of each front pixel's attacked image (re-scored on the classifier: the
        positive class's probability, or the true / target class's), and its visibility h.
    evaluated_score, evaluated_h : ndarray, (E,) float64
        Every distinct pixel the search scored (the evaluator's scores), for the figure.
    seconds : float
    success, strong : ndarray, (F,) bool, or None
        Each front point's (strong) success, judged on its re-scored probabilities. None in
        fronts saved before these were recorded (binary only): :func:`front_flags` derives them.
    predicted : ndarray, (F,) int64, or None
        K-class goals: the class predicted for each front point's attacked image; None for
        binary goals.
    goal_class : int
        K-class goals: the class the goal is about (the true class for ``untargeted``, the
        target for ``targeted``); -1 for binary goals.
    """

    name: str
    goal: str
    original_score: float
    pixels: np.ndarray
    score: np.ndarray
    h: np.ndarray
    evaluated_score: np.ndarray
    evaluated_h: np.ndarray
    seconds: float
    success: np.ndarray | None = None
    strong: np.ndarray | None = None
    predicted: np.ndarray | None = None
    goal_class: int = -1

    def energy(self, scores: np.ndarray | None = None) -> np.ndarray:
        """The goal's energy of ``scores`` (default: the front's): the score for goals that lower
        it (decrease, untargeted), ``1 - score`` for those that raise it."""
        s = self.score if scores is None else np.asarray(scores)
        return s if lowers_score(self.goal) else 1.0 - s


def front_flags(front: ImageFront, config: ParetoConfig) -> tuple[np.ndarray, np.ndarray]:
    """(success, strong) (F,) bool of the front's points: the recorded flags, or, for a binary
    front saved without them, the threshold rule of ``config`` (what they were before)."""
    if front.success is not None and front.strong is not None:
        return np.asarray(front.success, bool), np.asarray(front.strong, bool)
    success, strong = config.judge(front.goal, front.score)
    return np.asarray(success, bool), np.asarray(strong, bool)


def _require_pymoo() -> None:
    try:
        import pymoo  # noqa: F401
    except ImportError:
        raise OnepixelError("onepixel pareto needs pymoo: pip install 'onepixel[pareto]'") from None


def non_dominated(objectives: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``objectives`` (N, M), all minimised (pymoo's sort).

    Of identical rows, the first is kept.
    """
    _require_pymoo()
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    objectives = np.asarray(objectives, dtype=np.float64)
    if len(objectives) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(objectives, axis=0, return_index=True)
    first = np.sort(first)
    front = NonDominatedSorting().do(objectives[first], only_non_dominated_front=True)
    return np.sort(first[np.asarray(front, dtype=np.int64)])


def image_seed(seed: int, name: str) -> int:
    """A 32-bit seed for one image's search, from the run's seed and the image's name."""
    return int(np.random.SeedSequence([seed, problem_id_for(name)]).generate_state(1)[0])


def apply_pixels(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(F, H, W, C) uint8: ``image`` (H, W, C) with each pixel ``(x, y, c_1..c_C)`` of (F, 2 + C)
    set."""
    pixels = np.asarray(pixels, dtype=np.int64)
    out = np.repeat(np.asarray(image)[None], len(pixels), axis=0)
    out[np.arange(len(pixels)), pixels[:, 1], pixels[:, 0]] = pixels[:, 2:].astype(np.uint8)
    return out


def _judge(goal: Goal, probs: np.ndarray, config: ParetoConfig) -> tuple[np.ndarray, np.ndarray]:
    """(success, strong) (F,) bool of re-scored front points: scores (F,) or probabilities (F, K)."""
    if goal.binary:
        # The papers' threshold rule with the run's thresholds, as the budget curve always used.
        success, strong = config.judge(goal.name, probs)
        return np.asarray(success, bool), np.asarray(strong, bool)
    judged = [goal.judge(p) for p in probs]
    return (np.array([s for s, _ in judged], dtype=bool).reshape(-1),
            np.array([t for _, t in judged], dtype=bool).reshape(-1))


def goal_class_of(goal: Goal) -> int:
    """The class a K-class goal is about (the true class, or the target); -1 for binary goals."""
    return int(getattr(goal, "true_class", getattr(goal, "target_class", -1)))


def pareto_front(evaluator: Evaluator, image: np.ndarray, name: str, goal: Goal | str,
                 original_score: float, config: ParetoConfig | None = None,
                 on_generation: Callable[[int], None] | None = None,
                 seed_pixels: np.ndarray | None = None) -> ImageFront:
    """NSGA-II's (energy, h) front of one-pixel attacks on one image.

    Parameters
    ----------
    evaluator : Evaluator
        Scores whole generations in one call each: ``scores_prepared(prepared, [0],
        candidates (1, P, 2 + C))`` on the image prepared once; (1, P) scores for a binary
        model, (1, P, K) class probabilities for a K-class one.
    image : ndarray, (H, W, C) uint8
        C = 3 (RGB) or 1 (greyscale), any H x W.
    name : str
        The image's name (seeds its search).
    goal : Goal or {"decrease", "increase"}
        :class:`~onepixel.attack.goals.Decrease` / ``Increase`` for a binary model,
        ``Untargeted`` / ``Targeted`` for a K-class one.
    original_score : float
        The goal's score of the unchanged image (recorded).
    on_generation : callable, optional
        ``on_generation(evaluations_so_far)`` after each generation.
    seed_pixels : ndarray, (S, 2 + C) int, optional
        Pixels placed in the initial population (the rest is random), e.g. a campaign's attack
        pixel: the front, built from every pixel scored, is then at least as good as each of
        them.

    Returns
    -------
    ImageFront
    """
    _require_pymoo()
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    class SeededSampling(IntegerRandomSampling):
        """Integer random sampling with the first rows replaced by ``seed_pixels``."""

        def _do(self, problem, n_samples, *args, **kwargs):
            x = super()._do(problem, n_samples, *args, **kwargs)
            k = min(len(seeds), n_samples)
            x[:k] = seeds[:k]
            return x

    config = config or ParetoConfig()
    try:
        goal = as_goal(goal)
    except OnepixelError as exc:
        raise OnepixelError(f"goal of {name}: {exc}") from exc
    n_classes = capabilities_of(evaluator.classifier).n_classes
    if goal.binary != (n_classes == 1):
        raise OnepixelError(f"goal {goal.name!r} of {name} does not fit a model with "
                            f"{n_classes} output(s): decrease/increase are for binary models, "
                            "untargeted/targeted for K-class ones")
    if not goal.binary and not 0 <= goal_class_of(goal) < n_classes:
        raise OnepixelError(f"goal {goal.name!r} of {name} names class {goal_class_of(goal)}, but "
                            f"the model has {n_classes} classes")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 1:
        raise OnepixelError(f"pareto searches one pixel of an (H, W, C) image: image {name} has "
                            f"shape {image.shape}")
    height, width, channels = image.shape
    n_var = 2 + channels
    upper = np.array([width - 1, height - 1, *[255] * channels])
    seeds = np.zeros((0, n_var), np.int64)
    if seed_pixels is not None:
        seeds = np.asarray(seed_pixels, dtype=np.int64).reshape(-1, n_var)
        if np.any(seeds < 0) or np.any(seeds > upper):
            raise OnepixelError(f"seed pixels of {name} must lie in the {width}x{height} image "
                                f"with channels in 0..255, got {seeds.tolist()}")
    means = neighbour_means(image[None])[0]  # (H, W, C)
    # Prepared once: the incremental engine's per-image work is not redone every generation.
    prepared = evaluator.prepare(image[None])
    row = np.zeros(1, dtype=np.int64)
    pixels_seen: list[np.ndarray] = []
    scores_seen: list[np.ndarray] = []

    class OnePixelProblem(Problem):
        """Minimise (energy, h) over integer (x, y, c_1..c_C); one evaluator call per generation."""

        def __init__(self) -> None:
            super().__init__(n_var=n_var, n_obj=2, vtype=int, xl=np.zeros(n_var), xu=upper)

        def _evaluate(self, x, out, *args, **kwargs):
            cand = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
            scores = evaluator.scores_prepared(prepared, row, cand[None])[0]  # (P,) or (P, K)
            pixels_seen.append(cand)
            scores_seen.append(scores)
            h = budget_h(cand[:, 2:], means[cand[:, 1], cand[:, 0]])
            out["F"] = np.column_stack([goal.energy(scores), h])

    class Progress(Callback):
        def notify(self, algorithm):
            if on_generation is not None:
                on_generation(algorithm.evaluator.n_eval)

    started = time.perf_counter()
    repair = RoundingRepair()
    sampling = SeededSampling() if len(seeds) else IntegerRandomSampling()
    algorithm = NSGA2(pop_size=config.population, sampling=sampling,
                      crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=repair),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=repair),
                      eliminate_duplicates=True)
    minimize(OnePixelProblem(), algorithm, ("n_gen", config.generations),
             seed=image_seed(config.seed, name), callback=Progress(), verbose=False)
    # Every distinct pixel scored, in the order first scored.
    allpix = np.concatenate(pixels_seen)
    allprobs = np.concatenate(scores_seen)
    _, first = np.unique(allpix, axis=0, return_index=True)
    first = np.sort(first)
    allpix, allprobs = allpix[first], allprobs[first]
    all_h = budget_h(allpix[:, 2:], means[allpix[:, 1], allpix[:, 0]])
    candidates = non_dominated(np.column_stack([goal.energy(allprobs), all_h]))
    # Re-score the front on the classifier itself, then keep what is still non-dominated (the
    # evaluator's engine may differ from it in the last float bits).
    pix = allpix[candidates]
    rescored = np.asarray(evaluator.classifier.scores(apply_pixels(image, pix)), dtype=np.float64)
    h = all_h[candidates]
    keep = non_dominated(np.column_stack([goal.energy(rescored), h]))
    order = keep[np.argsort(h[keep], kind="stable")]
    success, strong = _judge(goal, rescored[order], config)
    log.debug("%s: %d distinct pixels scored, front of %d", name, len(allpix), len(order))
    return ImageFront(name=name, goal=goal.name, original_score=float(original_score),
                      pixels=pix[order], score=np.asarray(goal.score(rescored[order]), np.float64),
                      h=h[order], evaluated_score=np.asarray(goal.score(allprobs), np.float64),
                      evaluated_h=all_h, seconds=time.perf_counter() - started,
                      success=success, strong=strong,
                      predicted=None if goal.binary else rescored[order].argmax(axis=1),
                      goal_class=goal_class_of(goal))
