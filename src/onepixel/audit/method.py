"""``onepixel attack --method scan``: the audit's search run as a campaign's attack method.

:class:`ScanExecutor` is a :class:`~onepixel.attack.batches.BatchExecutor`: the campaign's
driver scores the originals, records skips and forms batches as for DE; this executor attacks
each pending image with the audit's exhaustive coarse scan (:func:`onepixel.audit.search.scan`)
and integer refinement (:class:`~onepixel.audit.search.Refiner`) instead of DE, re-scores the
best end points on the whole network and hands one RUN row per image to the driver.

The row is DE's row with these meanings: ``nfev`` the queries spent (scan + refinement +
re-scoring, at most ``--max-queries``), ``nit`` the refinement rounds that scored anything,
``early_converged`` always False (a DE notion), and ``history.csv`` the best score after the
scan's best pixels were scored (generation 0) and after each refinement round, the last one
being the re-scored ``attacked_score``.

The budget: with ``--max-queries N`` and no ``--scan-step``, the scan takes the finest colour
grid whose ``H x W x colours`` evaluations leave at least :data:`REFINE_RESERVE` queries; the
refinement then climbs within what is left, less one query per start for the final re-scoring.

K-class models: the scan and the refinement push the goal class's probability (``p[true]``
down for untargeted goals, ``p[target]`` up for targeted ones; the campaign's objective), the
end points are re-scored on the whole classifier and the best is chosen and judged by the
row's goal (successful first, by the predicted class, then by energy), as DE's rows are.
Greyscale models scan grey levels (``H x W x levels`` evaluations).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np

from onepixel.attack.batches import BatchAttacker, PendingImage, Progress, StoreResult
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.attack.objective import attack_result
from onepixel.audit.config import AuditConfig
from onepixel.audit.search import (
    Refiner,
    energy,
    goal_class,
    prove_best,
    scan,
    scan_candidates,
)
from onepixel.confmap.result import colour_levels
from onepixel.errors import ConfigError
from onepixel.models.base import ClassProbability
from onepixel.optimize.de import DEResult
from onepixel.runs import schema

log = logging.getLogger(__name__)

#: The scan step without ``--max-queries`` or ``--scan-step``: the audit's (64 colours).
SCAN_STEP = AuditConfig.step
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
                              f"{max_queries:,}; raise max_queries or the step, or leave scan_step "
                              "None to fit the budget", field="AttackConfig.scan_step")
        return scan_step
    if max_queries is None:
        return SCAN_STEP
    for step in range(1, 256):
        if scan_cost(n_pixels, step, channels) + REFINE_RESERVE <= max_queries:
            return step
    need = scan_cost(n_pixels, 255, channels) + REFINE_RESERVE
    coarsest = "8 colours" if channels == 3 else "2 grey levels"
    raise ConfigError(f"AttackConfig.max_queries {max_queries:,} is below the coarsest scan of "
                      f"{n_pixels:,} pixels ({coarsest} each) plus {REFINE_RESERVE} refinement queries: "
                      f"give at least {need:,}", field="AttackConfig.max_queries")


class ScanExecutor:
    """Attacks a campaign's images with the audit's scan + refinement, in this process.

    Parameters
    ----------
    top : int
        Refinement starts from this many best scan pixels (the audit's default).
    rounds : int
        At most this many refinement rounds.
    pixels : tuple of (x, y) or None
        Scan only these pixels (None: every pixel); refinement may step outside them. For
        tests and focused studies; the CLI scans every pixel.

    The budget and the scan step are read from the campaign's
    :class:`~onepixel.attack.config.AttackConfig` (``max_queries``, ``scan_step``).
    """

    method = "scan"

    def __init__(self, top: int = AuditConfig.top, rounds: int = AuditConfig.rounds,
                 pixels: tuple[tuple[int, int], ...] | None = None):
        # Validates top / rounds / pixels with the audit's own messages.
        self.pixels = AuditConfig(top=top, rounds=rounds, pixels=pixels).pixels
        if top < 1:
            raise ConfigError(f"scan attack: top must be >= 1 (refinement needs a start), got {top}")
        self.top = int(top)
        self.rounds = int(rounds)
        self.n_evaluations = 0

    def batch_images(self, n_images: int, on_cpu: bool) -> int:
        # Images are scanned one at a time; small batches keep rows flowing to the RUN.
        return 1

    def describe(self) -> dict:
        return {"kind": "local", "method": self.method, "top": self.top, "rounds": self.rounds,
                "pixels": None if self.pixels is None else [list(p) for p in self.pixels]}

    def check(self, input_shape: tuple[int, ...], attack: AttackConfig) -> int:
        """The scan step for images of ``input_shape`` (H, W, C) under ``attack``'s budget.

        Call it before the RUN is created (the CLI does), so that a budget too small for the
        model's images is refused before a RUN with those settings exists.

        Raises
        ------
        ConfigError
            The budget does not fit (see :func:`choose_scan_step`).
        """
        h, w = input_shape[:2]
        n_pixels = h * w if self.pixels is None else len(self.pixels)
        channels = input_shape[2] if len(input_shape) > 2 else 3
        return choose_scan_step(n_pixels, attack.max_queries, attack.scan_step, channels)

    def run(self, batches: Iterable[list[PendingImage]], attacker: BatchAttacker,
            store_result: StoreResult, progress: Progress | None = None) -> None:
        from onepixel.scoring.policy import evaluator_for

        if attacker.channels not in (1, 3):
            raise ConfigError(f"AttackConfig.method='scan' needs an RGB or greyscale model, this one "
                              f"has {attacker.channels} channels; use method='de'",
                              field="AttackConfig.method")
        attack = attacker.cfg.attack
        classifier = attacker.attack.evaluator.classifier
        # The refinement's moves are scored in one call each: the incremental evaluator where it
        # applies (as the audit), whatever the campaign's DE evaluator is.
        evaluator = evaluator_for(classifier, "auto", updating="deferred")
        for batch in batches:
            for p in batch:
                row = self.attack_image(p, classifier, evaluator, attack, attacker.cfg,
                                        attacker.classes)
                store_result(row)
                if progress is not None:
                    progress(0, self.n_evaluations)

    def attack_image(self, p: PendingImage, classifier, evaluator, attack: AttackConfig,
                     cfg: CampaignConfig, classes: tuple[str, ...] = ()) -> schema.AttackResult:
        """Scan, refine and re-score one pending image; its RUN row.

        ``classes``: a K-class model's class names in output order (empty: binary).
        """
        t0 = time.perf_counter()
        goal = p.plan.goal
        k = goal_class(p.plan.objective) if classes else None
        # A K-class model is searched on the goal class's probability, as DE's energy is.
        searched = classifier if k is None else ClassProbability(classifier, k)
        channels = int(p.image.shape[2])
        step = self.check(p.image.shape, attack)
        cmap = scan(p.image, searched, step, pixels=self.pixels)
        queries = int(cmap.evaluations)
        starts = scan_candidates(cmap, goal, self.top)
        budget = None
        if attack.max_queries is not None:
            # What is left after the scan, less one re-scoring query per start.
            budget = max(attack.max_queries - queries - len(starts), 0)
        refiner = Refiner(evaluator, p.image, goal, cmap, max_evaluations=budget, class_index=k)
        refined = refiner.refine([c.vector for c in starts], self.rounds)
        queries += refiner.evaluations
        # Prove by evaluation on the whole network: the reported score is the classifier's own.
        finalists = list(dict.fromkeys(c.vector for c in refined or starts[:1]))
        # K classes: chosen and judged as DE's rows are, by the predicted class, then the energy.
        best, final = prove_best(classifier, p.image, finalists, goal,
                                 None if k is None else p.plan.objective)
        queries += len(finalists)
        self.n_evaluations += queries
        history = list(refiner.history) or [best.score]
        history[-1] = best.score
        # DE's genome layout: (x, y, r, g, b), or (x, y, v) for a greyscale model.
        x = np.asarray(best.vector[: 2 + channels], dtype=np.float64)
        result = DEResult(problem_id=0, x=x,
                          fun=float(energy(goal, best.score)), nit=len(history) - 1,
                          nfev=queries, converged=False, message=MESSAGE_SCAN,
                          history=np.asarray([energy(goal, s) for s in history]))
        # As DE's rows: the class the model gives the attacked image.
        if k is None:
            attacked_class = (cfg.positive_label if best.score > schema.SUCCESS_THRESHOLD
                              else cfg.negative_label)
        else:
            attacked_class = classes[int(np.argmax(final))]
        log.debug("%s: step %d, %d queries, best %.4g at (%d, %d)", p.name, step, queries,
                  best.score, best.x, best.y)
        return attack_result(p.name, p.item.label, p.plan, p.original, result,
                             np.asarray(history, dtype=np.float64), attack,
                             time.perf_counter() - t0, channels=channels,
                             original_class=p.original_class, attacked_class=attacked_class,
                             final_scores=final)
