"""The report section "How strong was the attack?" from an ``onepixel audit`` folder.

Read from files only (``audit.csv`` with ``attacks.csv``) when the report is written, not stored
in ``RUN/analysis``: an audit can be made or grown after the analysis without making it stale. A
RUN without one gets the report it always had.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.analysis import Note, Table
from onepixel.audit.store import AUDIT_CSV, SETTINGS_JSON, VULNERABLE, AuditRow
from onepixel.errors import OnepixelError, RunError
from onepixel.plotting import figure, png_bytes
from onepixel.report.figures import frame, short_name
from onepixel.report.sections import ExtraFigure, ExtraSection
from onepixel.runs.reader import load_run_config, read_attacks_csv
from onepixel.runs.schema import ATTACKS, image_path, lowers_score

log = logging.getLogger(__name__)

#: The default audit folder of a RUN (``onepixel audit RUN --out RUN/audit``).
RUN_AUDIT_DIR = "audit"
#: Most early-converged vulnerable images drawn with their flipping pixel.
MAX_FLIP_PANELS = 6


# --------------------------------------------------------------------------- audit


def read_audit_rows(audit_dir: str | Path) -> list[AuditRow]:
    """``DIR/audit.csv`` as :class:`~onepixel.audit.store.AuditRow` objects.

    Raises
    ------
    RunError
        The file is missing or malformed (the message names it).
    """
    path = Path(audit_dir) / AUDIT_CSV
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [AuditRow.from_csv(r) for r in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise RunError(f"cannot read {path} ({exc}); give the folder an audit "
                       f"(`onepixel audit`, audit_run) wrote, or run the audit again") from exc


def gap(goal: str, de_score: float, audit_score: float) -> float:
    """How much further towards the goal the audit got than DE (>= 0 when the audit is better):
    ``de - audit`` for ``decrease``, ``audit - de`` for ``increase``."""
    return de_score - audit_score if lowers_score(goal) else audit_score - de_score


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _pct(k: int, n: int) -> float:
    return 100.0 * k / n if n else math.nan


@dataclass(frozen=True)
class _Audited:
    """An audit row joined with its RUN row (direction and DE's queries, ``nfev``)."""

    row: AuditRow
    direction: str
    de_queries: int


def _join(rows: list[AuditRow], run_dir: Path, audit_dir: Path) -> tuple[list[_Audited], list[Note]]:
    table = read_attacks_csv(run_dir / ATTACKS)
    index = {str(name): i for i, name in enumerate(table.image)}
    notes = []
    joined, unknown = [], []
    for r in rows:
        i = index.get(r.image)
        if i is None:
            unknown.append(r.image)
            continue
        joined.append(_Audited(r, str(table.direction[i]), int(table.nfev[i])))
    if unknown:
        notes.append(Note("audit", f"{len(unknown)} image(s) of `{audit_dir / AUDIT_CSV}` are not in "
                                   f"this RUN's attacks.csv and are left out (first: {unknown[0]})."))
    try:
        settings = json.loads((audit_dir / SETTINGS_JSON).read_text(encoding="utf-8"))
        if settings.get("run") and Path(settings["run"]) != run_dir.resolve():
            notes.append(Note("audit", f"The audit was made for the RUN `{settings['run']}`; it is "
                                       "shown for the images the two share."))
        if settings.get("step"):
            notes.append(Note("audit", f"Audit settings: colour step {settings['step']} in the "
                                       f"scan, refinement from the {settings.get('top', '?')} best "
                                       f"scan pixels and DE's own, at most "
                                       f"{settings.get('rounds', '?')} rounds."))
    except (OSError, ValueError):
        pass  # settings are shown when present; the rows are what the section needs
    return joined, notes


def audit_tables(joined: list[_Audited]) -> tuple[Table, Table]:
    """The per-direction comparison and the early-converged images re-examined."""
    directions = list(dict.fromkeys(a.direction for a in joined))
    rows = []
    readings = []
    for direction in directions:
        group = [a for a in joined if a.direction == direction]
        n = len(group)
        goal = group[0].row.goal
        de_ok = sum(a.row.de_success for a in group)
        vul = sum(a.row.status == VULNERABLE for a in group)
        beyond = sum(a.row.status == VULNERABLE and not a.row.de_success for a in group)
        early = [a for a in group if a.row.de_early_converged]
        early_vul = sum(a.row.status == VULNERABLE for a in early)
        gaps = [gap(goal, a.row.de_score, a.row.best_score) for a in group]
        de_q = _median([float(a.de_queries) for a in group])
        au_q = _median([float(a.row.queries) for a in group])
        rows.append((direction, n, de_ok, _pct(de_ok, n), vul, _pct(vul, n), beyond, len(early), early_vul,
                     _median([a.row.de_score for a in group]), _median([a.row.best_score for a in group]),
                     _median(gaps), max(gaps), de_q, au_q))
        readings.append(
            f"{direction}: DE flipped {de_ok} of {n} audited images ({_pct(de_ok, n):.0f}%), the audit "
            f"{vul} ({_pct(vul, n):.0f}%)" + (f", {beyond} of them where DE failed" if beyond else "")
            + (f"; {early_vul} of {len(early)} early-converged are in fact vulnerable" if early else "")
            + f"; at a median {au_q:,.0f} queries per image against DE's {de_q:,.0f}.")
    strength = Table(
        "audit_strength", "DE against the audit, per direction", "audit",
        ("Direction", "Audited", "DE success", "DE %", "Audit vulnerable", "Audit %",
         "Vulnerable where DE failed", "Early-converged", "Early-converged vulnerable",
         "Median DE score", "Median audit score", "Median gap", "Largest gap", "Median DE queries",
         "Median audit queries"),
        tuple(rows), ("", "d", "d", ".1f", "d", ".1f", "d", "d", "d", ".4f", ".4f", ".4f", ".4f", ",.0f",
                      ",.0f"),
        caption="Per direction, the audited images (`audit.csv`): DE's success (`de_success`) and the "
                "audit's (`status` vulnerable: a pixel re-scored across the threshold, or, for K-class "
                "goals, to the class the goal asks for). Gap: how much "
                "further towards the goal the audit's best score is than DE's (positive: the audit is "
                "stronger). Queries: DE's `nfev` (attacks.csv) and the audit's `queries` (scan, "
                "refinement, exact positions and re-scoring). `not-found` is evidence, not proof.",
        reading=" ".join(readings))
    early_rows = []
    for a in joined:
        if not a.row.de_early_converged:
            continue
        r = a.row
        early_rows.append((r.image, a.direction, r.de_score, r.best_score, r.status, f"({r.x}, {r.y})",
                           "#{:02x}{:02x}{:02x}".format(*r.rgb), a.de_queries, r.queries))
    early_rows.sort(key=lambda t: (t[1], t[4] != VULNERABLE, t[0]))
    n_vul = sum(t[4] == VULNERABLE for t in early_rows)
    early = Table(
        "audit_early_converged", "Early-converged attacks re-examined", "audit",
        ("Image", "Direction", "DE score", "Audit score", "Status", "Pixel (x, y)", "Hex", "DE queries",
         "Audit queries"),
        tuple(early_rows), ("", "", ".4f", ".4f", "", "", "", ",d", ",d"),
        caption="The images whose DE converged early (counted as failed in the papers), with the "
                "audit's best pixel; vulnerable ones first.",
        reading=(f"{n_vul} of {len(early_rows)} early-converged images are in fact vulnerable: a single "
                 f"pixel flips them where DE gave up." if early_rows else
                 "No audited image converged early."))
    return strength, early


def flip_panels(joined: list[_Audited], dataset: Path | None,
                k: int = MAX_FLIP_PANELS) -> ExtraFigure | None:
    """Original | flipped image pairs of the early-converged images the audit found vulnerable,
    the audit's pixel circled (as the example figures); None when there are none or the dataset
    is not reachable."""
    chosen = [a for a in joined if a.row.de_early_converged and a.row.status == VULNERABLE]
    chosen.sort(key=lambda a: -gap(a.row.goal, a.row.de_score, a.row.best_score))
    if not chosen or dataset is None:
        return None
    from onepixel.datasets.images import load_image

    shown = []
    for a in chosen[:k]:
        try:
            shown.append((a, load_image(image_path(dataset, a.row.image))))
        except OnepixelError as exc:
            log.warning("audit figure: %s", exc)
    if not shown:
        return None
    from matplotlib.patches import Circle

    with figure(6.4, 3.15 * len(shown) + 0.3) as fig:
        axes = fig.subplots(len(shown), 2, squeeze=False)
        for (ax_o, ax_a), (a, img) in zip(axes, shown, strict=True):
            r = a.row
            flipped = img.copy()
            flipped[r.y, r.x] = r.rgb
            for ax, im in ((ax_o, img), (ax_a, flipped)):
                ax.imshow(im, interpolation="nearest")
                ax.add_patch(Circle((r.x, r.y), radius=max(img.shape[:2]) / 16, fill=False, lw=1.8,
                                    ls="--" if ax is ax_o else "-", ec="#00e5ff"))
                ax.set_xticks([])
                ax.set_yticks([])
                frame(ax)
            name = short_name(r.image, 36)
            ax_o.set_title(f"Original; DE (early-converged) {r.de_score:.4f}\n{name}", fontsize=9)
            ax_a.set_title(f"Audit's pixel, score {r.best_score:.4f}\nRGB {r.rgb} at (x={r.x}, y={r.y})",
                           fontsize=9)
        fig.suptitle("Early-converged, in fact vulnerable")
        png = png_bytes(fig)
    first = shown[0][0].row
    return ExtraFigure(
        "audit_flips", "Early-converged attacks that one pixel does flip", png,
        caption=f"The {len(shown)} early-converged image(s) the audit found vulnerable with the "
                f"largest gap to DE (of {len(chosen)}). Left: original image, the circle marks where "
                f"the audit's pixel goes; right: with that pixel.",
        reading=f"{first.image}: DE stopped at {first.de_score:.4f}; the pixel RGB {first.rgb} at "
                f"(x={first.x}, y={first.y}) takes it to {first.best_score:.4f}.")


def score_scatter(joined: list[_Audited]) -> ExtraFigure:
    """DE's best score (x) against the audit's (y), one point per image, by direction."""
    with figure(5.6, 4.4) as fig:
        ax = fig.add_subplot()
        for direction in dict.fromkeys(a.direction for a in joined):
            group = [a for a in joined if a.direction == direction]
            ax.scatter([a.row.de_score for a in group], [a.row.best_score for a in group], s=22,
                       label=direction, alpha=0.8)
        ax.plot([0, 1], [0, 1], color="#888888", lw=1, ls=":")
        ax.axhline(0.5, color="#d62728", lw=0.8, ls="--")
        ax.axvline(0.5, color="#d62728", lw=0.8, ls="--")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("DE's best score (attacks.csv)")
        ax.set_ylabel("audit's best score (audit.csv)")
        ax.legend(loc="best")
        png = png_bytes(fig)
    better = sum(gap(a.row.goal, a.row.de_score, a.row.best_score) > 1e-6 for a in joined)
    return ExtraFigure(
        "audit_scores", "DE's best score against the audit's", png,
        caption="One point per audited image; dotted: equal scores; dashed: the 0.5 threshold (of binary "
                "goals; K-class goals are judged by the predicted class). Points below the diagonal are "
                "lower after the audit (better for decrease and untargeted), above it higher (better for "
                "increase and targeted).",
        reading=f"The audit found a pixel strictly better than DE's on {better} of {len(joined)} images.")


def audit_section(run_dir: str | Path, audit_dir: str | Path, *, figures: bool = True) -> ExtraSection:
    """The report section "How strong was the attack?" from ``audit_dir/audit.csv`` and the RUN.

    Parameters
    ----------
    run_dir : path
        The RUN (``attacks.csv`` gives each image's direction and DE's queries, ``nfev``;
        ``config.json`` the dataset, for the flipped images).
    audit_dir : path
        The folder ``onepixel audit RUN --out DIR`` wrote.
    figures : bool
        Draw the figures (matplotlib).

    Raises
    ------
    RunError
        ``audit.csv`` or ``attacks.csv`` missing or malformed.
    """
    run_dir, audit_dir = Path(run_dir), Path(audit_dir)
    joined, notes = _join(read_audit_rows(audit_dir), run_dir, audit_dir)
    intro = ("Differential evolution is a heuristic: a failed attack does not show the image is robust. "
             f"`onepixel audit` searched the RUN's images much harder (folder `{audit_dir}`): an "
             "exhaustive coarse scan of every position, integer refinement around the best pixels and "
             "DE's own, each reported pixel re-scored. `vulnerable` is proven; `not-found` is evidence, "
             "not proof (docs/audit.md).")
    if not joined:
        return ExtraSection("audit", "How strong was the attack?", intro,
                            notes=(*notes, Note("audit", "The audit has no rows for this RUN's images.")))
    strength, early = audit_tables(joined)
    figs: list[ExtraFigure] = []
    if figures:
        figs.append(score_scatter(joined))
        try:
            dataset = load_run_config(run_dir).dataset
        except RunError:
            dataset = None
        flips = flip_panels(joined, dataset)
        if flips is not None:
            figs.append(flips)
        elif any(a.row.de_early_converged and a.row.status == VULNERABLE for a in joined):
            notes.append(Note("audit", "The flipped early-converged images are not drawn: the RUN's "
                                       "dataset folder is not reachable."))
    return ExtraSection("audit", "How strong was the attack?", intro, (strength, early), tuple(figs),
                        tuple(notes))


def default_audit_dir(run_dir: str | Path) -> Path | None:
    """``RUN/audit`` when it holds an ``audit.csv``, else None."""
    folder = Path(run_dir) / RUN_AUDIT_DIR
    return folder if (folder / AUDIT_CSV).is_file() else None


def audit_verdict(run_dir: str | Path, audit_dir: str | Path) -> str:
    """What the audit found for the images DE did not break: ``"the audit (DIR) found a flipping
    pixel for 2 of the 3 audited images DE did not break"``; ``""`` when it audited none of them.

    Raises
    ------
    RunError
        ``audit.csv`` or ``attacks.csv`` missing or malformed.
    """
    joined, _ = _join(read_audit_rows(audit_dir), Path(run_dir), Path(audit_dir))
    failed = [a for a in joined if not a.row.de_success]
    if not failed:
        return ""
    flipped = sum(a.row.status == VULNERABLE for a in failed)
    return (f"the audit (`{audit_dir}`) found a flipping pixel for {flipped} of the {len(failed)} "
            f"audited images DE did not break"
            + ("" if flipped else " (not found is evidence, not proof)"))
