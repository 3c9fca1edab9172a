"""The search-method seam: what a campaign, every executor and ``onepixel evaluate`` call.

A search method (``AttackConfig.method``) is a :class:`Search`: it attacks a batch of images,
each towards its :class:`~onepixel.attack.goals.Goal`, and reports each image's result as its
attack stops. Three implement it:

- ``de``: :class:`~onepixel.attack.objective.OnePixelAttack`, the papers' differential evolution;
- ``scan``: :class:`~onepixel.attack.scan.ScanSearch`, the audit's exhaustive coarse scan and
  integer refinement (one pixel);
- ``rs``: :class:`~onepixel.attack.rs.RandomSearchAttack`, query-efficient random search with
  the campaign prior.

Executors (:mod:`onepixel.attack.batches`, :mod:`onepixel.scaleout`) only decide where batches
run; they build the search with :func:`make_search` from the campaign's settings, so every
method runs on every executor. Searches only call goals (energy, success); they never look
inside one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from onepixel.attack.config import AttackConfig
from onepixel.attack.goals import Goal
from onepixel.errors import ConfigError
from onepixel.models.base import Classifier
from onepixel.optimize.de import DEResult
from onepixel.scoring.evaluators import Evaluator

#: ``on_finish(i, result, score_history, final_scores=None)``: image ``i`` stopped; the history
#: in score units; ``final_scores`` the model's scores of the result's candidate when the
#: search has them ((K,) for K-class models), else None.
OnFinish = Callable[..., None]


class Search(Protocol):
    """A search method on one evaluator.

    Attributes
    ----------
    name : str
        ``AttackConfig.method``'s value.
    evaluator : Evaluator
        What it scores candidates with (rows read ``input_shape`` and score final candidates).
    n_evaluations : int
        Queries spent so far, all of them.
    """

    name: str
    evaluator: Evaluator

    @property
    def n_evaluations(self) -> int: ...

    def run(self, images: np.ndarray, goals: Sequence[Goal], problem_ids: Sequence[int],
            on_finish: OnFinish | None = None,
            on_generation: Callable[[int, int], None] | None = None) -> list[DEResult]:
        """Attack ``images`` (B, H, W, C) uint8, image ``i`` towards ``goals[i]``; results (B,)
        with ``x`` the best candidate, ``nfev`` the queries, ``history`` energies."""
        ...


def make_search(evaluator: Evaluator, config: AttackConfig,
                classifier: Classifier | None = None) -> Search:
    """The :class:`Search` of ``config.method`` on ``evaluator``.

    ``classifier``: what the scan maps (default ``evaluator.classifier``; load it with
    :func:`~onepixel.scoring.policy.load_confmap_classifier` for the exact fast path).
    """
    if config.method == "de":
        from onepixel.attack.objective import OnePixelAttack

        return OnePixelAttack(evaluator, config)
    if config.method == "rs":
        from onepixel.attack.rs import RandomSearchAttack

        return RandomSearchAttack(evaluator, config)
    if config.method == "scan":
        from onepixel.attack.scan import ScanSearch

        return ScanSearch(classifier if classifier is not None else evaluator.classifier, config)
    raise ConfigError(f"AttackConfig.method {config.method!r} has no search")
