"""The one-pixel (and k-pixel) attack: objective, goals, the papers' skip rule and success.

Binary models (one score, the positive class's probability): a positive image (score >= 0.9) is
attacked by minimising its score ("mitosis-to-normal"), a negative one (score <= 0.1) by
minimising ``1 - score`` ("normal-to-mitosis"), as the papers' scripts did. The convergence
test ``std(E) <= atol + tol*|mean(E)|`` runs on these energies, which is why almost every
normal-to-mitosis attack in the papers stopped after its first generation: ``1 - score`` is
close to 1 for the whole initial population.

K-class models: untargeted attacks minimise the true class's probability, targeted ones
``1 - p[target]`` (:mod:`onepixel.attack.goals`); images the model already gets wrong are
skipped, as Su et al. attack only correctly classified images.

A candidate is ``k`` pixels, each ``(x, y)`` and one value per channel (``(x, y, r, g, b)``
for RGB, ``(x, y, v)`` for greyscale), all integers within the image and 0..255. With a colour
budget (``AttackConfig.max_colour_diff``) every candidate is repaired into the budget before it is
scored (:mod:`onepixel.attack.budget`), and the results report the repaired pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from onepixel.attack.budget import neighbour_means, repair_candidates
from onepixel.attack.config import AttackConfig
from onepixel.attack.goals import Decrease, Goal, Increase, Targeted, Untargeted, as_goal
from onepixel.errors import OnepixelError
from onepixel.models.base import capabilities_of
from onepixel.optimize.de import BatchDESolver, DEResult
from onepixel.runs import schema
from onepixel.runs.schema import AttackResult
from onepixel.scoring.evaluators import Evaluator, scores_on_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackPlan:
    """What to do with one image given its label and original scores.

    ``goal`` is the goal's name (attacks.csv's ``goal``); ``objective`` the :class:`Goal` object;
    ``skip_reason`` is empty when the image is attacked.
    """

    goal: str
    direction: str
    skip_reason: str
    objective: Goal = field(default_factory=Decrease)


def plan_attack(original_score: float, positive: bool, positive_label: str, negative_label: str,
                config: AttackConfig) -> AttackPlan:
    """Direction of a binary model's attack and the papers' skip rule for one image."""
    thresholds = dict(success_threshold=config.success_threshold,
                      strong_decrease_below=config.strong_decrease_below,
                      strong_increase_above=config.strong_increase_above)
    if positive:
        direction = f"{positive_label}-to-{negative_label}"
        reason = (f"positive scored {original_score:.4g} < {config.skip_positive_below}"
                  if original_score < config.skip_positive_below else "")
        return AttackPlan("decrease", direction, reason, Decrease(**thresholds))
    direction = f"{negative_label}-to-{positive_label}"
    reason = (f"negative scored {original_score:.4g} > {config.skip_negative_above}"
              if original_score > config.skip_negative_above else "")
    return AttackPlan("increase", direction, reason, Increase(**thresholds))


def plan_multiclass(scores: np.ndarray, true_class: int, classes: Sequence[str],
                    target: int | None, config: AttackConfig) -> AttackPlan:
    """Goal and skip rule of a K-class model's attack on one image.

    Parameters
    ----------
    scores : ndarray, (K,)
        Class probabilities of the original image.
    true_class : int
        Its label's index in the model's output order.
    classes : sequence of str, (K,)
        Class names in output order.
    target : int or None
        The target class of a targeted attack; None for untargeted.

    Images the model already gets wrong are skipped (Su et al. attack only correctly classified
    images), and so are images of the target class itself.
    """
    thresholds = dict(strong_decrease_below=config.strong_decrease_below,
                      strong_increase_above=config.strong_increase_above)
    predicted = int(np.argmax(scores))
    true_name = classes[true_class]
    if target is None:
        plan_goal: Goal = Untargeted(true_class=true_class, **thresholds)
        direction = f"{true_name}-to-other"
    else:
        plan_goal = Targeted(target_class=target, **thresholds)
        direction = f"{true_name}-to-{classes[target]}"
    reason = ""
    if predicted != true_class:
        reason = (f"misclassified: predicted {classes[predicted]} ({scores[predicted]:.4g}) for a "
                  f"{true_name} image")
    elif target is not None and target == true_class:
        reason = f"already of the target class {true_name}"
    return AttackPlan(plan_goal.name, direction, reason, plan_goal)


def problem_id_for(name: str) -> int:
    """A stable 63-bit id for an image name: seeds its DE stream, whatever batch it is in."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


def goal_columns(goals: Sequence[Goal], n_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Per image, whether the energy is ``1 - score`` (B,) and, for K-class goals, the class
    column the score reads (B,) (None for binary goals): what batched objectives need."""
    goal_up = np.array([g.maximise for g in goals], dtype=bool)
    if all(g.class_index is None for g in goals):
        return goal_up, None
    if any(g.class_index is None for g in goals):
        raise OnepixelError("one attack mixes binary and multi-class goals; attack them apart")
    column = np.array([g.class_index for g in goals], dtype=np.int64)
    if column.max(initial=0) >= n_classes:
        raise OnepixelError(f"a goal names class {int(column.max())}, but the model has "
                            f"{n_classes} classes")
    return goal_up, column


def judge(goal: str, attacked: float, config: AttackConfig) -> tuple[bool, bool]:
    """(success, strong_success) of a binary model's final score under ``config``'s thresholds."""
    return schema.judge(goal, attacked, config.success_threshold, config.strong_decrease_below,
                        config.strong_increase_above)


def pixel_bounds(input_shape: tuple[int, int, int], pixels: int) -> list[tuple[int, int]]:
    """DE bounds of a ``pixels``-pixel candidate on images of ``input_shape`` (H, W, C)."""
    h, w, c = input_shape
    return [(0, w - 1), (0, h - 1), *[(0, 255)] * c] * pixels


class _Memo:
    """Scores already computed, keyed by (batch position, candidate)."""

    def __init__(self) -> None:
        self.table: dict = {}
        self.hits = 0

    @staticmethod
    def keys(rows: np.ndarray, pix: np.ndarray) -> np.ndarray:
        if pix.shape[-1] == 5 and pix[..., :2].max(initial=0) < 4096:
            # One RGB pixel: 12+12 bits of coordinates and 3x8 of colour, plus the row.
            packed = (pix[..., 0] << 36) | (pix[..., 1] << 24) | (pix[..., 2] << 16) \
                | (pix[..., 3] << 8) | pix[..., 4]
            return (rows[:, None].astype(np.int64) << 48) | packed
        # Any other candidate: its row and integers as bytes.
        full = np.concatenate([np.broadcast_to(rows[:, None, None], (*pix.shape[:2], 1)), pix],
                              axis=2).astype(np.int64)
        flat = np.ascontiguousarray(full).reshape(-1, full.shape[2])
        return np.array([row.tobytes() for row in flat], dtype=object).reshape(pix.shape[:2])


class OnePixelAttack:
    """Batched one-pixel (``config.pixels``-pixel) attack of several images on one evaluator.

    Parameters
    ----------
    evaluator : Evaluator
    config : AttackConfig
    """

    name = "de"

    def __init__(self, evaluator: Evaluator, config: AttackConfig | None = None):
        self.evaluator = evaluator
        self.config = config or AttackConfig()
        self.bounds = pixel_bounds(tuple(evaluator.input_shape), self.config.pixels)

    @property
    def n_evaluations(self) -> int:
        """Queries spent so far (the evaluator's count)."""
        return self.evaluator.n_evaluations

    def run(self, images: np.ndarray, goals: Sequence[Goal | str], problem_ids: Sequence[int],
            on_finish: Callable[[int, DEResult, np.ndarray], None] | None = None,
            on_generation: Callable[[int, int], None] | None = None) -> list[DEResult]:
        """Attack ``images`` (B, H, W, C) uint8, image ``i`` towards ``goals[i]``.

        Parameters
        ----------
        goals : sequence of Goal or str, (B,)
            ``"decrease"`` / ``"increase"`` for a binary model, :class:`Untargeted` /
            :class:`Targeted` for a K-class one.
        on_finish : callable, optional
            ``on_finish(i, result, score_history)`` as soon as image ``i`` stops; the history
            is in score units (the probability the goal is about), not energies.
        on_generation : callable, optional
            ``on_generation(active_problems, evaluations_so_far)`` after each generation.

        Returns
        -------
        list of DEResult, (B,), energies (:meth:`Goal.energy`): ``score`` for decrease,
        ``1 - score`` for increase, ``p[true]`` untargeted, ``1 - p[target]`` targeted.
        """
        goal_objs = [as_goal(g) for g in goals]
        if len(goal_objs) != len(images) or len(problem_ids) != len(images):
            raise OnepixelError("images, goals and problem ids must have the same length")
        multi = [not g.binary for g in goal_objs]
        n_classes = capabilities_of(self.evaluator.classifier).n_classes
        if any(multi) and not all(multi):
            raise OnepixelError("one attack mixes binary and multi-class goals; attack them apart")
        goal_up, column = goal_columns(goal_objs, n_classes)
        torch_eval = scores_on_device(self.evaluator)
        memo = _Memo() if self.config.memoize and not torch_eval else None
        repair = self._repairer(images)
        objective = self._torch_objective(images, goal_up, column, repair) if torch_eval else \
            self._numpy_objective(images, goal_up, column, memo, repair)
        if repair is not None:
            # Report the feasible pixels that were scored, not DE's genome.
            on_finish = self._feasible_finish(repair, on_finish)
        solver = BatchDESolver(
            objective, self.bounds, n_problems=len(images),
            problem_ids=np.asarray(problem_ids, dtype=np.int64), integrality=[True] * len(self.bounds),
            config=self.config.de, backend="torch" if torch_eval else "numpy",
            device=self.evaluator.device if torch_eval else None)
        solver.initialize()
        self._report(solver, goal_up, on_finish)
        stop = self._stop_on_success(images, goal_objs, problem_ids, repair) \
            if self.config.stop_on_success else None
        while not solver.done:
            ids, _best = solver.step(stop=stop)
            self._report(solver, goal_up, on_finish)
            if on_generation is not None:
                on_generation(len(ids), self.evaluator.n_evaluations)
        if memo is not None:
            log.debug("attack of %d images: %d memo hits", len(images), memo.hits)
        results = solver.results()
        if repair is not None:
            results = [_with_x(r, repair(np.array([b]), r.x[None, None])[0, 0])
                       for b, r in enumerate(results)]
        return results

    def _repairer(self, images: np.ndarray) -> Callable | None:
        """``repair(rows, candidates (R, P, D)) -> (R, P, D)`` int64 within the colour budget (numpy
        or torch, as given), or None without a budget."""
        budget = self.config.max_colour_diff
        if budget is None:
            return None
        means = neighbour_means(images)
        dev_means = torch.from_numpy(means).to(self.evaluator.device) \
            if scores_on_device(self.evaluator) else None

        def repair(rows, candidates):
            if isinstance(candidates, torch.Tensor):
                idx = torch.as_tensor(rows, device=dev_means.device, dtype=torch.int64)
                return repair_candidates(idx, candidates, dev_means, budget)
            return repair_candidates(np.asarray(rows, dtype=np.int64), candidates, means, budget)

        return repair

    @staticmethod
    def _feasible_finish(repair: Callable, on_finish):
        if on_finish is None:
            return None

        def finish(b: int, result: DEResult, history: np.ndarray) -> None:
            on_finish(b, _with_x(result, repair(np.array([b]), result.x[None, None])[0, 0]), history)

        return finish

    def _stop_on_success(self, images: np.ndarray, goals: list[Goal], problem_ids: Sequence[int],
                         repair: Callable | None = None):
        """The solver's stop callback for ``stop_on_success``: a problem stops once its best
        candidate meets its goal. Binary goals are judged from the energy; K-class goals need
        the predicted class, so each active image's best candidate is scored once per
        generation (those queries count in the evaluator, not in ``nfev``)."""
        position = {int(pid): b for b, pid in enumerate(problem_ids)}
        if len(position) != len(problem_ids):
            raise OnepixelError("problem ids must be distinct to stop on success")

        def stop(ids: np.ndarray, best_x: np.ndarray, best_fun: np.ndarray) -> np.ndarray:
            rows = np.array([position[int(i)] for i in ids], dtype=np.int64)
            out = np.zeros(len(ids), dtype=bool)
            for k, b in enumerate(rows):
                goal = goals[b]
                if goal.binary:
                    out[k] = goal.judge(goal.score_of_energy(float(best_fun[k])))[0]
            multi = np.flatnonzero([not goals[b].binary for b in rows])
            if multi.size:
                cand = best_x[multi][:, None, :].astype(np.int64)
                if repair is not None:
                    cand = repair(rows[multi], cand)
                probs = self.evaluator.scores(images[rows[multi]], cand)[:, 0]
                for j, k in enumerate(multi):
                    out[k] = goals[rows[k]].judge(probs[j])[0]
            return out

        return stop

    @staticmethod
    def _report(solver: BatchDESolver, goal_up: np.ndarray, on_finish) -> None:
        for b, result in solver.take_finished():
            if on_finish is not None:
                history = 1.0 - result.history if goal_up[b] else result.history
                on_finish(b, result, history)

    def _numpy_objective(self, images: np.ndarray, goal_up: np.ndarray, column: np.ndarray | None,
                         memo: _Memo | None, repair: Callable | None = None):
        score_rows = self._row_scorer(images, column)

        def objective(rows: np.ndarray, X: np.ndarray) -> np.ndarray:
            pix = X.astype(np.int64)
            if repair is not None:
                pix = repair(rows, pix)
            scores = score_rows(rows, pix) if memo is None else \
                self._memo_scores(memo, score_rows, rows, pix)
            return np.where(goal_up[rows][:, None], 1.0 - scores, scores)

        return objective

    def _row_scorer(self, images: np.ndarray, column: np.ndarray | None
                    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``score_rows(rows (R,), candidates (R, P, D)) -> (R, P)`` on ``images[rows]``: the
        probability each image's goal is about. Evaluators prepare the images once."""
        evaluator = self.evaluator
        prepared = evaluator.prepare(images)
        if column is None:
            return lambda rows, pix: evaluator.scores_prepared(prepared, rows, pix)

        def pick(rows, pix):
            probs = evaluator.scores_prepared(prepared, rows, pix)  # (R, P, K)
            return np.take_along_axis(probs, column[rows][:, None, None], axis=2)[..., 0]

        return pick

    def _memo_scores(self, memo: _Memo, score_rows, rows, pix) -> np.ndarray:
        keys = memo.keys(rows, pix)
        flat = keys.ravel()
        scores = np.array([memo.table.get(k, np.nan) for k in flat.tolist()])
        missing = np.flatnonzero(np.isnan(scores))
        memo.hits += flat.size - missing.size
        if missing.size:
            # Unique misses only: the same new pixel proposed twice is scored once.
            uniq, first, inverse = np.unique(flat[missing], return_index=True, return_inverse=True)
            src = missing[first]
            k_idx, p_idx = np.divmod(src, pix.shape[1])
            new = score_rows(rows[k_idx], pix[k_idx, p_idx][:, None, :])[:, 0]
            scores[missing] = new[inverse]
            memo.table.update(zip(uniq.tolist(), new.tolist(), strict=True))
        return scores.reshape(keys.shape)

    def _torch_objective(self, images: np.ndarray, goal_up: np.ndarray, column: np.ndarray | None,
                         repair: Callable | None = None):
        evaluator = self.evaluator
        base = evaluator.to_device(images)
        up = torch.as_tensor(goal_up, device=evaluator.device)
        col = None if column is None else torch.as_tensor(column, device=evaluator.device)

        def objective(rows: np.ndarray, X: torch.Tensor) -> torch.Tensor:
            idx = torch.as_tensor(rows, device=evaluator.device)
            pix = X.to(torch.int64) if repair is None else repair(rows, X)
            scores = evaluator.scores_tensor(base[idx], pix)
            if col is not None:
                which = col[idx][:, None, None].expand(-1, scores.shape[1], 1)
                scores = torch.gather(scores, 2, which)[..., 0]
            return torch.where(up[idx][:, None], 1.0 - scores, scores)

        return objective


def _with_x(result: DEResult, x: np.ndarray) -> DEResult:
    """``result`` with its best parameters replaced by ``x`` (D,) (the repaired pixel)."""
    new = np.asarray(x, dtype=np.float64).copy()
    new.setflags(write=False)
    return dataclasses.replace(result, x=new)


def pixels_text(x: np.ndarray, channels: int) -> str:
    """A candidate as attacks.csv's ``pixels``: ``x,y,r,g,b`` groups joined by ``;`` (greyscale
    values written as ``r = g = b``)."""
    width = 2 + channels
    groups = []
    for g in range(0, len(x), width):
        px = [int(v) for v in x[g:g + width]]
        colour = px[2:] * 3 if channels == 1 else px[2:]
        groups.append(",".join(str(v) for v in (px[0], px[1], *colour)))
    return ";".join(groups)


def pixels_vector(text: str, channels: int) -> np.ndarray:
    """attacks.csv's ``pixels`` back to a candidate (k * (2 + channels),) int64 (the inverse of
    :func:`pixels_text`)."""
    groups = [[int(v) for v in g.split(",")] for g in text.split(";") if g]
    return np.asarray([v for g in groups for v in g[: 2 + channels]], dtype=np.int64)


def attack_result(image: str, label: str, plan: AttackPlan, original: float, result: DEResult,
                  score_history: np.ndarray, config: AttackConfig, seconds: float,
                  channels: int = 3, original_class: str = "", attacked_class: str = "",
                  final_scores: np.ndarray | None = None) -> AttackResult:
    """Assemble the :class:`AttackResult` of a finished attack.

    ``final_scores`` (the model's scores of the attacked image, (K,) for a K-class model) judge
    a multi-class goal; a binary goal is judged from the final score by the thresholds.
    """
    attacked = float(score_history[-1])
    if plan.objective.binary:
        success, strong = plan.objective.judge(attacked)
    else:
        # From the attacked image's scores: 1 - (1 - p) would lose a tiny p to rounding.
        attacked = float(plan.objective.score(np.asarray(final_scores)))
        success, strong = plan.objective.judge(final_scores)
    first = [int(v) for v in result.x[:2 + channels]]
    x, y = first[:2]
    r, g, b = (first[2],) * 3 if channels == 1 else first[2:5]
    return AttackResult(
        image=image, label=label, direction=plan.direction, goal=plan.goal, status="attacked",
        skip_reason="", original_score=float(original), attacked_score=attacked,
        x=x, y=y, r=r, g=g, b=b, nit=result.nit, nfev=result.nfev,
        early_converged=result.converged and result.nit == 1, success=success, strong_success=strong,
        seconds=seconds, original_class=original_class, attacked_class=attacked_class,
        pixels=pixels_text(result.x, channels), history=tuple(float(v) for v in score_history))


def skipped_result(image: str, label: str, plan: AttackPlan, original: float,
                   original_class: str = "") -> AttackResult:
    return AttackResult(image=image, label=label, direction=plan.direction, goal=plan.goal,
                        status="skipped", skip_reason=plan.skip_reason,
                        original_score=float(original), original_class=original_class)
