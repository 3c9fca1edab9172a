"""The report section "Defences" from an ``onepixel robustness`` folder.

Read from files only (``robustness.csv`` and its figure) when the report is written, not stored
in ``RUN/analysis``: a robustness folder can be made or grown after the analysis without making
it stale.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from onepixel.analysis import Note, Table
from onepixel.errors import RunError
from onepixel.report.sections import ExtraFigure, ExtraSection

#: ``onepixel robustness`` file names (onepixel.robustness.runner; not imported: it loads torch).
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_PNG = "robustness.png"

_ROBUSTNESS_SHOWN = (
    ("defence", "Defence", ""), ("images", "Images", "d"),
    ("clean_mean_abs_change", "Clean mean |change|", ".4f"),
    ("clean_max_abs_change", "Clean max |change|", ".4f"),
    ("label_agreement", "Label agreement %", ".1f"), ("accuracy", "Accuracy %", ".1f"),
    ("attacked", "Attacked", "d"), ("success_rate", "Attack success %", ".1f"),
    ("strong_success_rate", "Strong success %", ".1f"),
    ("median_score_change", "Median |score change|", ".4f"),
    ("median_queries", "Median queries", ",.0f"), ("even_even_share", "Even-even pixels %", ".1f"),
    ("audit_success_rate", "Audit vulnerable %", ".1f"))
_PERCENT = {"label_agreement", "accuracy", "success_rate", "strong_success_rate", "even_even_share",
            "audit_success_rate"}


def _number(text: str, column: str) -> float | int:
    if text == "":
        return math.nan
    if column in ("images", "attacked"):
        return int(text)
    value = float(text)
    return 100.0 * value if column in _PERCENT else value


def robustness_section(robustness_dir: str | Path) -> ExtraSection:
    """The report section "Defences" from ``DIR/robustness.csv`` and ``DIR/robustness.png``.

    Raises
    ------
    RunError
        ``robustness.csv`` missing or malformed (the message names it).
    """
    folder = Path(robustness_dir)
    path = folder / ROBUSTNESS_CSV
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        rows = tuple(tuple(r[c] if c == "defence" else _number(r[c], c) for c, _, _ in _ROBUSTNESS_SHOWN)
                     for r in records)
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise RunError(f"cannot read {path} ({exc}); give the folder `onepixel robustness` "
                       f"(run_robustness) wrote") from exc
    j = {c: i for i, (c, _, _) in enumerate(_ROBUSTNESS_SHOWN)}
    attacked = [r for r in rows if not math.isnan(r[j["success_rate"]])]
    reading = ""
    if attacked:
        best = min(attacked, key=lambda r: (r[j["success_rate"]], r[j["clean_mean_abs_change"]]))
        base = next((r for r in attacked if r[0] == "none"), None)
        reading = (f"Lowest attack success: {best[0]} ({best[j['success_rate']]:.1f}% of "
                   f"{best[j['attacked']]} attacked images) at a clean cost of "
                   f"{best[j['clean_mean_abs_change']]:.4f} mean |score change| and "
                   f"{best[j['label_agreement']]:.1f}% label agreement")
        reading += (f", against {base[j['success_rate']]:.1f}% undefended." if base is not None and
                    base is not best else ".")
    table = Table("robustness", "Defences: clean cost and the attack through each", "defences",
                  tuple(h for _, h, _ in _ROBUSTNESS_SHOWN), rows, tuple(f for _, _, f in _ROBUSTNESS_SHOWN),
                  caption=f"From `{path}`. Clean cost: the defended model against the undefended one on "
                          "the clean images; the attack: a campaign through the defence (the black box "
                          "the attack queries). Audit: where `RUN/audit` exists for a defence's campaign.",
                  reading=reading)
    figs, notes = [], []
    png = folder / ROBUSTNESS_PNG
    if png.is_file():
        figs.append(ExtraFigure("robustness_tradeoff", "Clean cost against attack success", png.read_bytes(),
                                caption="One point per defence (red: none). Left and low is better.",
                                reading=reading))
    else:
        notes.append(Note("defences", f"No trade-off figure: {png} is missing."))
    return ExtraSection("defences", "Defences",
                        "What each defence costs on clean images and how much of the attack it stops "
                        "(`onepixel robustness`, docs/defences.md).", (table,), tuple(figs), tuple(notes))
