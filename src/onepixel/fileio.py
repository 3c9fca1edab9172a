"""Files and folders that appear whole or not at all: write beside, then rename into place.

A reader (or a resumed run) never sees half a file or half a folder. Everything written here
gets the permissions the user's umask gives a new file (0644 / 0755 under the usual 022), not
the 0600 / 0700 of the temporary files it starts as, so a team sharing a RUN folder can read
all of it.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from onepixel.errors import ConfigError, OnepixelError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """The mode ``mkdir()`` would give a new folder: 0o777 less the umask."""
    return 0o777 & ~current_umask()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, permissions: int | None = None,
                **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; when the block succeeds, rename it onto ``path``.

    Parameters
    ----------
    path : path
        The final file; its folder is created if needed.
    mode : str
        ``"w"`` or ``"wb"`` (and friends), as for :func:`open`.
    permissions : int, optional
        The final file's mode; default: what the umask gives a new file.
    open_kwargs
        Passed to :func:`open` (``newline``, ``encoding``).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
        os.chmod(tmp, default_file_mode() if permissions is None else permissions)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON (indented, UTF-8) so that readers never see half a file."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file (header, then rows) so that readers never see half a file."""
    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """``numpy.savez`` through a temporary file and a rename."""
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


@contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out`` that becomes ``out`` only on success.

    On any exception (KeyboardInterrupt included) the temporary folder is deleted and ``out`` is
    left as it was. An existing empty ``out`` is replaced; a non-empty one only with
    ``overwrite=True``, and only after the new folder is complete.

    Raises
    ------
    OnepixelError
        ``out`` is a file, or a non-empty folder and ``overwrite`` is False.
    """
    out = Path(os.path.abspath(out))
    if out.parent == out:
        raise OnepixelError(f"output folder {out} is a filesystem root; give a sub-folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is a file; give a folder path", field="out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out} exists and is not empty; choose another folder, "
                          f"delete it, or pass overwrite=True", field="overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.chmod(tmp, default_dir_mode())
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
