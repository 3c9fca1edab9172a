"""Resumable pareto runs: the settings of ``DIR`` and one file per finished image.

``DIR/pareto.json`` records what decides a front (the search settings, the model's fingerprint,
which includes any defence, and the campaign the search was seeded from); a rerun with other
settings is refused, so a folder never mixes fronts of two searches. Each image's front is saved
to ``DIR/images/<name>.npz`` (atomically) as soon as it is found; a rerun loads the saved ones and
searches only the rest. An image's search depends only on the settings and the image (it is
seeded from ``--seed`` and the image's name), so a resumed run writes the same ``front.csv`` as
an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from onepixel.errors import OnepixelError
from onepixel.fileio import atomic_open, write_json_atomic
from onepixel.pareto.pareto import ImageFront

log = logging.getLogger(__name__)

SETTINGS = "pareto.json"
IMAGES = "images"
#: Keys of pareto.json that must agree for a folder to be resumed (``target``: K-class runs
#: only; absent from binary runs' pareto.json, which reads as None).
DECIDING = ("search", "model_sha256", "seeded_from", "target")

_ARRAYS = ("pixels", "score", "h", "evaluated_score", "evaluated_h")
#: Arrays fronts saved before K-class support lack (loaded as None: the flags are then derived
#: by :func:`onepixel.pareto.pareto.front_flags`, as binary fronts always were).
_OPTIONAL = ("success", "strong", "predicted")


def check_settings(out: Path, settings: dict) -> bool:
    """Record ``settings`` in ``out``, or check them against the recorded ones.

    Returns
    -------
    bool
        True when ``out`` already held a run (its saved images will be reused).

    Raises
    ------
    OnepixelError
        The folder was made with other settings (the message names the first that differs).
    """
    path = out / SETTINGS
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OnepixelError(f"cannot read {path} ({exc}): it records the settings of the "
                                "fronts in that folder; remove the folder or write to another one") from exc
        for key in DECIDING:
            if before.get(key) != settings.get(key):
                raise OnepixelError(
                    f"{out} holds fronts searched with other settings ({key}: "
                    f"{before.get(key)!r} there, {settings.get(key)!r} now); rerun with the same "
                    "settings to resume, or write to another folder")
        return True
    write_json_atomic(path, settings)
    return False


def front_path(out: Path, figure_name: str) -> Path:
    return out / IMAGES / f"{figure_name}.npz"


def save_front(path: Path, front: ImageFront) -> None:
    """Write one image's front (atomically: a killed run leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, name=np.array(front.name), goal=np.array(front.goal),
                 original_score=np.array(front.original_score), seconds=np.array(front.seconds),
                 goal_class=np.array(front.goal_class),
                 **{k: getattr(front, k) for k in _ARRAYS},
                 **{k: getattr(front, k) for k in _OPTIONAL if getattr(front, k) is not None})


def load_front(path: Path, name: str, goal: str, goal_class: int = -1) -> ImageFront | None:
    """The saved front of image ``name``, or None when there is none (or it is unreadable, or of
    another image, goal or goal class: it is then searched again and overwritten).

    ``goal_class`` is the class a K-class goal is about (-1 for binary goals). Fronts saved
    before K-class support (binary) lack the success flags; they load with None there.
    """
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            front = ImageFront(name=str(data["name"]), goal=str(data["goal"]),
                               original_score=float(data["original_score"]),
                               seconds=float(data["seconds"]),
                               goal_class=int(data["goal_class"]) if "goal_class" in data else -1,
                               **{k: np.array(data[k]) for k in _ARRAYS},
                               **{k: np.array(data[k]) if k in data else None for k in _OPTIONAL})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("%s is unreadable (%s): searching that image again", path, exc)
        return None
    if front.name != name or front.goal != goal or front.goal_class != goal_class:
        log.warning("%s holds %s (%s %d), not %s (%s %d): searching again", path, front.name,
                    front.goal, front.goal_class, name, goal, goal_class)
        return None
    return front
