"""Settings and file names of ``onepixel evaluate`` (numpy-free: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onepixel.errors import ConfigError, is_integer
from onepixel.models.options import BUILTIN, ModelOptions

#: The ensemble, in the order it runs (each on the images the ones before left robust).
METHODS = ("rs", "de", "scan")
#: Files in the evaluation folder.
EVALUATION_CSV = "evaluation.csv"
EVALUATION_JSON = "evaluation.json"
CURVES_CSV = "curves.csv"
CURVES_PNG = "curves.png"
#: One folder per method's RUN (resumable campaigns) under the evaluation folder.
RUNS_DIR = "runs"
#: evaluation.csv's columns (``pixels`` is written for every k; it is the only place of
#: pixels 2..k when k > 1).
EVALUATION_COLUMNS = ("image", "label", "status", "method", "queries", "score", "x", "y", "r",
                      "g", "b", "pixels")
#: Statuses of evaluation.csv.
BROKEN, ROBUST, SKIPPED = "broken", "robust", "skipped"


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``onepixel evaluate`` runs.

    Attributes
    ----------
    dataset, out : path
        The image folder and the evaluation folder. Labelled as for a campaign, or a flat
        folder / one image file: then each image is attacked away from the model's prediction
        and the headline is the prediction stability, not an accuracy.
    model, model_options
        As :class:`~onepixel.attack.config.CampaignConfig`.
    max_queries : int
        Per image and method for ``rs`` (its budget) and ``de`` (population 100, so
        ``max_queries // 100 - 1`` generations, stopping on success).
    methods : tuple of str
        A subsequence of :data:`METHODS` (in that order); leave ``scan`` out to skip the
        exhaustive scan (its cost is ``H x W x 8`` queries plus refinement per image).
    scan_max_queries : int or None
        The scan runs only when its budget fits this many queries per image (None: always);
        images left robust without it are counted as not exhaustively scanned.
    pixels : int
        Pixels per candidate (the scan runs only for 1).
    seed : int
        The seed of rs and DE.
    positive_label, negative_label, classes, target, limit, batch_images, progress
        As :class:`~onepixel.attack.config.CampaignConfig`.
    """

    dataset: Path
    out: Path
    model: str = BUILTIN
    model_options: ModelOptions = field(default_factory=ModelOptions)
    max_queries: int = 10_000
    methods: tuple[str, ...] = METHODS
    scan_max_queries: int | None = None
    pixels: int = 1
    seed: int = 0
    positive_label: str = "mitosis"
    negative_label: str = "normal"
    classes: tuple[str, ...] | None = None
    target: str | None = None
    limit: int | None = None
    batch_images: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", Path(self.dataset))
        object.__setattr__(self, "out", Path(self.out))
        methods = tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        if not methods or any(m not in METHODS for m in methods) or \
                list(methods) != [m for m in METHODS if m in methods]:
            raise ConfigError(f"EvaluateConfig.methods must be a non-empty subsequence of "
                              f"{', '.join(METHODS)} in that order, got {methods!r}")
        if not is_integer(self.max_queries) or self.max_queries < 200:
            raise ConfigError(f"EvaluateConfig.max_queries must be an integer >= 200 (DE needs "
                              f"two generations of 100), got {self.max_queries!r}")
        if self.scan_max_queries is not None and (not is_integer(self.scan_max_queries)
                                                  or self.scan_max_queries < 1):
            raise ConfigError(f"EvaluateConfig.scan_max_queries must be an integer >= 1 or None, "
                              f"got {self.scan_max_queries!r}")
