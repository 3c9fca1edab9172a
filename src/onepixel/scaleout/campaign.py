"""Campaigns on Ray: actors keep the model loaded and attack the batches the driver sends.

The driver (:func:`onepixel.attack.campaign.run_campaign`) scans the dataset, scores originals,
records skips and forms batches exactly as a local run; :class:`RayExecutor` sends each batch to
an idle actor and hands its rows back to the driver, which alone writes the RUN as batches
finish. Each image's DE stream is seeded by its name and its scores do not depend on the rest of
its batch, so the rows equal a local run's whatever the worker count or completion order.

Every search method runs here (:func:`onepixel.attack.methods.make_search`): DE and ``rs`` on
the attack evaluator the worker picks as the driver does; the scan (``method="scan"``) on the
model loaded for the exact confidence-map engine (its fast path), with the driver's
:class:`~onepixel.audit.method.ScanOptions` (``RayExecutor(scan=...)``), one image per batch.

Faults: an actor that dies mid-batch is restarted by Ray and the batch re-run on it
(``max_restarts`` / ``max_task_retries``); a driver killed mid-campaign resumes with the same
command, as a local campaign does: rows are stored once, by the driver, and a resumed driver
attacks only the images without a row.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import replace

from onepixel.attack.batches import BatchAttacker, PendingImage, Progress, StoreResult
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.attack.methods import Search, make_search
from onepixel.audit.method import ScanOptions
from onepixel.defences.wrapper import defence_of
from onepixel.errors import ScaleOutError
from onepixel.models.base import capabilities_of
from onepixel.scaleout.config import ExecutorConfig
from onepixel.scaleout.runtime import (
    ModelPayload,
    actor_class,
    connect,
    release,
    require_ray,
    worker_count,
)
from onepixel.scoring.policy import (
    auto_batch_images,
    call_shape_for,
    load_attack_evaluator,
    load_confmap_classifier,
)

log = logging.getLogger(__name__)


class CampaignWorker:
    """A Ray actor's state: the model, loaded once on the actor's device, and the attack.

    Parameters
    ----------
    payload : ModelPayload
    cfg : CampaignConfig
        The campaign's settings (model options, attack, labels).
    classes : tuple of str
        The class names of a K-class model; empty for a binary one.
    batch : int
        Images per batch (sizes the evaluator as on the driver).
    threads : int
        CPU threads for the model.
    defence : str, optional
        The driver's ``--defence``: the workers query the same defended pipeline.
    scan : ScanOptions, optional
        The scan's options (``method="scan"`` only; default :class:`ScanOptions`).
    """

    def __init__(self, payload: ModelPayload, cfg: CampaignConfig, classes: tuple[str, ...],
                 batch: int, threads: int, defence: str | None = None,
                 scan: ScanOptions | None = None):
        import torch

        torch.set_num_threads(threads)
        with payload.materialised(replace(cfg.model_options, threads=threads)) as (spec, options):
            if cfg.attack.method == "scan":
                # The exact confidence-map engine's fast path, as the driver loads it (brute
                # force behind a defence); the scan scores its refinement on its own evaluator.
                classifier = load_confmap_classifier(spec, options, defence=defence)
                search: Search = (scan or ScanOptions()).make_search(None, cfg.attack, classifier)
            else:
                # Each worker times the evaluators on its own machine for its batches' calls.
                shape = call_shape_for(batch, cfg.attack.de.updating,
                                       cfg.attack.de.effective_population)
                evaluator = load_attack_evaluator(spec, options, cfg.evaluator,
                                                  cfg.attack.de.updating, cfg.attack.pixels, shape,
                                                  defence=defence)
                search = make_search(evaluator, cfg.attack)
        self.attacker = BatchAttacker(search, cfg, classes)

    def ready(self) -> tuple[int, str, str]:
        """(pid, model fingerprint, evaluator): the driver checks the model is the same."""
        evaluator = self.attacker.attack.evaluator
        return os.getpid(), capabilities_of(evaluator.classifier).fingerprint, type(evaluator).__name__

    def attack(self, batch: list[PendingImage]) -> tuple[list, int]:
        """The rows of ``batch`` (in the order the attacks stopped) and the evaluations spent."""
        search = self.attacker.attack
        before = search.n_evaluations
        rows = self.attacker.results(batch)
        return rows, search.n_evaluations - before


class RayExecutor:
    """Attacks a campaign's batches on Ray actors (see the module docstring).

    Parameters
    ----------
    config : ExecutorConfig
        ``kind="ray"``, the cluster address, workers and their resources.
    scan : ScanOptions, optional
        Makes this an executor of the scan (``AttackConfig.method == "scan"``; it refuses other
        methods, as :class:`~onepixel.audit.method.ScanExecutor` does): the workers build the
        scan search with these options, batches hold one image (a scan takes seconds to
        minutes, so rows reach the RUN as each image is done) and config.json records them.
        Without it a scan campaign runs with the default options in batches as DE's.

    Attributes
    ----------
    worker_pids : list of int
        The actors' process ids once started (tests kill them to show batches are re-run).
    startup_seconds : float
        From ``run`` until every actor had loaded the model (joining or starting Ray included).
    """

    def __init__(self, config: ExecutorConfig | None = None, scan: ScanOptions | None = None):
        self.config = config or ExecutorConfig(kind="ray")
        self.scan = scan
        require_ray()
        self.n_evaluations = 0
        self.worker_pids: list[int] = []
        self.workers = 0
        self.startup_seconds = 0.0

    def batch_images(self, n_images: int, on_cpu: bool) -> int:
        """Enough batches to keep every worker busy: about 2 per worker (so a slow batch does
        not idle the rest at the end), each at most the local executor's batch; one image for
        a scan executor."""
        if self.scan is not None:
            return 1
        workers = self.config.workers or _guess_workers(self.config)
        per_batch = math.ceil(max(n_images, 1) / (2 * workers))
        return max(1, min(per_batch, auto_batch_images(n_images, on_cpu)))

    def describe(self) -> dict:
        return {"kind": "ray", "address": self.config.address, "workers": self.workers or
                self.config.workers, "cpus_per_worker": self.config.cpus_per_worker,
                "gpus_per_worker": self.config.gpus_per_worker,
                **(self.scan.describe() if self.scan is not None else {})}

    def make_search(self, evaluator, config: AttackConfig, classifier=None) -> Search:
        """The driver's search (run_campaign builds it here): the workers' own, so that a scan's
        budget is checked on the pixels the workers scan before any batch is sent."""
        if config.method == "scan":
            return (self.scan or ScanOptions()).make_search(evaluator, config, classifier)
        return make_search(evaluator, config, classifier)

    def run(self, batches: Iterable[list[PendingImage]], attacker: BatchAttacker,
            store_result: StoreResult, progress: Progress | None = None) -> None:
        ray = require_ray()
        from ray.util import ActorPool

        cfg = attacker.cfg
        t0 = time.perf_counter()
        started = connect(self.config)
        actors = []
        try:
            it = iter(batches)
            first = next(it, None)
            if first is None:
                return
            n = worker_count(self.config)
            self.workers = n
            retries = self.config.max_retries
            remote = actor_class(CampaignWorker, self.config)
            payload = ray.put(ModelPayload.of(cfg.model, cfg.model_options))
            cfg_ref = ray.put(cfg)
            defence = defence_of(attacker.attack.evaluator.classifier)
            actors = [remote.remote(payload, cfg_ref, attacker.classes, len(first),
                                    self.config.cpus_per_worker,
                                    None if defence == "none" else defence, self.scan)
                      for _ in range(n)]
            self._check(ray, actors, attacker)
            self.startup_seconds = time.perf_counter() - t0
            log.info("Ray: %d workers, batches of up to %d images", n, len(first))
            pool = ActorPool(actors)
            in_flight = 0
            pending: list[list[PendingImage]] = [first]

            def submit() -> None:
                nonlocal in_flight
                while pool.has_free():
                    batch = pending.pop() if pending else next(it, None)
                    if batch is None:
                        return
                    pool.submit(lambda actor, b: actor.attack.remote(b), batch)
                    in_flight += len(batch)

            submit()
            while pool.has_next():
                try:
                    rows, evaluations = pool.get_next_unordered()
                except ray.exceptions.RayError as exc:
                    raise ScaleOutError(
                        f"a Ray worker failed beyond {retries} retries: {exc}. Rows stored so "
                        "far are kept; run the same command again to finish the campaign") from exc
                self.n_evaluations += evaluations
                in_flight -= len(rows)
                for row in rows:
                    store_result(row)
                if progress is not None:
                    progress(in_flight, self.n_evaluations)
                submit()
        finally:
            release(actors, started)

    def _check(self, ray, actors, attacker: BatchAttacker) -> None:
        """Wait for the actors; the model they loaded must be the driver's."""
        try:
            ready = ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            raise ScaleOutError(f"the Ray workers could not load the model: {exc}") from exc
        want = capabilities_of(attacker.attack.evaluator.classifier).fingerprint
        self.worker_pids = [pid for pid, _, _ in ready]
        for _, fingerprint, _ in ready:
            if want and fingerprint and fingerprint != want:
                raise ScaleOutError(f"a Ray worker loaded another model (sha256 {fingerprint[:12]}...) "
                                    f"than the driver ({want[:12]}...): give the model as a file "
                                    "or the built-in name, not a Classifier object")


def _guess_workers(config: ExecutorConfig) -> int:
    """Workers before connecting: this machine's CPUs for a local runtime, else 2 per batch."""
    if config.address is None and not config.gpus_per_worker:
        return max(1, (os.cpu_count() or 1) // config.cpus_per_worker)
    return 4
