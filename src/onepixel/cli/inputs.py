"""What a command is given as input: image files and folders, datasets, RUN folders.

A RUN folder (``config.json`` + ``attacks.csv``) is recognised wherever an image folder is
accepted: a command that cannot use a RUN refuses it with the option or the folder to give
instead, rather than scoring the RUN's figures as if they were images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from onepixel.errors import OnepixelError


def run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """The RUN folders among ``paths``."""
    from onepixel.runs.reader import is_run_folder

    return [Path(p) for p in paths if is_run_folder(p)]


def refuse_run_folders(paths: Iterable[str | Path | None], command: str,
                       use_run: str | None = None) -> None:
    """Raise :class:`OnepixelError` when one of ``paths`` is a RUN folder.

    Parameters
    ----------
    paths : paths given where images or a dataset are expected (None entries are skipped)
    command : the command, as the user typed it
    use_run : the option that takes a RUN in this command (``--run RUN``), if any; else the
        message names the dataset the RUN was made from.
    """
    runs = run_folders(p for p in paths if p is not None)
    if not runs:
        return
    run = runs[0]
    what = f"{run} is a RUN folder (config.json + attacks.csv), not images"
    if use_run:
        raise OnepixelError(f"{what}: give it as `onepixel {command} {use_run} {run}`")
    from onepixel.errors import RunError
    from onepixel.runs.reader import load_run_config

    try:
        dataset = load_run_config(run).dataset
    except RunError:
        dataset = None
    where = f": {dataset}" if dataset else " (its config.json names none)"
    raise OnepixelError(f"{what}; `onepixel {command}` takes images: use the dataset the RUN was "
                        f"made from{where}")
