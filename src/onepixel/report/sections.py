"""The types of the report sections read from folders beside the RUN (audit, defences, Pareto).

Those sections are built from files when the report is written, not stored in ``RUN/analysis``;
their figures are PNG bytes (:class:`ExtraFigure`), not files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onepixel.analysis import Note, Table


@dataclass(frozen=True)
class ExtraFigure:
    """A figure drawn (or read) at report time: PNG bytes, not a file under ``RUN/analysis``."""

    name: str
    title: str
    png: bytes
    caption: str = ""
    reading: str = ""


@dataclass(frozen=True)
class ExtraSection:
    """A report section built from files outside ``RUN/analysis``.

    Attributes
    ----------
    key, heading, intro : str
        Anchor, heading and the line under it.
    tables : tuple of Table
    figures : tuple of ExtraFigure
    notes : tuple of Note
    """

    key: str
    heading: str
    intro: str
    tables: tuple[Table, ...] = ()
    figures: tuple[ExtraFigure, ...] = ()
    notes: tuple[Note, ...] = field(default=())
