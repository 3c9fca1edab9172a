"""A RUN's ``config.json`` read once into typed, frozen records.

:meth:`RunConfig.from_json` is the one place that knows the file's keys, their defaults and the
migrations of older RUNs (keys added after format 1 was first written: ``classes``, ``target``,
``defence``, the strong thresholds, ``pixels``, ``method``, ``max_colour_diff``, ...). Every
reader of a RUN (analysis, report, audit, confidence maps, pareto, detection, the CLI) takes its
settings from :attr:`RunData.config <onepixel.runs.reader.RunData>`, a :class:`RunConfig`, so
a renamed key is one edit here. Anything not typed here stays readable in ``.raw``.
The file is written by :func:`onepixel.attack.campaign.run_config`; ``docs/run-format.md``
documents it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onepixel.errors import RunError
from onepixel.runs import schema

#: The DE settings config.json's ``attack`` records (the run-info table lists them in this order).
DE_KEYS = ("population", "maxiter", "mutation", "recombination", "tol", "atol", "updating", "seed")


def _number(value: Any, key: str, source: str, default: float | None) -> float | None:
    """A finite float from config.json, ``default`` when absent or null."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunError(f"{source}: {key} is {value!r}, not a finite number; restore the file "
                       f"from the campaign, or delete the key to read it as {default!r}")
    return float(value)


def _integer(value: Any, key: str, source: str, default: int | None) -> int | None:
    number = _number(value, key, source, None if default is None else float(default))
    if number is None:
        return None
    if not number.is_integer():
        raise RunError(f"{source}: {key} is {value!r}, not a whole number; restore the file "
                       f"from the campaign, or delete the key to read it as {default!r}")
    return int(number)


def _text(value: Any, default: str | None = None) -> str | None:
    return default if value is None or value == "" else str(value)


def _mapping(value: Any, key: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RunError(f"{source}: {key} is {value!r}, expected a JSON object; restore the file "
                       "from the campaign")
    return dict(value)


@dataclass(frozen=True)
class ModelRecord:
    """config.json ``model``: what the campaign attacked.

    Attributes
    ----------
    spec : str
        The model as given (``max-mitosis``, a file, an ``http://`` URL); empty when not recorded.
    name : str
        The classifier's name; empty when not recorded.
    sha256 : str
        The model's fingerprint; empty when not recorded (e.g. a model over HTTP).
    """

    spec: str = ""
    name: str = ""
    sha256: str = ""

    @property
    def title(self) -> str:
        """The name, else the spec, else ``"unknown model"``."""
        return self.name or self.spec or "unknown model"


@dataclass(frozen=True)
class AttackRecord:
    """config.json ``attack``: the thresholds and search settings the campaign ran with.

    Absent keys (RUNs written before they existed) read as the papers' values
    (:data:`onepixel.runs.schema.DEFAULT_ATTACK_SETTINGS`) or, for later features, as what the
    campaign did before the feature existed (one pixel, differential evolution, no budget).

    Attributes
    ----------
    skip_positive_below, skip_negative_above : float
        The skip rule of binary RUNs (and the paper filter of the analysis).
    success_threshold : float
        A binary attack succeeds when the score crosses it (strictly).
    strong_decrease_below, strong_increase_above : float
        Strong success thresholds.
    maxiter : int
        DE's generation cap.
    population : int or None
        DE's population; None when not recorded.
    pixels : int
        Pixels changed per attack.
    method : str
        ``de`` or ``scan``.
    max_colour_diff : float or None
        The colour budget H; None without one.
    recorded : dict
        The ``attack`` object as written (DE settings included), for display.
    """

    skip_positive_below: float = schema.SKIP_POSITIVE_BELOW
    skip_negative_above: float = schema.SKIP_NEGATIVE_ABOVE
    success_threshold: float = schema.SUCCESS_THRESHOLD
    strong_decrease_below: float = schema.STRONG_DECREASE_BELOW
    strong_increase_above: float = schema.STRONG_INCREASE_ABOVE
    maxiter: int = schema.MAXITER
    population: int | None = None
    pixels: int = 1
    method: str = "de"
    max_colour_diff: float | None = None
    recorded: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, attack: Mapping[str, Any] | None, source: str = "config.json") -> AttackRecord:
        """Read config.json's ``attack`` object (None or ``{}``: the papers' settings).

        Raises
        ------
        RunError
            A threshold or count that is not a number; the message names ``source`` and the key.
        """
        a = _mapping(attack, "attack", source)

        def num(key: str) -> float:
            return _number(a.get(key), f"attack.{key}", source,
                           float(schema.DEFAULT_ATTACK_SETTINGS[key]))

        return cls(
            skip_positive_below=num("skip_positive_below"),
            skip_negative_above=num("skip_negative_above"),
            success_threshold=num("success_threshold"),
            strong_decrease_below=num("strong_decrease_below"),
            strong_increase_above=num("strong_increase_above"),
            maxiter=_integer(a.get("maxiter"), "attack.maxiter", source, schema.MAXITER),
            population=_integer(a.get("population"), "attack.population", source, None),
            pixels=_integer(a.get("pixels"), "attack.pixels", source, 1),
            method=_text(a.get("method"), "de"),
            max_colour_diff=_number(a.get("max_colour_diff"), "attack.max_colour_diff", source, None),
            recorded=a)

    def strong_threshold(self, goal: str) -> float:
        """The strong-success threshold of ``goal`` (:func:`onepixel.runs.schema.strong_threshold`)."""
        return schema.strong_threshold(goal, self.strong_decrease_below, self.strong_increase_above)

    @property
    def thresholds(self) -> dict[str, float]:
        """The success rule's keyword arguments (``success_threshold``, ``strong_decrease_below``,
        ``strong_increase_above``), as :func:`onepixel.runs.schema.judge` takes them."""
        return {"success_threshold": self.success_threshold,
                "strong_decrease_below": self.strong_decrease_below,
                "strong_increase_above": self.strong_increase_above}

    @property
    def settings(self) -> dict[str, float]:
        """Every key of :data:`~onepixel.runs.schema.DEFAULT_ATTACK_SETTINGS` with this RUN's value
        (what :func:`onepixel.runs.summary.summarize` judges by)."""
        return {**self.thresholds, "skip_positive_below": self.skip_positive_below,
                "skip_negative_above": self.skip_negative_above, "maxiter": self.maxiter}

    @property
    def de_settings(self) -> dict[str, Any]:
        """The recorded DE settings (:data:`DE_KEYS` present in the file), in that order."""
        return {k: self.recorded[k] for k in DE_KEYS if k in self.recorded}


@dataclass(frozen=True)
class RunConfig:
    """A RUN's ``config.json``, typed; :meth:`from_json` fills what older RUNs lack.

    Attributes
    ----------
    found : bool
        Whether the RUN has a config.json (False: every field is its default).
    format : int
        The file's format number (1).
    onepixel_version, created, device, engine, evaluator : str or None
        As recorded (None when not).
    dataset : Path or None
        The dataset folder the images are relative to; None when not recorded.
    positive_label, negative_label : str
        Binary RUNs' label folders (``mitosis`` / ``normal`` when not recorded).
    classes : tuple of str
        A K-class model's class names in output order; ``()`` for binary RUNs.
    target : str or None
        The target class of a targeted K-class RUN.
    model : ModelRecord
    defence : str
        The defence the campaign attacked through (``"none"``: the model itself).
    attack : AttackRecord
    batch_images, limit : int or None
    labels : {"folders", "predicted"}
        Where the labels came from: label folders, or the model's own predictions (unlabelled
        images); RUNs written before the field existed read as ``folders``.
    planned : int or None
        The images the campaign set out to attack (after ``limit``); None for RUNs written before
        it was recorded (nothing is then claimed about being finished).
    executor : dict
        Where the batches ran (``{"kind": "local"}`` when not recorded).
    engine_choice : dict or None
        How ``evaluator="auto"`` chose (None when not recorded).
    versions : dict
        Python and library versions of the campaign.
    raw : dict
        The file as read, for anything not typed here.
    """

    found: bool = False
    format: int = 1
    onepixel_version: str | None = None
    created: str | None = None
    dataset: Path | None = None
    positive_label: str = "mitosis"
    negative_label: str = "normal"
    classes: tuple[str, ...] = ()
    target: str | None = None
    model: ModelRecord = field(default_factory=ModelRecord)
    defence: str = "none"
    attack: AttackRecord = field(default_factory=AttackRecord)
    device: str | None = None
    engine: str | None = None
    evaluator: str | None = None
    batch_images: int | None = None
    limit: int | None = None
    planned: int | None = None
    labels: str = "folders"
    executor: dict = field(default_factory=lambda: {"kind": "local"}, compare=False)
    engine_choice: dict | None = field(default=None, compare=False)
    versions: dict = field(default_factory=dict, compare=False)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, config: Mapping[str, Any] | None, source: str = "config.json") -> RunConfig:
        """Type a config.json object; None reads as a RUN without one (the papers' defaults).

        Migrations: a ``model`` given as a plain string is its spec; a null or absent
        ``defence`` is ``"none"``; null labels (K-class RUNs write them as null) are the
        defaults; absent ``attack`` keys are :class:`AttackRecord`'s defaults.

        Raises
        ------
        RunError
            Not a JSON object, or a value of the wrong type; the message names ``source`` and
            the key.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise RunError(f"{source}: expected a JSON object, got {type(config).__name__}")
        c = dict(config)
        model = c.get("model")
        if isinstance(model, str):  # a bare spec
            model = {"spec": model}
        m = _mapping(model, "model", source)
        classes = c.get("classes") or ()
        if isinstance(classes, str) or not all(isinstance(k, (str, int)) for k in classes):
            raise RunError(f"{source}: classes is {classes!r}, expected a list of class names")
        engine_choice = c.get("engine_choice")
        return cls(
            found=True,
            format=_integer(c.get("format"), "format", source, 1),
            onepixel_version=_text(c.get("onepixel_version")),
            created=_text(c.get("created")),
            dataset=Path(c["dataset"]) if c.get("dataset") else None,
            positive_label=_text(c.get("positive_label"), "mitosis"),
            negative_label=_text(c.get("negative_label"), "normal"),
            classes=tuple(str(k) for k in classes),
            target=_text(c.get("target")),
            model=ModelRecord(spec=_text(m.get("spec"), ""), name=_text(m.get("name"), ""),
                              sha256=_text(m.get("sha256"), "")),
            defence=_text(c.get("defence"), "none"),
            attack=AttackRecord.from_json(c.get("attack"), source),
            device=_text(c.get("device")),
            engine=_text(c.get("engine")),
            evaluator=_text(c.get("evaluator")),
            batch_images=_integer(c.get("batch_images"), "batch_images", source, None),
            limit=_integer(c.get("limit"), "limit", source, None),
            planned=_integer(c.get("planned"), "planned", source, None),
            labels=_text(c.get("labels"), "folders"),
            executor=_mapping(c.get("executor"), "executor", source) or {"kind": "local"},
            engine_choice=None if engine_choice is None else _mapping(engine_choice, "engine_choice",
                                                                      source),
            versions=_mapping(c.get("versions"), "versions", source),
            raw=c)

    @property
    def multiclass(self) -> bool:
        """Whether the RUN attacked a K-class model (``classes`` recorded)."""
        return bool(self.classes)

    @property
    def executor_kind(self) -> str:
        """``local`` or ``ray`` (``executor.kind``)."""
        return str(self.executor.get("kind") or "local")
