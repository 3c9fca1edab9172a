"""Figures, ``RUN/analysis`` and the self-contained HTML report, built from a RUN's files only.

Entry points (the CLI's ``onepixel analyze RUN`` and ``onepixel report RUN``):

- :func:`analyze_run` ``(run_dir) -> AnalysisResult``: every table as CSV and Markdown and every
  figure as PNG under ``RUN/analysis``;
- :func:`format_main_tables` ``(result) -> str``: the main tables as plain text;
- :func:`write_report` ``(run_dir) -> Path``: ``RUN/report.html``, analysing first when
  ``RUN/analysis`` is missing or stale.
"""

from onepixel.report.analyze import (
    AnalysisResult,
    RunFacts,
    analyze_run,
    format_main_tables,
    is_stale,
    load_analysis,
)
from onepixel.report.figures import FigureInfo
from onepixel.report.html import render_report, write_report

__all__ = ["AnalysisResult", "FigureInfo", "RunFacts", "analyze_run", "format_main_tables", "is_stale",
           "load_analysis", "render_report", "write_report"]
