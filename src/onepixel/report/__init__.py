"""Figures, ``RUN/analysis`` and the self-contained HTML report, built from a RUN's files only.

Entry points (the CLI's ``onepixel analyze RUN`` and ``onepixel report RUN``):

- :func:`analyze_run` ``(run_dir) -> AnalysisResult``: every table as CSV and Markdown and every
  figure as PNG under ``RUN/analysis``;
- :func:`format_main_tables` ``(result) -> str``: the main tables as plain text;
- :func:`write_report` ``(run_dir) -> Path``: ``RUN/report.html``, analysing first when
  ``RUN/analysis`` is missing or stale.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "AnalysisResult": "onepixel.report.analyze",
    "analyze_run": "onepixel.report.analyze",
    "FigureInfo": "onepixel.report.figures",
    "format_main_tables": "onepixel.report.analyze",
    "is_stale": "onepixel.report.analyze",
    "load_analysis": "onepixel.report.analyze",
    "render_report": "onepixel.report.html",
    "RunFacts": "onepixel.report.analyze",
    "write_report": "onepixel.report.html",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
