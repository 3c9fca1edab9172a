"""Attack and campaign settings: frozen dataclasses whose defaults are the papers'.

These are the one place each default is written; the CLI reads its option defaults from them.
The module imports no model code (numpy only), so building the CLI's parser stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from onepixel.errors import ConfigError, is_integer, is_real
from onepixel.models.options import BUILTIN, ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.optimize.rs import RSConfig
from onepixel.runs import schema
from onepixel.scoring.options import EVALUATORS

#: Attack methods (``AttackConfig.method``): the papers' differential evolution, the audit's
#: exhaustive coarse scan + integer refinement, or query-efficient random search
#: (:mod:`onepixel.attack.methods`).
METHODS = ("de", "scan", "rs")

#: The smallest ``--max-colour-diff``: below it, a pixel whose neighbour mean is a half-integer
#: has no integer colour within the budget (:mod:`onepixel.attack.budget`).
MIN_BUDGET = 0.5 / 255


@dataclass(frozen=True)
class AttackConfig:
    """Attack settings; the defaults are the papers'.

    Attributes
    ----------
    de : DEConfig
        Differential evolution settings (population 200, maxiter 100, F 0.5, CR 0.7, tol 0.01).
    skip_positive_below, skip_negative_above : float
        Positives scoring below / negatives scoring above these are ambiguous and not attacked.
    success_threshold : float
        An attack succeeds when the score crosses it.
    strong_decrease_below, strong_increase_above : float
        Strong success thresholds.
    memoize : bool
        Reuse the score of a candidate pixel already evaluated on the same image (exact: the
        model is deterministic; ``nfev`` still counts every evaluation as scipy would).
    pixels : int
        Pixels changed per candidate (Su et al. use 1, 3 and 5): the candidate is ``pixels``
        groups of ``(x, y, r, g, b)`` (``(x, y, v)`` for greyscale models).
    stop_on_success : bool
        Stop each image's evolution as soon as its goal is met (what torchattacks and ART do:
        fewer queries, a less extreme best score). Off by default, as in the papers.
    max_colour_diff : float or None
        The colour budget H (``--max-colour-diff``): every candidate pixel's h (the chromatic
        paper's RMSE in [0, 1] between its colour and its neighbours' mean in the original
        image) is kept <= H by repairing the colour before it is scored
        (:mod:`onepixel.attack.budget`). None (the default): no budget, the papers' attack.
    method : {"de", "scan", "rs"}
        ``de`` (the default): the papers' differential evolution. ``scan``: the audit's
        exhaustive coarse scan and integer refinement (docs/attack.md); one pixel, any
        model. ``rs``: random search with corner colours, refinement and the campaign prior
        (:mod:`onepixel.attack.rs`). Every executor runs every method
        (:mod:`onepixel.attack.methods`).
    max_queries : int or None
        ``scan`` and ``rs``: queries per image (``scan``: scan + refinement + verification,
        None: no cap; ``rs``: None means 10,000).
    scan_step : int or None
        ``scan`` only: the scan's colour step (None: the finest grid that fits ``max_queries``,
        or the audit's 85 without a cap).
    labels_only : bool
        ``rs`` only: the search sees only the predicted class (a service that answers with
        labels), samples the same proposal and stops at the first flip.
    rs : RSConfig
        ``rs`` only: candidates per step, the campaign prior and its weight, the seed.
    """

    de: DEConfig = field(default_factory=DEConfig)
    skip_positive_below: float = schema.SKIP_POSITIVE_BELOW
    skip_negative_above: float = schema.SKIP_NEGATIVE_ABOVE
    success_threshold: float = schema.SUCCESS_THRESHOLD
    strong_decrease_below: float = schema.STRONG_DECREASE_BELOW
    strong_increase_above: float = schema.STRONG_INCREASE_ABOVE
    memoize: bool = True
    pixels: int = 1
    stop_on_success: bool = False
    max_colour_diff: float | None = None
    method: str = "de"
    max_queries: int | None = None
    scan_step: int | None = None
    labels_only: bool = False
    rs: RSConfig = field(default_factory=RSConfig)

    def __post_init__(self) -> None:
        self._check_method()
        if not is_integer(self.pixels) or not 1 <= self.pixels <= 1024:
            raise ConfigError(f"AttackConfig.pixels must be an integer within 1..1024, got {self.pixels!r}",
                              field="AttackConfig.pixels")
        for name in ("skip_positive_below", "skip_negative_above", "success_threshold",
                     "strong_decrease_below", "strong_increase_above"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"AttackConfig.{name} must be a number within [0, 1], got {value!r}",
                                  field=f"AttackConfig.{name}")
        budget = self.max_colour_diff
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int | float) \
                    or not MIN_BUDGET <= budget <= 1.0:
                raise ConfigError(f"AttackConfig.max_colour_diff must be a number within "
                                  f"[{MIN_BUDGET:.4g}, 1] (the chromatic h; smaller budgets fit no "
                                  f"integer colour), got {budget!r}", field="AttackConfig.max_colour_diff")
            object.__setattr__(self, "max_colour_diff", float(budget))

    def _check_method(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"AttackConfig.method must be one of {', '.join(METHODS)}, got {self.method!r}",
                              field="AttackConfig.method")
        for name in ("max_queries", "scan_step"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.method == "de" or (name == "scan_step" and self.method != "scan"):
                raise ConfigError(f"AttackConfig.{name} is for method "
                                  f"{'scan' if name == 'scan_step' else 'scan or rs'}; DE's "
                                  "budget is DEConfig.population x (DEConfig.maxiter + 1) queries "
                                  "per image", field=f"AttackConfig.{name}")
            low, high = (1, 2**62) if name == "max_queries" else (1, 255)
            if not is_integer(value) or not low <= value <= high:
                raise ConfigError(f"AttackConfig.{name} must be an integer within {low}..{high}, "
                                  f"got {value!r}",
                                  field=f"AttackConfig.{name}")
        if self.method == "scan":
            # The scan searches one pixel's exact colours; these DE options have no meaning there.
            if self.pixels != 1:
                raise ConfigError("AttackConfig.method='scan' changes one pixel: leave "
                                  "AttackConfig.pixels at 1 or use method='de'", field="AttackConfig.pixels")
            if self.max_colour_diff is not None:
                raise ConfigError("AttackConfig.max_colour_diff is not supported by method='scan'; "
                                  "use method='de'", field="AttackConfig.max_colour_diff")
            if self.stop_on_success:
                raise ConfigError("AttackConfig.stop_on_success is not supported by method='scan' (it "
                                  "always scans the whole grid); use method='de'",
                                  field="AttackConfig.stop_on_success")
        if not isinstance(self.labels_only, bool):
            raise ConfigError(f"AttackConfig.labels_only must be True or False, got "
                              f"{self.labels_only!r}", field="AttackConfig.labels_only")
        if self.labels_only and self.method != "rs":
            raise ConfigError("AttackConfig.labels_only is for method 'rs' (the search that "
                              "samples without scores); set AttackConfig.method='rs'",
                              field="AttackConfig.labels_only")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CampaignConfig:
    """Everything a campaign needs.

    Attributes
    ----------
    dataset : path
        Folder with ``positive_label`` / ``negative_label`` sub-folders at any depth.
    out : path
        The RUN folder.
    model : str
        Model spec (``max-mitosis``, a file).
    model_options : ModelOptions
    attack : AttackConfig
    batch_images : int or None
        Images attacked at once (memory: ``batch_images * population`` candidates per call in
        deferred mode). None: all the images to attack, up to 256 on CPU and 2048 on CUDA
        (:func:`onepixel.scoring.policy.auto_batch_images`): many images per call is what
        makes immediate updating fast.
    limit : int, optional
        Only the first N images of the dataset (sorted order).
    progress : bool
        Show a progress bar.
    classes : tuple of str, optional
        K-class models: the class names in the model's output order (default: the dataset's
        class folder names, sorted, as torchvision's ImageFolder).
    target : str, optional
        K-class models: attack towards this class (targeted); None: untargeted.
    evaluator : {"auto", "incremental", "full"}
        How candidates are scored (:func:`onepixel.scoring.evaluators.evaluator_for`); every choice gives
        the same scores up to float rounding.
    """

    dataset: Path
    out: Path
    model: str = BUILTIN
    model_options: ModelOptions = field(default_factory=ModelOptions)
    attack: AttackConfig = field(default_factory=AttackConfig)
    batch_images: int | None = None
    limit: int | None = None
    positive_label: str = "mitosis"
    negative_label: str = "normal"
    progress: bool = True
    evaluator: str = "auto"
    classes: tuple[str, ...] | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if self.evaluator not in EVALUATORS:
            raise ConfigError(f"CampaignConfig.evaluator must be one of {', '.join(EVALUATORS)}, "
                              f"got {self.evaluator!r}", field="CampaignConfig.evaluator")
        if self.batch_images is not None and (not is_integer(self.batch_images)
                                              or not 1 <= self.batch_images <= 32767):
            raise ConfigError(f"CampaignConfig.batch_images must be an integer within 1..32767 or None, "
                              f"got {self.batch_images!r}", field="CampaignConfig.batch_images")
        if self.limit is not None and (not is_integer(self.limit) or self.limit < 1):
            raise ConfigError(f"CampaignConfig.limit must be an integer >= 1 or None, got {self.limit!r}",
                              field="CampaignConfig.limit")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
            if len(self.classes) < 2:
                raise ConfigError(f"CampaignConfig.classes needs at least two class names, "
                                  f"got {self.classes}",
                                  field="CampaignConfig.classes")
        if self.target is not None and self.classes is not None and self.target not in self.classes:
            raise ConfigError(f"CampaignConfig.target {self.target!r} is not one of CampaignConfig.classes "
                              f"({', '.join(self.classes)})", field="CampaignConfig.target")
