"""Attacking a batch of images, and where that runs: the executor seam of a campaign.

A campaign's driver (:func:`onepixel.attack.campaign.run_campaign`) scans the dataset, scores
the originals, records skips and forms batches of :class:`PendingImage`; an executor attacks
the batches and hands each image's :class:`~onepixel.runs.schema.AttackResult` back to the
driver, which alone writes the RUN. :class:`LocalExecutor` attacks in this process;
:mod:`onepixel.scaleout` has one for a Ray cluster. Each image's DE stream is seeded by its
name, and its scores do not depend on the other images of its batch, so every executor gives
the same rows for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from onepixel.attack.config import CampaignConfig
from onepixel.attack.methods import Search
from onepixel.attack.objective import AttackPlan, attack_result, problem_id_for
from onepixel.datasets.images import LabeledImage
from onepixel.runs.schema import AttackResult

#: Called with each finished image's row, in the driver's process.
StoreResult = Callable[[AttackResult], None]
#: Called after each DE generation with (images still evolving, evaluations so far).
Progress = Callable[[int, int], None]


@dataclass
class PendingImage:
    """One image waiting for its attack.

    Attributes
    ----------
    item : LabeledImage
    name : str
        The image's name in the RUN (its path below the dataset).
    plan : AttackPlan
    original : float
        The recorded original score (of the class the goal is about).
    original_class : str
    image : ndarray, shape (H, W, C), uint8
    """

    item: LabeledImage
    name: str
    plan: AttackPlan
    original: float
    original_class: str
    image: np.ndarray


class BatchAttacker:
    """Attacks a batch of pending images and reports each row as its attack stops.

    Parameters
    ----------
    attack : Search
        The campaign's search method (:func:`onepixel.attack.methods.make_search`).
    cfg : CampaignConfig
        Labels and attack settings (``cfg.attack``).
    classes : tuple of str
        K-class models: the class names in output order; empty for a binary model.
    """

    def __init__(self, attack: Search, cfg: CampaignConfig, classes: tuple[str, ...]):
        self.attack = attack
        self.cfg = cfg
        self.classes = tuple(classes)
        self.channels = int(attack.evaluator.input_shape[2])

    def batch(self, batch: list[PendingImage], store_result: StoreResult,
              progress: Progress | None = None) -> None:
        """Attack ``batch``; call ``store_result`` with each image's row as its attack stops."""
        t0 = time.perf_counter()
        cfg, attack = self.cfg, self.attack
        images = np.stack([p.image for p in batch])

        def finished(i: int, result, score_history: np.ndarray, final_scores=None) -> None:
            p = batch[i]
            # The batch's wall time so far, shared among its images.
            seconds = (time.perf_counter() - t0) / len(batch)
            final, attacked_class = None, ""
            if self.classes:
                final = final_scores
                if final is None:
                    # The class probabilities of the attacked image (one more query, not in nfev).
                    best = result.x[None, None].astype(np.int64)
                    final = attack.evaluator.scores(images[i : i + 1], best)[0, 0]
                attacked_class = self.classes[int(np.argmax(final))]
            else:
                attacked = float(score_history[-1])
                attacked_class = cfg.positive_label \
                    if attacked > p.plan.objective.success_threshold else cfg.negative_label
            store_result(attack_result(
                p.name, p.item.label, p.plan, p.original, result, score_history, cfg.attack,
                seconds, channels=self.channels, original_class=p.original_class,
                attacked_class=attacked_class, final_scores=final))

        attack.run(images, [p.plan.objective for p in batch],
                   [problem_id_for(p.name) for p in batch], on_finish=finished,
                   on_generation=progress)

    def results(self, batch: list[PendingImage]) -> list[AttackResult]:
        """Attack ``batch``; its rows in the order the attacks stopped."""
        rows: list[AttackResult] = []
        self.batch(batch, rows.append)
        return rows


class BatchExecutor(Protocol):
    """Where a campaign's batches are attacked.

    ``run`` pulls batches from ``batches`` (lazily: the driver scores originals and records
    skips as it goes) and calls ``store_result`` in the calling thread for every image's row,
    exactly once per image of every batch it pulled.
    """

    #: Evaluations done by this executor so far (all its workers).
    n_evaluations: int

    def batch_images(self, n_images: int, on_cpu: bool) -> int:
        """Images per batch when the campaign does not say (``batch_images=None``)."""
        ...

    def run(self, batches: Iterable[list[PendingImage]], attacker: BatchAttacker,
            store_result: StoreResult, progress: Progress | None = None) -> None:
        ...

    def describe(self) -> dict:
        """What config.json records of the executor."""
        ...


class LocalExecutor:
    """Attacks every batch in this process, one after the other, with the driver's model."""

    def __init__(self) -> None:
        self.n_evaluations = 0

    def batch_images(self, n_images: int, on_cpu: bool) -> int:
        from onepixel.scoring.policy import auto_batch_images

        return auto_batch_images(n_images, on_cpu)

    def run(self, batches: Iterable[list[PendingImage]], attacker: BatchAttacker,
            store_result: StoreResult, progress: Progress | None = None) -> None:
        before = attacker.attack.n_evaluations
        try:
            for batch in batches:
                attacker.batch(batch, store_result, progress)
        finally:
            self.n_evaluations += attacker.attack.n_evaluations - before

    def describe(self) -> dict:
        return {"kind": "local"}
