"""The one progress bar of every long command: honest ETAs, and plain lines off a terminal.

:func:`progress_bar` is ``tqdm`` with two changes:

- **ETAs from the average rate since the first update.** A batched attack finishes nothing
  until its first batch is done, and the first images to finish (early-converged, skipped) are
  the fast ones: an ETA extrapolated from them is far off (29 minutes shown for a 96-second
  job). The rate is the plain average (``smoothing=0``), and the clock restarts at the first
  update (:class:`SettlingBar`), so the warm-up and the first batch's latency do not count.
- **Lines, not carriage returns, when stderr is not a terminal** (a log file, CI, a pipe): one
  line every ``LINE_INTERVAL`` seconds instead of a redraw ten times a second, so a log holds
  a few lines, not hundreds of kilobytes of ``\\r``.
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from tqdm import tqdm

#: Seconds between progress lines when the output is not a terminal.
LINE_INTERVAL = 30.0


class _Lines(io.TextIOBase):
    """A text stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self._stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


class SettlingBar(tqdm):
    """A ``tqdm`` bar whose rate (and so its ETA) counts from its first update, not its start."""

    def update(self, n: float | None = 1) -> bool | None:
        out = super().update(n)
        if not getattr(self, "_settled", True) and not self.disable:
            self._settled = True
            # The work up to the first update (model load, the first batch) is not the rate:
            # the rate counts what finishes after it, over the time since it.
            self.initial = self.n
            self.start_t = self._time()
            self.last_print_t = self.start_t  # tqdm's close() draws only after a print since start
        return out


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, *, file: TextIO | None = None, settle: bool = True,
                 **kwargs: Any) -> tqdm:
    """A progress bar with the project's settings (keyword arguments as ``tqdm``'s).

    Parameters
    ----------
    file : text stream, optional
        Where to draw (default stderr). When it is not a terminal the bar writes one plain line
        every :data:`LINE_INTERVAL` seconds (and a last one when it closes).
    settle : bool
        Count the rate from the first update (for work that finishes in batches); with False,
        from the start (for a steady stream of small updates).
    **kwargs
        ``total``, ``initial``, ``desc``, ``unit``, ``unit_scale``, ``disable``, ``leave``, ...
    """
    stream = sys.stderr if file is None else file
    kwargs.setdefault("smoothing", 0.0)
    if is_terminal(stream):
        kwargs.setdefault("dynamic_ncols", True)
    else:
        kwargs.pop("dynamic_ncols", None)
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.0)), LINE_INTERVAL)
        kwargs.setdefault("ncols", 100)
        stream = _Lines(stream)
    bar = (SettlingBar if settle else tqdm)(iterable, file=stream, **kwargs)
    if settle:
        bar._settled = False
    return bar
