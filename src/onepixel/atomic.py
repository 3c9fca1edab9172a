"""Write-then-rename, so a reader (or a resumed run) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


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
        chmod the file to this before the rename (temporary files start as 0600).
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
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
