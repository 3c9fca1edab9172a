"""The figure settings every onepixel figure shares: size unit, DPI, style, PNG output.

The report (``report/``), the Pareto fronts (``pareto/``), the defences (``robustness/``), the
detector (``detection/``) and the confidence maps (``confmap/``) all draw through this module, so
their figures look alike and the settings are written once.

Figures are :class:`matplotlib.figure.Figure` objects made without ``pyplot``: saving one to PNG
goes through matplotlib's Agg renderer whatever backend is selected, so the library never calls
``matplotlib.use`` and never changes the backend of a user's notebook or GUI session.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onepixel.errors import OnepixelError

#: Dots per inch of every figure, on screen and in the PNG files.
DPI = 100
#: matplotlib rcParams of every figure (applied while it is drawn).
STYLE: dict[str, Any] = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.titlesize": 12,
    "legend.fontsize": 8, "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "savefig.facecolor": "white", "figure.facecolor": "white",
}


def matplotlib_modules() -> tuple[Any, type]:
    """``(matplotlib, Figure)``, imported on first use (matplotlib is the optional ``analysis`` extra).

    Raises
    ------
    OnepixelError
        matplotlib is not installed; the message names the extra to install.
    """
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise OnepixelError("figures need matplotlib: pip install 'onepixel[analysis]' "
                            "(or ask for no figures)") from exc
    return matplotlib, Figure


@contextmanager
def styled() -> Iterator[None]:
    """Apply :data:`STYLE` while the body draws (rcParams are read when artists are made)."""
    matplotlib, _ = matplotlib_modules()
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Any:
    """An empty :class:`~matplotlib.figure.Figure` of ``width`` x ``height`` inches at :data:`DPI`,
    constrained layout. Draw it inside :func:`styled` to get the shared style."""
    _, Figure = matplotlib_modules()
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


@contextmanager
def figure(width: float, height: float) -> Iterator[Any]:
    """``with figure(w, h) as fig:`` a :func:`new_figure` drawn and saved in the shared style."""
    with styled():
        yield new_figure(width, height)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes at :data:`DPI`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_png(fig: Any, path: str | Path) -> None:
    """Write the figure to ``path`` as a PNG at :data:`DPI` (the caller makes the folder)."""
    fig.savefig(path, format="png", dpi=DPI)
