"""What an attack wants, as small objects (foolbox-style criteria).

A goal turns a classifier's scores into the energy differential evolution minimises, says which
probability the RUN records, and judges success:

- :class:`Decrease` / :class:`Increase`: a binary model's score (the probability of the
  positive class) pushed below / above the papers' 0.5 (strongly: 0.05 / 0.95). The papers'
  objective: energy = score, resp. ``1 - score``.
- :class:`Untargeted`: a K-class model's probability of the true class pushed down (energy =
  ``p[true]``); success when another class is predicted. Strong: ``p[true] < 0.05``.
- :class:`Targeted`: the probability of a chosen class pushed up (energy = ``1 - p[target]``);
  success when the target class is predicted. Strong: ``p[target] > 0.95``.

Scores are what :meth:`onepixel.scoring.evaluators.Evaluator.scores` returns: (..., ) for a
binary model, (..., K) class probabilities for a K-class model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onepixel.errors import ConfigError
from onepixel.runs import schema

#: Goal names as attacks.csv's ``goal`` column writes them.
GOAL_NAMES = ("decrease", "increase", "untargeted", "targeted")


@dataclass(frozen=True)
class Goal:
    """Base class; subclasses implement :meth:`energy` and :meth:`score`."""

    name: ClassVar[str] = ""
    #: True when the recorded score is the energy itself (else it is ``1 - energy``).
    score_is_energy: ClassVar[bool] = True
    #: Binary goals act on one score per image; the others on K class probabilities.
    binary: ClassVar[bool] = True
    success_threshold: float = schema.SUCCESS_THRESHOLD
    strong_decrease_below: float = schema.STRONG_DECREASE_BELOW
    strong_increase_above: float = schema.STRONG_INCREASE_ABOVE

    def energy(self, scores: np.ndarray) -> np.ndarray:
        """Scores (...,) or (..., K) -> energies (...,) to minimise."""
        raise NotImplementedError

    def score(self, scores: np.ndarray) -> np.ndarray:
        """Scores (...,) or (..., K) -> the recorded probability (...,)."""
        raise NotImplementedError

    def score_of_energy(self, energy):
        """The recorded probability from an energy (history curves come as energies)."""
        return energy if self.score_is_energy else 1.0 - energy

    @property
    def class_index(self) -> int | None:
        """The class whose probability :meth:`score` reads (K-class goals); None for binary."""
        return None

    @property
    def maximise(self) -> bool:
        """True when the goal pushes its score up (the energy is ``1 - score``)."""
        return not self.score_is_energy

    def success(self, scores: np.ndarray) -> np.ndarray:
        """Whether each of scores (...,) or (..., K) meets the goal: (...,) bool.

        The one success rule every search calls (DE's stop, rs, scan, the rows).
        """
        return self._judge_array(np.asarray(scores, dtype=np.float64))[0]

    def judge(self, scores: np.ndarray) -> tuple[bool, bool]:
        """(success, strong_success) of the final scores of one image."""
        ok, strong = self._judge_array(np.asarray(scores, dtype=np.float64))
        return bool(ok), bool(strong)

    def _judge_array(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        """The predicted class index (...,): argmax for K classes; 1 (positive) when score > 0.5."""
        s = np.asarray(scores)
        return (s > 0.5).astype(np.int64) if self.binary else s.argmax(axis=-1)


@dataclass(frozen=True)
class Decrease(Goal):
    """Push a binary model's score down (positives: "mitosis-to-normal")."""

    name: ClassVar[str] = "decrease"

    def energy(self, scores):
        return scores

    def score(self, scores):
        return scores

    def _judge_array(self, s):
        return schema.judge("decrease", s, self.success_threshold,
                            self.strong_decrease_below, self.strong_increase_above)


@dataclass(frozen=True)
class Increase(Goal):
    """Push a binary model's score up (negatives: "normal-to-mitosis"); energy ``1 - score``."""

    name: ClassVar[str] = "increase"
    score_is_energy: ClassVar[bool] = False

    def energy(self, scores):
        return 1.0 - scores

    def score(self, scores):
        return scores

    def _judge_array(self, s):
        return schema.judge("increase", s, self.success_threshold,
                            self.strong_decrease_below, self.strong_increase_above)


@dataclass(frozen=True)
class Untargeted(Goal):
    """Lower the true class's probability until another class is predicted."""

    true_class: int = 0
    name: ClassVar[str] = "untargeted"
    binary: ClassVar[bool] = False

    def energy(self, scores):
        return scores[..., self.true_class]

    def score(self, scores):
        return scores[..., self.true_class]

    @property
    def class_index(self) -> int:
        return self.true_class

    def _judge_array(self, s):
        return s.argmax(axis=-1) != self.true_class, s[..., self.true_class] < self.strong_decrease_below


@dataclass(frozen=True)
class Targeted(Goal):
    """Raise the target class's probability until it is predicted; energy ``1 - p[target]``."""

    target_class: int = 0
    name: ClassVar[str] = "targeted"
    score_is_energy: ClassVar[bool] = False
    binary: ClassVar[bool] = False

    def energy(self, scores):
        return 1.0 - scores[..., self.target_class]

    def score(self, scores):
        return scores[..., self.target_class]

    @property
    def class_index(self) -> int:
        return self.target_class

    def _judge_array(self, s):
        return s.argmax(axis=-1) == self.target_class, s[..., self.target_class] > self.strong_increase_above


def as_goal(goal: Goal | str) -> Goal:
    """A :class:`Goal` from itself or the binary names ``decrease`` / ``increase``."""
    if isinstance(goal, Goal):
        return goal
    if goal == "decrease":
        return Decrease()
    if goal == "increase":
        return Increase()
    raise ConfigError(f"unknown goal {goal!r}: use 'decrease', 'increase', or an Untargeted / "
                      "Targeted goal object for multi-class models")
