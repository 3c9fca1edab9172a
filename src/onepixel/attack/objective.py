"""The one-pixel attack: objective, directions, the papers' skip rule and success criteria.

A positive image (score >= 0.9) is attacked by minimising its score ("mitosis-to-normal"), a
negative one (score <= 0.1) by minimising ``1 - score`` ("normal-to-mitosis"), as the papers'
scripts did. The convergence test ``std(E) <= atol + tol*|mean(E)|`` runs on these energies,
which is why almost every normal-to-mitosis attack in the papers stopped after its first
generation: ``1 - score`` is close to 1 for the whole initial population.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from onepixel.attack.config import AttackConfig
from onepixel.errors import OnepixelError
from onepixel.optimize.de import BatchDESolver, DEResult
from onepixel.runs import schema
from onepixel.runs.schema import AttackResult, Goal
from onepixel.scoring.evaluators import Evaluator

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class AttackPlan:
    """What to do with one image given its label and original score."""

    goal: Goal
    direction: str
    skip_reason: str  # empty when the image is attacked


def plan_attack(original_score: float, positive: bool, positive_label: str, negative_label: str,
                config: AttackConfig) -> AttackPlan:
    """Direction of the attack and the papers' skip rule for one image."""
    if positive:
        direction = f"{positive_label}-to-{negative_label}"
        reason = (f"positive scored {original_score:.4g} < {config.skip_positive_below}"
                  if original_score < config.skip_positive_below else "")
        return AttackPlan("decrease", direction, reason)
    direction = f"{negative_label}-to-{positive_label}"
    reason = (f"negative scored {original_score:.4g} > {config.skip_negative_above}"
              if original_score > config.skip_negative_above else "")
    return AttackPlan("increase", direction, reason)


def problem_id_for(name: str) -> int:
    """A stable 63-bit id for an image name: seeds its DE stream, whatever batch it is in."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


def judge(goal: Goal, attacked: float, config: AttackConfig) -> tuple[bool, bool]:
    """(success, strong_success) of a final score under ``config``'s thresholds."""
    return schema.judge(goal, attacked, config.success_threshold, config.strong_decrease_below,
                        config.strong_increase_above)


def _to_score(goal_up: np.ndarray, energy: np.ndarray) -> np.ndarray:
    return np.where(goal_up, 1.0 - energy, energy)


class _Memo:
    """Scores already computed, keyed by (batch position, x, y, r, g, b)."""

    def __init__(self) -> None:
        self.table: dict[int, float] = {}
        self.hits = 0

    @staticmethod
    def keys(rows: np.ndarray, pix: np.ndarray) -> np.ndarray:
        # 6+6 bits for coordinates up to 63 would do for 64x64; 12 bits each keeps larger images.
        packed = (pix[..., 0] << 36) | (pix[..., 1] << 24) | (pix[..., 2] << 16) \
            | (pix[..., 3] << 8) | pix[..., 4]
        return (rows[:, None].astype(np.int64) << 48) | packed


class OnePixelAttack:
    """Batched one-pixel attack of several images on one evaluator.

    Parameters
    ----------
    evaluator : Evaluator
    config : AttackConfig
    """

    def __init__(self, evaluator: Evaluator, config: AttackConfig | None = None):
        self.evaluator = evaluator
        self.config = config or AttackConfig()
        h, w = evaluator.input_shape[:2]
        self.bounds = [(0, w - 1), (0, h - 1), (0, 255), (0, 255), (0, 255)]

    def run(self, images: np.ndarray, goals: Sequence[Goal], problem_ids: Sequence[int],
            on_finish: Callable[[int, DEResult, np.ndarray], None] | None = None,
            on_generation: Callable[[int, int], None] | None = None) -> list[DEResult]:
        """Attack ``images`` (B, H, W, 3) uint8, image ``i`` towards ``goals[i]``.

        Parameters
        ----------
        on_finish : callable, optional
            ``on_finish(i, result, score_history)`` as soon as image ``i`` stops; the history
            is in score units (not energies).
        on_generation : callable, optional
            ``on_generation(active_problems, evaluations_so_far)`` after each generation.

        Returns
        -------
        list of DEResult, (B,), energies: ``score`` for decrease, ``1 - score`` for increase.
        """
        goal_up = np.array([g == "increase" for g in goals])
        if len(goal_up) != len(images) or len(problem_ids) != len(images):
            raise OnepixelError("images, goals and problem ids must have the same length")
        torch_eval = self.evaluator.on_device
        memo = _Memo() if self.config.memoize and not torch_eval else None
        objective = self._torch_objective(images, goal_up) if torch_eval else \
            self._numpy_objective(images, goal_up, memo)
        solver = BatchDESolver(
            objective, self.bounds, n_problems=len(images),
            problem_ids=np.asarray(problem_ids, dtype=np.int64), integrality=[True] * 5,
            config=self.config.de, backend="torch" if torch_eval else "numpy",
            device=self.evaluator.device if torch_eval else None)
        solver.initialize()
        self._report(solver, goal_up, on_finish)
        while not solver.done:
            ids, _best = solver.step()
            self._report(solver, goal_up, on_finish)
            if on_generation is not None:
                on_generation(len(ids), self.evaluator.n_evaluations)
        if memo is not None:
            log.debug("attack of %d images: %d memo hits", len(images), memo.hits)
        return solver.results()

    @staticmethod
    def _report(solver: BatchDESolver, goal_up: np.ndarray, on_finish) -> None:
        for b, result in solver.take_finished():
            if on_finish is not None:
                on_finish(b, result, _to_score(goal_up[b], result.history))

    def _numpy_objective(self, images: np.ndarray, goal_up: np.ndarray, memo: _Memo | None):
        score_rows = self._row_scorer(images)

        def objective(rows: np.ndarray, X: np.ndarray) -> np.ndarray:
            pix = X.astype(np.int64)
            scores = score_rows(rows, pix) if memo is None else \
                self._memo_scores(memo, score_rows, rows, pix)
            return np.where(goal_up[rows][:, None], 1.0 - scores, scores)

        return objective

    def _row_scorer(self, images: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``score_rows(rows (R,), pixels (R, P, 5)) -> (R, P)`` on ``images[rows]``.

        Evaluators that keep per-image state (the incremental one) prepare the images once.
        """
        evaluator = self.evaluator
        prepared = evaluator.prepare(images)
        return lambda rows, pix: evaluator.scores_prepared(prepared, rows, pix)

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

    def _torch_objective(self, images: np.ndarray, goal_up: np.ndarray):
        evaluator = self.evaluator
        base = evaluator.to_device(images)
        up = torch.as_tensor(goal_up, device=evaluator.device)

        def objective(rows: np.ndarray, X: torch.Tensor) -> torch.Tensor:
            idx = torch.as_tensor(rows, device=evaluator.device)
            scores = evaluator.scores_tensor(base[idx], X.to(torch.int64))
            return torch.where(up[idx][:, None], 1.0 - scores, scores)

        return objective


def attack_result(image: str, label: str, plan: AttackPlan, original: float, result: DEResult,
                  score_history: np.ndarray, config: AttackConfig, seconds: float) -> AttackResult:
    """Assemble the :class:`AttackResult` of a finished attack."""
    attacked = float(score_history[-1])
    success, strong = judge(plan.goal, attacked, config)
    x, y, r, g, b = (int(v) for v in result.x)
    return AttackResult(
        image=image, label=label, direction=plan.direction, goal=plan.goal, status="attacked",
        skip_reason="", original_score=float(original), attacked_score=attacked,
        x=x, y=y, r=r, g=g, b=b, nit=result.nit, nfev=result.nfev,
        early_converged=result.converged and result.nit == 1, success=success, strong_success=strong,
        seconds=seconds, history=tuple(float(v) for v in score_history))


def skipped_result(image: str, label: str, plan: AttackPlan, original: float) -> AttackResult:
    return AttackResult(image=image, label=label, direction=plan.direction, goal=plan.goal,
                        status="skipped", skip_reason=plan.skip_reason,
                        original_score=float(original))
