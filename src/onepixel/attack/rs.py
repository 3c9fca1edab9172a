"""``AttackConfig(method="rs")``: the query-efficient random search as a campaign's search.

:class:`RandomSearchAttack` runs :class:`~onepixel.optimize.rs.BatchRandomSearch` on an
evaluator: every step scores ``RSConfig.candidates`` candidates for every live image in one
call, the goal (:class:`~onepixel.attack.goals.Goal`) turns the scores into energies and
success, and each image stops when its budget (``AttackConfig.max_queries``, default
:data:`DEFAULT_MAX_QUERIES`) is spent or, with ``stop_on_success`` (always with
``labels_only``), when its goal is met. ``nfev`` counts every query.

The campaign prior (:class:`~onepixel.optimize.rs.CampaignPrior`) is shared by every batch of
the search (and so by every image this process attacks); a campaign seeds it with the
successful rows it resumes from.

``labels_only``: the search sees only the predicted class (success or not), samples the same
proposal and stops at the first flip. Its history is ``1`` until the flip, ``0`` after (in the
goal's energy units: 1 - success); the last entry, and the row's score, is the model's score of
the pixel found, one query more (not in ``nfev``), as K-class rows read the final scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from onepixel.attack.budget import neighbour_means, repair_candidates
from onepixel.attack.goals import Goal, as_goal
from onepixel.attack.objective import goal_columns
from onepixel.errors import OnepixelError
from onepixel.models.base import capabilities_of
from onepixel.optimize.de import DEResult
from onepixel.optimize.rs import BatchRandomSearch, CampaignPrior
from onepixel.scoring.evaluators import Evaluator

log = logging.getLogger(__name__)

#: Queries per image when ``AttackConfig.max_queries`` is None.
DEFAULT_MAX_QUERIES = 10_000


class RandomSearchAttack:
    """Batched random-search attack of several images on one evaluator.

    Parameters
    ----------
    evaluator : Evaluator
    config : AttackConfig
        ``method="rs"``; ``rs`` (:class:`~onepixel.optimize.rs.RSConfig`), ``pixels``,
        ``max_queries``, ``stop_on_success``, ``labels_only``, ``max_colour_diff``.
    """

    name = "rs"

    def __init__(self, evaluator: Evaluator, config):
        self.evaluator = evaluator
        self.config = config
        shape = tuple(evaluator.input_shape)
        self.prior = CampaignPrior(shape, config.rs.prior_weight) if config.rs.prior else None

    @property
    def max_queries(self) -> int:
        return self.config.max_queries or DEFAULT_MAX_QUERIES

    @property
    def n_evaluations(self) -> int:
        return self.evaluator.n_evaluations

    def run(self, images: np.ndarray, goals: Sequence[Goal | str], problem_ids: Sequence[int],
            on_finish: Callable | None = None,
            on_generation: Callable[[int, int], None] | None = None) -> list[DEResult]:
        """Attack ``images`` (B, H, W, C) uint8, image ``i`` towards ``goals[i]``.

        Same contract as :meth:`onepixel.attack.objective.OnePixelAttack.run`; ``on_finish``
        gets ``(i, result, score_history, final_scores)``, ``final_scores`` the model's scores
        of the best candidate ((K,) for a K-class model, a float for a binary one).
        """
        goal_objs = [as_goal(g) for g in goals]
        if len(goal_objs) != len(images) or len(problem_ids) != len(images):
            raise OnepixelError("images, goals and problem ids must have the same length")
        images = np.asarray(images)
        n_classes = capabilities_of(self.evaluator.classifier).n_classes
        goal_up, column = goal_columns(goal_objs, n_classes)
        prepared = self.evaluator.prepare(images)
        repair = self._repairer(images)
        labels_only = self.config.labels_only

        def objective(rows: np.ndarray, cand: np.ndarray):
            pix = cand if repair is None else repair(rows, cand)
            scores = np.asarray(self.evaluator.scores_prepared(prepared, rows, pix))
            ok = np.stack([goal_objs[b].success(scores[j]) for j, b in enumerate(rows)])
            if labels_only:
                # Only the predicted class is seen: the energy is 1 - success.
                return 1.0 - ok.astype(np.float64), ok, pix
            if column is not None:
                scores = np.take_along_axis(scores, column[rows][:, None, None], axis=2)[..., 0]
            energy = np.where(goal_up[rows][:, None], 1.0 - scores, scores)
            return energy, ok, pix

        search = BatchRandomSearch(objective, tuple(images.shape[1:]), self.config.pixels,
                                   np.asarray(problem_ids, dtype=np.int64), self.max_queries,
                                   self.config.rs, self.config.stop_on_success, labels_only,
                                   self.prior)
        results: list[DEResult | None] = [None] * len(images)

        def report() -> None:
            for b, result in search.take_finished():
                final = self.evaluator.scores(images[b : b + 1],
                                              result.x[None, None].astype(np.int64))[0, 0]
                history = np.asarray(result.history, dtype=np.float64)
                if labels_only:
                    # The last entry: the model's own energy of the pixel found.
                    col = final if column is None else final[column[b]]
                    history = history.copy()
                    history[-1] = 1.0 - col if goal_up[b] else col
                    result = _with_history(result, history)
                scores = 1.0 - history if goal_up[b] else history
                results[b] = result
                if on_finish is not None:
                    on_finish(b, result, scores, final)

        while not search.done:
            search.step()
            report()
            if on_generation is not None:
                on_generation(int(search.active.sum()), self.evaluator.n_evaluations)
        log.debug("rs: %d images, %d queries", len(images), int(search.queries.sum()))
        return results

    def _repairer(self, images: np.ndarray) -> Callable | None:
        budget = self.config.max_colour_diff
        if budget is None:
            return None
        means = neighbour_means(images)
        return lambda rows, cand: repair_candidates(np.asarray(rows, dtype=np.int64), cand,
                                                    means, budget)


def _with_history(result: DEResult, history: np.ndarray) -> DEResult:
    import dataclasses

    history.setflags(write=False)
    return dataclasses.replace(result, history=history, fun=float(history[-1]))
