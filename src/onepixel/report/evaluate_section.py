"""The report section "Robust accuracy under one-pixel attack" from an ``onepixel evaluate``
folder: the headline, a table per method (attacked, broken, median queries per success) and the
success-against-queries figure the evaluation drew from its rows."""

from __future__ import annotations

import math
from pathlib import Path

from onepixel.analysis import Note, Table
from onepixel.evaluation.config import CURVES_PNG
from onepixel.evaluation.runner import read_evaluation
from onepixel.report.sections import ExtraFigure, ExtraSection


def evaluation_section(folder: str | Path) -> ExtraSection:
    """The section from ``DIR/evaluation.json``, ``evaluation.csv`` and ``curves.png``.

    Raises
    ------
    RunError
        evaluation.json or evaluation.csv missing or malformed (the message names the folder).
    """
    folder = Path(folder)
    summary, rows = read_evaluation(folder)
    per = summary.get("per_method", {})
    table_rows = tuple(
        (method, "yes" if m.get("ran") else "no (nothing left or over budget)",
         int(m.get("attacked", 0)), int(m.get("broken", 0)),
         float(m["median_queries"]) if m.get("median_queries") is not None else math.nan)
        for method, m in per.items())
    counts = {s: sum(r["status"] == s for r in rows) for s in ("broken", "robust", "skipped")}
    predicted = summary.get("labels") == "predicted"
    reading = (f"{summary['headline']}. Each method ran only on the images the ones before it "
               "left robust, so a later method's count is what the earlier ones missed."
               + (" The images had no labels: each was attacked away from the model's own "
                  "prediction (evaluation.csv's label), so this measures how stable the "
                  "predictions are, not how accurate." if predicted else ""))
    table = Table("evaluation", "The ensemble, method by method", "evaluation",
                  ("Method", "Ran", "Attacked", "Broken", "Median queries per success"),
                  table_rows, ("", "", "d", "d", ",.0f"),
                  caption=f"From `{folder}` (evaluation.json; {counts['broken']} broken, "
                          f"{counts['robust']} robust and {counts['skipped']} skipped rows in "
                          "evaluation.csv).",
                  reading=reading)
    figures, notes = [], []
    png = folder / CURVES_PNG
    if png.is_file():
        figures.append(ExtraFigure(
            "evaluation_curves", "Images broken against queries per image", png.read_bytes(),
            caption="Per method, the share of the images it attacked that it broke within a "
                    "query budget; 'ensemble': all methods in turn, their queries added.",
            reading=reading))
    else:
        notes.append(Note("evaluation", f"No curves figure: {png} is missing."))
    title = ("Prediction stability under one-pixel attack (unlabelled images)" if predicted
             else "Robust accuracy under one-pixel attack")
    return ExtraSection("evaluation", title,
                        "A fixed ensemble per image: random search (rs), the papers' DE, then the "
                        "exhaustive corner scan with refinement, each only on the images still "
                        "robust (`onepixel evaluate`, docs/evaluate.md).",
                        (table,), tuple(figures), tuple(notes))
