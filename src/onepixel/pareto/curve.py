"""The budget curve: how visible must a pixel be to fool the model?

From the fronts: an image is flipped within a colour budget H when its front has a successful
point with ``h <= H``; strongly flipped when the point is also strongly successful. The flags are
the front's own (:attr:`ImageFront.success`, judged on each point's re-scored probabilities):
for binary goals the success rule (strictly past 0.5 towards the goal; strong: below 0.05 /
above 0.95), for K-class goals the predicted class (another class than the true one, or the
target; strong: ``p[true] < 0.05`` / ``p[target] > 0.95``). The lowest h of a successful front
point is the lowest h at which the search flipped the image, and the share of images flipped
within H can only grow with H. For binary goals success is a threshold on the front's score, so
the front holds the best energy found at each h and its lowest successful h is where it crosses
0.5. K-class success is an argmax, not a threshold: for an untargeted goal the front is on
``p[true]`` (targeted: ``p[target]``), and a front point further towards the goal may fail (the
mass leaving the true class spread over several classes) while one less far succeeds, and a
pixel dropped as dominated may have succeeded where the point that dominates it does not. The
curve counts the front points' own flags, so for K-class goals it is a lower bound of what the
search scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onepixel.pareto.config import CURVE_COLUMNS, ParetoConfig
from onepixel.pareto.pareto import ImageFront, front_flags

#: The budgets H of the curve: 0.05, 0.10, ..., 1.00.
BUDGET_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 21))

__all__ = ["BUDGET_GRID", "CURVE_COLUMNS", "BudgetCurve", "budget_curve", "lowest_flip_h"]


@dataclass(frozen=True)
class BudgetCurve:
    """Success against the colour budget.

    Attributes
    ----------
    budgets : ndarray, (K,) float64
    success, strong : ndarray, (K,) int64
        Images flipped (strongly flipped) by a front point with h <= budget.
    n_images : int
    lowest_h, lowest_h_strong : dict of str to float or None
        Per image, the lowest h of a (strongly) successful front point; None when none succeeds.
    """

    budgets: np.ndarray
    success: np.ndarray
    strong: np.ndarray
    n_images: int
    lowest_h: dict
    lowest_h_strong: dict

    def rows(self) -> list[tuple]:
        """``budget_curve.csv`` rows (:data:`CURVE_COLUMNS`)."""
        n = max(self.n_images, 1)
        return [(f"{b:.2f}", self.n_images, int(s), f"{s / n:.6f}", int(t), f"{t / n:.6f}")
                for b, s, t in zip(self.budgets, self.success, self.strong, strict=True)]


def lowest_flip_h(front: ImageFront, config: ParetoConfig) -> tuple[float | None, float | None]:
    """The lowest h of a successful and of a strongly successful front point (None: none)."""
    success, strong = front_flags(front, config)
    low = float(front.h[success].min()) if success.any() else None
    low_strong = float(front.h[strong].min()) if strong.any() else None
    return low, low_strong


def budget_curve(fronts: Sequence[ImageFront], config: ParetoConfig | None = None,
                 budgets: Sequence[float] = BUDGET_GRID) -> BudgetCurve:
    """Success and strong success within each budget H, over the images of ``fronts``."""
    config = config or ParetoConfig()
    budgets = np.asarray(budgets, dtype=np.float64)
    lowest, lowest_strong = {}, {}
    for f in fronts:
        lowest[f.name], lowest_strong[f.name] = lowest_flip_h(f, config)

    def within(values: dict) -> np.ndarray:
        h = np.array([np.inf if v is None else v for v in values.values()], dtype=np.float64)
        return (h[None, :] <= budgets[:, None]).sum(axis=1).astype(np.int64)

    return BudgetCurve(budgets, within(lowest), within(lowest_strong), len(fronts), lowest,
                       lowest_strong)
