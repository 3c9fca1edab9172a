"""Settings of ``onepixel pareto`` (a light module: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from onepixel.errors import ConfigError, is_integer, is_real
from onepixel.runs import schema

# The files ``onepixel pareto`` writes, named once here (a light module) for the writer
# (:mod:`onepixel.pareto.runner`) and the report's reader alike.
FRONT = "front.csv"
#: front.csv's columns; a greyscale pixel's value v is written as r = g = b = v (as attacks.csv).
FRONT_COLUMNS = ("image", "x", "y", "r", "g", "b", "score", "h")
#: The column K-class runs add at the end: the class predicted for the attacked image.
FRONT_CLASS_COLUMN = "attacked_class"
CURVE = "budget_curve.csv"
CURVE_COLUMNS = ("budget", "images", "success", "success_rate", "strong", "strong_rate")
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ParetoConfig:
    """Settings of the per-image multi-objective search.

    Attributes
    ----------
    population : int
        NSGA-II population size.
    generations : int
        Generations; the search scores about ``population * generations`` pixels.
    seed : int
        Seeds each image's search together with its name, so an image's front does not depend
        on which other images are searched.
    success_threshold, strong_decrease_below, strong_increase_above : float
        The papers' success rule (:func:`onepixel.runs.schema.judge`) of binary goals; K-class
        goals are judged by the predicted class, strongly by the two strong thresholds
        (:mod:`onepixel.attack.goals`).
    """

    population: int = 100
    generations: int = 50
    seed: int = 0
    success_threshold: float = schema.SUCCESS_THRESHOLD
    strong_decrease_below: float = schema.STRONG_DECREASE_BELOW
    strong_increase_above: float = schema.STRONG_INCREASE_ABOVE

    def __post_init__(self) -> None:
        if not is_integer(self.population) or self.population < 4:
            raise ConfigError(f"ParetoConfig.population must be an integer >= 4, got {self.population!r}",
                              field="ParetoConfig.population")
        if not is_integer(self.generations) or self.generations < 1:
            raise ConfigError(f"ParetoConfig.generations must be an integer >= 1, got {self.generations!r}",
                              field="ParetoConfig.generations")
        for name in ("success_threshold", "strong_decrease_below", "strong_increase_above"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"ParetoConfig.{name} must be a number within [0, 1], got {value!r}",
                                  field=f"ParetoConfig.{name}")

    def judge(self, goal: str, scores) -> tuple:
        """(success, strong_success) of a binary model's scores (N,) for ``goal`` (decrease /
        increase)."""
        return schema.judge(goal, scores, self.success_threshold, self.strong_decrease_below,
                            self.strong_increase_above)

    def thresholds(self) -> dict:
        """The success rule's thresholds, as keyword arguments of the goals and of
        :class:`~onepixel.attack.config.AttackConfig`."""
        return {"success_threshold": self.success_threshold,
                "strong_decrease_below": self.strong_decrease_below,
                "strong_increase_above": self.strong_increase_above}

    def to_dict(self) -> dict:
        return {"population": self.population, "generations": self.generations, "seed": self.seed,
                **self.thresholds()}
