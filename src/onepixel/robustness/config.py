"""Settings of ``onepixel robustness`` (light imports: the CLI builds its parser from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onepixel.attack.config import AttackConfig
from onepixel.defences.spec import format_defence, parse_defence
from onepixel.errors import ConfigError
from onepixel.models.options import BUILTIN, ModelOptions


def parse_defences(text: str) -> tuple[str, ...]:
    """``--defences``: comma-separated defences, each canonical (``none`` for the baseline); a
    chain of steps inside one defence is written with ``+`` (``repair+median3``).

    Raises
    ------
    ConfigError
        An empty list, a repeated defence or a malformed one (the error's field is
        ``RobustnessConfig.defences``).
    """
    specs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            specs.append(format_defence(parse_defence(part.replace("+", ","))))
        except ConfigError as exc:
            raise ConfigError(f"RobustnessConfig.defences: {exc}",
                              field="RobustnessConfig.defences") from None
    if not specs:
        raise ConfigError("RobustnessConfig.defences needs at least one defence, e.g. "
                          "('none', 'median3', 'blur:1')", field="RobustnessConfig.defences")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"RobustnessConfig.defences lists a defence twice: {text!r}",
                          field="RobustnessConfig.defences")
    return tuple(specs)


def run_folder_name(defence: str) -> str:
    """The campaign folder of a defence under ``DIR/runs``: ``blur:1`` -> ``blur-1``, a chain
    ``repair:0.5,median3`` -> ``repair-0.5+median3`` (no ``:`` or ``,`` in file names)."""
    return format_defence(parse_defence(defence)).replace(":", "-").replace(",", "+")


@dataclass(frozen=True)
class RobustnessConfig:
    """Settings of ``onepixel robustness``.

    Attributes
    ----------
    dataset : path
        Folder with ``positive_label`` / ``negative_label`` sub-folders (a binary model's dataset).
    out : path
        Output folder: ``robustness.csv``, ``robustness.json``, ``robustness.png``, ``runs/``.
    defences : tuple of str
        Defence specs (:func:`parse_defences`); ``none`` is the undefended baseline.
    model, model_options, attack, limit, batch_images, positive_label, negative_label, progress
        As :class:`~onepixel.attack.config.CampaignConfig`, the same for every defence.
    """

    dataset: Path
    out: Path
    defences: tuple[str, ...] = ("none", "median3")
    model: str = BUILTIN
    model_options: ModelOptions = field(default_factory=ModelOptions)
    attack: AttackConfig = field(default_factory=AttackConfig)
    limit: int | None = None
    batch_images: int | None = None
    positive_label: str = "mitosis"
    negative_label: str = "normal"
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "defences", parse_defences(",".join(
            d.replace(",", "+") for d in self.defences)))
