"""The RUN folder's schema: file names, columns, the attack row, the success rule and defaults.

Everything that writes or reads a RUN (the campaign's store, the reader behind analysis,
confidence maps, the report and the demo) takes these names from here, so each is written
once. The format is documented in ``docs/run-format.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

#: File names inside a RUN folder.
CONFIG = "config.json"
ATTACKS = "attacks.csv"
HISTORY = "history.csv"
SUMMARY = "summary.json"
CONFMAPS = "confmaps"

#: attacks.csv columns, in order.
ATTACK_COLUMNS = ("image", "label", "direction", "goal", "status", "skip_reason",
                  "original_score", "attacked_score", "x", "y", "r", "g", "b", "nit", "nfev",
                  "early_converged", "success", "strong_success", "seconds",
                  "original_class", "attacked_class", "pixels")
#: Columns RUNs of onepixel before multi-class support lack (readers take them as empty).
OPTIONAL_ATTACK_COLUMNS = ("original_class", "attacked_class", "pixels")
#: history.csv columns: the best score after the initial population (generation 0) and after
#: each generation.
HISTORY_COLUMNS = ("image", "generation", "best_score")
#: Goals of binary models (one score) and of K-class models (class probabilities).
BINARY_GOALS = ("decrease", "increase")
GOALS = (*BINARY_GOALS, "untargeted", "targeted")
STATUSES = ("attacked", "skipped")
#: config.json keys (dotted) that must match for a RUN to be resumed.
RESUME_KEYS = ("dataset", "positive_label", "negative_label", "model.sha256", "attack", "classes",
               "target")

Goal = Literal["decrease", "increase", "untargeted", "targeted"]

# The papers' thresholds. AttackConfig takes its defaults from here, and a RUN whose
# config.json lacks a setting is read with these.
SKIP_POSITIVE_BELOW = 0.9
SKIP_NEGATIVE_ABOVE = 0.1
SUCCESS_THRESHOLD = 0.5
STRONG_DECREASE_BELOW = 0.05
STRONG_INCREASE_ABOVE = 0.95
MAXITER = 100

#: config.json["attack"] settings a reader falls back to (the papers' values).
DEFAULT_ATTACK_SETTINGS: dict[str, float] = {
    "skip_positive_below": SKIP_POSITIVE_BELOW,
    "skip_negative_above": SKIP_NEGATIVE_ABOVE,
    "success_threshold": SUCCESS_THRESHOLD,
    "strong_decrease_below": STRONG_DECREASE_BELOW,
    "strong_increase_above": STRONG_INCREASE_ABOVE,
    "maxiter": MAXITER,
}


_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def record_text(text: str) -> str:
    """``text`` as RUN files store it: valid UTF-8 whatever the file system gave.

    File names that are not UTF-8 reach Python with the undecodable bytes as surrogates
    (PEP 383); such a byte is written as ``\\xNN`` (lower-case hex), everything else is kept
    as it is. :func:`text_of_record` reverses it, so a RUN names such files, resumes over them
    and finds them again (a name that already holds a literal ``\\xNN`` is the one
    ambiguity).
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def text_of_record(text: str) -> str:
    """The name :func:`record_text` was given (``\\xNN`` escapes back to the original bytes)."""
    if "\\x" not in text:
        return text

    def byte(m: re.Match) -> str:
        n = int(m.group(1), 16)
        # Only bytes >= 0x80 were escaped (ASCII always decodes); the surrogate is how Python
        # holds an undecodable byte of a file name (os.fsdecode's surrogateescape).
        return chr(0xDC00 + n) if n >= 0x80 else m.group(0)

    return _ESCAPE.sub(byte, text)


def image_path(root: Path, image: str) -> Path:
    """Where the file of attacks.csv's ``image`` column lies under the dataset folder ``root``."""
    return root / text_of_record(image)


def judge(goal: str, score, success_threshold: float = SUCCESS_THRESHOLD,
          strong_decrease_below: float = STRONG_DECREASE_BELOW,
          strong_increase_above: float = STRONG_INCREASE_ABOVE):
    """The success rule: ``(success, strong_success)`` of a final score (or an array of them).

    ``decrease`` succeeds when the score falls strictly below ``success_threshold`` (strongly:
    below ``strong_decrease_below``); ``increase`` when it rises strictly above it (strongly:
    above ``strong_increase_above``). ``nan`` scores are neither.

    Parameters
    ----------
    goal : {"decrease", "increase"}
    score : float or ndarray, (N,)

    Returns
    -------
    (bool, bool) for a float, (ndarray (N,) bool, ndarray (N,) bool) for an array.
    """
    if goal not in BINARY_GOALS:
        raise ValueError(f"the threshold rule judges binary goals {BINARY_GOALS}, got {goal!r} "
                         "(multi-class goals are judged by the predicted class)")
    s = np.asarray(score, dtype=np.float64)
    if goal == "decrease":
        ok, strong = s < success_threshold, s < strong_decrease_below
    else:
        ok, strong = s > success_threshold, s > strong_increase_above
    if s.ndim == 0:
        return bool(ok), bool(strong)
    return ok, strong


def lowers_score(goal: str) -> bool:
    """Whether the goal pushes its recorded probability down (``decrease``: the positive class;
    ``untargeted``: the true class) rather than up (``increase``, ``targeted``)."""
    return goal in ("decrease", "untargeted")


def strong_threshold(goal: str, strong_decrease_below: float = STRONG_DECREASE_BELOW,
                     strong_increase_above: float = STRONG_INCREASE_ABOVE) -> float:
    """The strong-success threshold of a goal."""
    return strong_decrease_below if lowers_score(goal) else strong_increase_above


@dataclass(frozen=True)
class AttackResult:
    """One image's attack outcome: a row of ``attacks.csv`` plus its convergence history.

    ``history`` holds the best score after the initial population and after each generation
    (empty when skipped); it goes to ``history.csv``.
    """

    image: str
    label: str
    direction: str
    goal: Goal
    status: Literal["attacked", "skipped"]
    skip_reason: str
    original_score: float | None  # None when the image could not be read
    attacked_score: float | None = None
    x: int | None = None
    y: int | None = None
    r: int | None = None
    g: int | None = None
    b: int | None = None
    nit: int = 0
    nfev: int = 0
    early_converged: bool = False
    success: bool = False
    strong_success: bool = False
    seconds: float = 0.0
    original_class: str = ""
    attacked_class: str = ""
    pixels: str = ""
    history: tuple[float, ...] = ()

    CSV_COLUMNS = ATTACK_COLUMNS

    def csv_row(self) -> list[str]:
        """Values in :data:`ATTACK_COLUMNS` order; booleans as 0/1, missing values empty, text
        through :func:`record_text`."""
        out = []
        for name in ATTACK_COLUMNS:
            value = getattr(self, name)
            if value is None:
                out.append("")
            elif isinstance(value, bool):
                out.append("1" if value else "0")
            elif isinstance(value, float):
                out.append(f"{value:.4f}" if name == "seconds" else repr(value))
            else:
                out.append(record_text(str(value)))
        return out

    def history_rows(self) -> list[tuple[str, int, str]]:
        """This image's history.csv rows: ``(image, generation, repr(best_score))``."""
        image = record_text(self.image)
        return [(image, g, repr(v)) for g, v in enumerate(self.history)]
