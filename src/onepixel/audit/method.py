"""``onepixel attack --method scan``: the scan's options, and its local executor.

The scan itself is a search method like DE and ``rs`` (:class:`onepixel.attack.scan.ScanSearch`,
through :mod:`onepixel.attack.methods`), so ``run_campaign`` runs ``AttackConfig(method="scan")``
on any executor. :class:`ScanOptions` are the scan's own settings (refinement starts and rounds,
the scanned pixels): a picklable value that builds the search wherever it runs, in this process
(:class:`ScanExecutor`, the local executor with one image per batch, so rows reach the RUN as
each image is done) or on Ray workers (``RayExecutor(scan=ScanOptions(...))``). config.json
records them.
"""

from __future__ import annotations

from dataclasses import dataclass

from onepixel.attack.batches import LocalExecutor
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

__all__ = ["MESSAGE_SCAN", "REFINE_RESERVE", "SCAN_STEP", "ScanExecutor", "ScanOptions",
           "choose_scan_step", "scan_cost"]


@dataclass(frozen=True)
class ScanOptions:
    """The scan search's own settings (the budget and step are ``AttackConfig``'s).

    Attributes
    ----------
    top : int
        Refinement starts from this many best scan pixels (the audit's default).
    rounds : int
        At most this many refinement rounds.
    pixels : tuple of (x, y) or None
        Scan only these pixels (None: every pixel); refinement may step outside them. For
        tests and focused studies; the CLI scans every pixel.
    """

    top: int = AuditConfig.top
    rounds: int = AuditConfig.rounds
    pixels: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        # Validates top / rounds / pixels with the audit's own messages.
        checked = AuditConfig(top=self.top, rounds=self.rounds, pixels=self.pixels)
        if self.top < 1:
            raise ConfigError(f"ScanOptions.top must be >= 1 (refinement needs a start), got "
                              f"{self.top}", field="ScanOptions.top")
        object.__setattr__(self, "top", int(self.top))
        object.__setattr__(self, "rounds", int(self.rounds))
        object.__setattr__(self, "pixels", checked.pixels)

    def describe(self) -> dict:
        """config.json's ``executor`` entries of a scan campaign."""
        return {"method": "scan", "top": self.top, "rounds": self.rounds,
                "pixels": None if self.pixels is None else [list(p) for p in self.pixels]}

    def check(self, input_shape: tuple[int, ...], attack: AttackConfig) -> int:
        """The scan step for images of ``input_shape`` (H, W, C) under ``attack``'s budget.

        Call it before the RUN is created (the CLI does), so that a budget too small for the
        model's images is refused before a RUN with those settings exists.

        Raises
        ------
        ConfigError
            The budget does not fit (:func:`~onepixel.attack.scan.choose_scan_step`).
        """
        h, w = input_shape[:2]
        n_pixels = h * w if self.pixels is None else len(self.pixels)
        channels = input_shape[2] if len(input_shape) > 2 else 3
        return choose_scan_step(n_pixels, attack.max_queries, attack.scan_step, channels)

    def make_search(self, evaluator, config: AttackConfig, classifier=None) -> ScanSearch:
        """The scan search with these options on ``classifier`` (default
        ``evaluator.classifier``; load it with
        :func:`~onepixel.scoring.policy.load_confmap_classifier` for the exact fast path).
        Its budget is checked on the pixels these options scan."""
        return ScanSearch(classifier if classifier is not None else evaluator.classifier, config,
                          self.top, self.rounds, self.pixels)


class ScanExecutor(LocalExecutor):
    """Attacks a campaign's images with the scan search, in this process, one image per batch.

    Parameters
    ----------
    top, rounds, pixels
        :class:`ScanOptions` (validated there).

    The budget and the scan step are read from the campaign's
    :class:`~onepixel.attack.config.AttackConfig` (``max_queries``, ``scan_step``).
    """

    method = "scan"

    def __init__(self, top: int = AuditConfig.top, rounds: int = AuditConfig.rounds,
                 pixels: tuple[tuple[int, int], ...] | None = None):
        super().__init__()
        self.options = ScanOptions(top, rounds, pixels)

    def batch_images(self, n_images: int, on_cpu: bool) -> int:
        # Images are scanned one at a time; small batches keep rows flowing to the RUN.
        return 1

    def describe(self) -> dict:
        return {"kind": "local", **self.options.describe()}

    def make_search(self, evaluator, config: AttackConfig, classifier=None) -> ScanSearch:
        """The scan search with this executor's options (run_campaign builds it here, so that
        its budget is checked on the pixels this executor scans)."""
        return self.options.make_search(evaluator, config, classifier)
