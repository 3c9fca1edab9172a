"""The (score, visibility) Pareto front of one-pixel attacks on one image, found by NSGA-II.

The two objectives, both minimised, of a pixel ``(x, y, r, g, b)`` are the attack's energy
towards its goal (the model's score for ``decrease``, ``1 - score`` for ``increase``, as
:mod:`onepixel.attack.objective` defines them) and its visibility h (the chromatic paper's RMSE
in [0, 1] between the colour and the mean of its existing neighbours in the ORIGINAL image, the
colour budget's definition: :func:`onepixel.attack.budget.budget_h`).

The search is pymoo's NSGA-II over integer variables (integer random sampling, SBX crossover
and polynomial mutation with rounding repair); every generation is scored in one batched
evaluator call. The reported front is the non-dominated set of *every* pixel evaluated during
the search (a superset of NSGA-II's last population, so never worse), re-scored on the
classifier itself: the scores in ``front.csv`` are what ``onepixel predict`` would say of the
attacked image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onepixel.attack.budget import budget_h, neighbour_means
from onepixel.attack.objective import problem_id_for
from onepixel.errors import OnepixelError
from onepixel.scoring.evaluators import Evaluator
from onepixel.stealth.config import GOALS, ParetoConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFront:
    """One image's search result.

    Attributes
    ----------
    name, goal : str
        The image's name and ``decrease`` / ``increase``.
    original_score : float
    pixels : ndarray, (F, 5) int64
        The front's pixels ``(x, y, r, g, b)``, by increasing h.
    score, h : ndarray, (F,) float64
        The model's probability of each front pixel's attacked image (re-scored on the
        classifier), and its visibility h.
    evaluated_score, evaluated_h : ndarray, (E,) float64
        Every distinct pixel the search scored (the evaluator's scores), for the figure.
    seconds : float
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

    def energy(self, scores: np.ndarray | None = None) -> np.ndarray:
        """The goal's energy of ``scores`` (default: the front's): score or 1 - score."""
        s = self.score if scores is None else np.asarray(scores)
        return s if self.goal == "decrease" else 1.0 - s


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
    """(F, H, W, C) uint8: ``image`` (H, W, C) with each pixel ``(x, y, r, g, b)`` of (F, 5) set."""
    pixels = np.asarray(pixels, dtype=np.int64)
    out = np.repeat(np.asarray(image)[None], len(pixels), axis=0)
    out[np.arange(len(pixels)), pixels[:, 1], pixels[:, 0]] = pixels[:, 2:].astype(np.uint8)
    return out


def pareto_front(evaluator: Evaluator, image: np.ndarray, name: str, goal: str,
                 original_score: float, config: ParetoConfig | None = None,
                 on_generation: Callable[[int], None] | None = None,
                 seed_pixels: np.ndarray | None = None) -> ImageFront:
    """NSGA-II's (energy, h) front of one-pixel attacks on one image.

    Parameters
    ----------
    evaluator : Evaluator
        Scores whole generations in one call each: ``scores_prepared(prepared, [0],
        candidates (1, P, 5))`` on the image prepared once.
    image : ndarray, (H, W, 3) uint8
    name : str
        The image's name (seeds its search).
    goal : {"decrease", "increase"}
    original_score : float
        The model's score of the unchanged image (recorded).
    on_generation : callable, optional
        ``on_generation(evaluations_so_far)`` after each generation.
    seed_pixels : ndarray, (S, 5) int, optional
        Pixels ``(x, y, r, g, b)`` placed in the initial population (the rest is random), e.g.
        a campaign's attack pixel: the front, built from every pixel scored, is then at least as
        good as each of them.

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
    if goal not in GOALS:
        raise OnepixelError(f"goal must be one of {', '.join(GOALS)}, got {goal!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise OnepixelError(f"pareto searches RGB pixels: image {name} has shape {image.shape}, "
                            "expected (H, W, 3)")
    height, width, _ = image.shape
    seeds = np.zeros((0, 5), np.int64)
    if seed_pixels is not None:
        seeds = np.asarray(seed_pixels, dtype=np.int64).reshape(-1, 5)
        upper = np.array([width - 1, height - 1, 255, 255, 255])
        if np.any(seeds < 0) or np.any(seeds > upper):
            raise OnepixelError(f"seed pixels of {name} must lie in the {width}x{height} image "
                                f"with channels in 0..255, got {seeds.tolist()}")
    means = neighbour_means(image[None])[0]  # (H, W, 3)
    # Prepared once: the incremental engine's per-image work is not redone every generation.
    prepared = evaluator.prepare(image[None])
    row = np.zeros(1, dtype=np.int64)
    pixels_seen: list[np.ndarray] = []
    scores_seen: list[np.ndarray] = []

    class OnePixelProblem(Problem):
        """Minimise (energy, h) over integer (x, y, r, g, b); one evaluator call per generation."""

        def __init__(self) -> None:
            super().__init__(n_var=5, n_obj=2, vtype=int,
                             xl=np.zeros(5), xu=np.array([width - 1, height - 1, 255, 255, 255]))

        def _evaluate(self, x, out, *args, **kwargs):
            cand = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
            scores = evaluator.scores_prepared(prepared, row, cand[None])[0]
            pixels_seen.append(cand)
            scores_seen.append(scores)
            energy = scores if goal == "decrease" else 1.0 - scores
            h = budget_h(cand[:, 2:], means[cand[:, 1], cand[:, 0]])
            out["F"] = np.column_stack([energy, h])

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
    allscore = np.concatenate(scores_seen)
    _, first = np.unique(allpix, axis=0, return_index=True)
    first = np.sort(first)
    allpix, allscore = allpix[first], allscore[first]
    all_h = budget_h(allpix[:, 2:], means[allpix[:, 1], allpix[:, 0]])
    energy = allscore if goal == "decrease" else 1.0 - allscore
    candidates = non_dominated(np.column_stack([energy, all_h]))
    # Re-score the front on the classifier itself, then keep what is still non-dominated (the
    # evaluator's engine may differ from it in the last float bits).
    pix = allpix[candidates]
    rescored = np.asarray(evaluator.classifier.scores(apply_pixels(image, pix)), dtype=np.float64)
    h = all_h[candidates]
    keep = non_dominated(np.column_stack([rescored if goal == "decrease" else 1.0 - rescored, h]))
    order = keep[np.argsort(h[keep], kind="stable")]
    log.debug("%s: %d distinct pixels scored, front of %d", name, len(allpix), len(order))
    return ImageFront(name=name, goal=goal, original_score=float(original_score),
                      pixels=pix[order], score=rescored[order], h=h[order],
                      evaluated_score=allscore, evaluated_h=all_h,
                      seconds=time.perf_counter() - started)
