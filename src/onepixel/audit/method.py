"""``onepixel attack --method scan``: the executor the CLI has used for the scan method.

The scan itself is a search method like DE and ``rs`` (:class:`onepixel.attack.scan.ScanSearch`,
through :mod:`onepixel.attack.methods`), so ``run_campaign`` runs ``AttackConfig(method="scan")``
on any executor (local or Ray). :class:`ScanExecutor` is the local executor with the scan's
options (refinement starts and rounds, the scanned pixels) and one image per batch, so rows
reach the RUN as each image is done; config.json records its options.
"""

from __future__ import annotations

from collections.abc import Iterable

from onepixel.attack.batches import BatchAttacker, LocalExecutor, PendingImage, Progress, StoreResult
from onepixel.attack.config import AttackConfig
from onepixel.attack.scan import (
    MESSAGE_SCAN,
    REFINE_RESERVE,
    SCAN_STEP,
    ScanSearch,
    choose_scan_step,
    scan_cost,
)
from onepixel.audit.config import AuditConfig
from onepixel.errors import ConfigError

__all__ = ["MESSAGE_SCAN", "REFINE_RESERVE", "SCAN_STEP", "ScanExecutor", "choose_scan_step",
           "scan_cost"]


class ScanExecutor(LocalExecutor):
    """Attacks a campaign's images with the scan search, in this process, one image per batch.

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
        super().__init__()
        # Validates top / rounds / pixels with the audit's own messages.
        self.pixels = AuditConfig(top=top, rounds=rounds, pixels=pixels).pixels
        if top < 1:
            raise ConfigError(f"scan attack: top must be >= 1 (refinement needs a start), got {top}")
        self.top = int(top)
        self.rounds = int(rounds)

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
        """
        h, w = input_shape[:2]
        n_pixels = h * w if self.pixels is None else len(self.pixels)
        channels = input_shape[2] if len(input_shape) > 2 else 3
        return choose_scan_step(n_pixels, attack.max_queries, attack.scan_step, channels)

    def make_search(self, evaluator, config: AttackConfig, classifier=None) -> ScanSearch:
        """The scan search with this executor's options (run_campaign builds it here, so that its
        budget is checked on the pixels this executor scans)."""
        return ScanSearch(classifier if classifier is not None else evaluator.classifier, config,
                          self.top, self.rounds, self.pixels)

    def search(self, attacker: BatchAttacker) -> ScanSearch:
        """The scan search with this executor's options, on the attacker's classifier."""
        current = attacker.attack
        if isinstance(current, ScanSearch) and (current.top, current.rounds, current.pixels) \
                == (self.top, self.rounds, self.pixels):
            return current
        return ScanSearch(current.evaluator.classifier if not isinstance(current, ScanSearch)
                          else current.classifier, attacker.cfg.attack, self.top, self.rounds,
                          self.pixels)

    def run(self, batches: Iterable[list[PendingImage]], attacker: BatchAttacker,
            store_result: StoreResult, progress: Progress | None = None) -> None:
        attacker.attack = self.search(attacker)
        super().run(batches, attacker, store_result, progress)
