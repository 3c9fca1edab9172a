"""The report section "How visible must the pixel be?" from an ``onepixel pareto`` folder.

Read from files only when the report is written (like the audit and the defences,
:mod:`onepixel.report.audit_section`): ``summary.json`` (per image the goal, original score, best
score and its h, the lowest h that flips it; the detector's shares; the comparison with a
campaign), ``budget_curve.csv`` (or, without it, e.g. for one image, summary.json's
``budget_curve``) and ``front.csv`` (the fronts, drawn next to the budget curve).

The file names and columns come from :mod:`onepixel.pareto.config`, a light module (the
runner and the curve load torch through the scoring engines, which the report never needs).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from onepixel.analysis import Note, Table
from onepixel.errors import RunError
from onepixel.pareto.config import CURVE as PARETO_CURVE
from onepixel.pareto.config import CURVE_COLUMNS, FRONT_CLASS_COLUMN, FRONT_COLUMNS
from onepixel.pareto.config import FRONT as PARETO_FRONT
from onepixel.pareto.config import SUMMARY as PARETO_SUMMARY
from onepixel.plotting import figure, png_bytes
from onepixel.report.audit_section import gap
from onepixel.report.sections import ExtraFigure, ExtraSection
from onepixel.runs.schema import lowers_score

#: The default pareto folder of a RUN (``onepixel pareto ... --out RUN/pareto``).
RUN_PARETO_DIR = "pareto"
#: Most fronts drawn in the figure (a dataset's hundreds of lines would be unreadable).
MAX_FRONTS_DRAWN = 24

_HEADING = "How visible must the pixel be?"


@dataclass(frozen=True)
class ParetoFolder:
    """What the section shows, read and checked.

    Attributes
    ----------
    folder : Path
    summary : dict
        ``summary.json``.
    images : tuple of dict
        ``summary["images"]``, each with the keys the section reads.
    curve : tuple of tuple
        ``(budget, images, success, success_rate, strong, strong_rate)`` per budget, numbers.
    curve_source : str
        Where the curve was read: ``budget_curve.csv`` or ``summary.json``.
    fronts : dict of str to tuple of (h, score)
        Per image, its front points from ``front.csv``, by increasing h.
    """

    folder: Path
    summary: dict
    images: tuple[dict, ...]
    curve: tuple[tuple[float, int, int, float, int, float], ...]
    curve_source: str
    fronts: dict


_IMAGE_KEYS = ("image", "goal", "original_score", "best_score", "best_h", "lowest_flip_h",
               "lowest_strong_flip_h")


def _fail(path: Path, why: object) -> RunError:
    return RunError(f"cannot read {path} ({why}); give the folder `onepixel pareto ... --out "
                         f"DIR` wrote, or run it again")


def _optional(value: object) -> float:
    """A number that may be null (nan then, shown as a dash)."""
    return math.nan if value is None else float(value)


def _multiclass(p: ParetoFolder) -> bool:
    """Whether the fronts are of a K-class model (success: the predicted class, not 0.5)."""
    return bool(p.summary.get("classes"))


#: What success means in captions, for binary and for K-class fronts.
_FLIP = {False: "past the success threshold (0.5) towards its goal; strong: past 0.05 "
                "(decrease) or 0.95 (increase).",
         True: "that succeeds (judged per point: the model predicts another class than the true "
               "one, untargeted, or the target, targeted); strong: p[true] < 0.05 or "
               "p[target] > 0.95."}


def _curve_row(record: dict) -> tuple[float, int, int, float, int, float]:
    return (float(record["budget"]), int(record["images"]), int(record["success"]),
            float(record["success_rate"]), int(record["strong"]), float(record["strong_rate"]))


def read_pareto(pareto_dir: str | Path) -> ParetoFolder:
    """Read and check an ``onepixel pareto`` folder.

    Raises
    ------
    RunError
        ``summary.json``, ``front.csv`` or ``budget_curve.csv`` missing (the first two) or
        malformed; the message names the file.
    """
    folder = Path(pareto_dir)
    path = folder / PARETO_SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict) or not isinstance(summary.get("images"), list):
            raise ValueError("no 'images' list")
        images = []
        for entry in summary["images"]:
            missing = [k for k in _IMAGE_KEYS if k not in entry]
            if missing:
                raise KeyError(f"an image entry lacks {', '.join(missing)}")
            # Checked here so that rendering never meets a string where a number belongs.
            float(entry["original_score"])
            for k in ("best_score", "best_h", "lowest_flip_h", "lowest_strong_flip_h"):
                _optional(entry[k])
            images.append(entry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _fail(path, exc) from exc

    path = folder / PARETO_FRONT
    fronts: dict[str, list[tuple[float, float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            # K-class runs add the attacked class at the end.
            if tuple(reader.fieldnames or ()) not in (FRONT_COLUMNS,
                                                      (*FRONT_COLUMNS, FRONT_CLASS_COLUMN)):
                raise ValueError(f"columns {reader.fieldnames}, expected {', '.join(FRONT_COLUMNS)}")
            for r in reader:
                fronts.setdefault(r["image"], []).append((float(r["h"]), float(r["score"])))
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise _fail(path, exc) from exc

    path = folder / PARETO_CURVE
    try:
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != CURVE_COLUMNS:
                    raise ValueError(f"columns {reader.fieldnames}, expected "
                                     f"{', '.join(CURVE_COLUMNS)}")
                curve, source = tuple(_curve_row(r) for r in reader), PARETO_CURVE
        else:
            # One image: run_pareto writes no CSV, but summary.json always has the curve.
            path = folder / PARETO_SUMMARY
            curve = tuple(_curve_row(r) for r in summary.get("budget_curve") or ())
            source = PARETO_SUMMARY
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise _fail(path, exc) from exc
    return ParetoFolder(folder, summary, tuple(images), curve, source,
                        {k: tuple(sorted(v)) for k, v in fronts.items()})


def default_pareto_dir(run_dir: str | Path) -> Path | None:
    """``RUN/pareto`` when it holds ``summary.json`` and ``front.csv``, else None."""
    folder = Path(run_dir) / RUN_PARETO_DIR
    return folder if (folder / PARETO_SUMMARY).is_file() and (folder / PARETO_FRONT).is_file() \
        else None


# --------------------------------------------------------------------------- tables


def curve_table(p: ParetoFolder) -> Table:
    """The budget curve: per budget H, the images flipped (strongly) by a front point with h <= H."""
    rows = tuple((b, n, s, 100.0 * sr, t, 100.0 * tr) for b, n, s, sr, t, tr in p.curve)
    reading = ""
    if rows:
        n = rows[-1][1]
        first = next((r for r in rows if r[2] > 0), None)
        top = rows[-1]
        if first is None:
            reading = (f"No front point flips any of the {n} images within any budget up to "
                       f"H = {top[0]:.2f}.")
        else:
            reading = (f"No image flips within H < {first[0]:.2f}; {first[2]} of {n} "
                       f"({first[3]:.1f}%) from H = {first[0]:.2f}; at H = {top[0]:.2f}, {top[2]} "
                       f"of {n} ({top[3]:.1f}%) flip, {top[4]} strongly ({top[5]:.1f}%).")
    return Table("stealth_budget_curve", "Success against the colour budget H", "stealth",
                 ("Budget H", "Images", "Success", "Success %", "Strong", "Strong %"), rows,
                 (".2f", "d", "d", ".1f", "d", ".1f"),
                 caption=f"From `{p.folder / p.curve_source}`. An image counts as flipped within H "
                         f"when its front has a point with h <= H {_FLIP[_multiclass(p)]}",
                 reading=reading)


def image_table(p: ParetoFolder) -> Table:
    """Per image: goal, original score, the front's best score and its h, the lowest flipping h."""
    rows = tuple((im["image"], im["goal"], float(im["original_score"]), _optional(im["best_score"]),
                  _optional(im["best_h"]), _optional(im["lowest_flip_h"]),
                  _optional(im["lowest_strong_flip_h"]),
                  int(im.get("front_size", len(p.fronts.get(im["image"], ())))))
                 for im in p.images)
    flipped = [r for r in rows if not math.isnan(r[5])]
    reading = (f"{len(flipped)} of {len(rows)} images flip at some h; the stealthiest flip is at "
               f"h = {min(r[5] for r in flipped):.3f} ({min(flipped, key=lambda r: r[5])[0]})."
               if flipped else f"None of the {len(rows)} images flips at any h in this search.")
    return Table("stealth_images", "Each image's front", "stealth",
                 ("Image", "Goal", "Original score", "Best score", "h of best",
                  "Lowest flipping h", "Lowest strong-flip h", "Front points"), rows,
                 ("", "", ".4g", ".4g", ".3f", ".3f", ".3f", "d"),
                 caption=f"From `{p.folder / PARETO_SUMMARY}`. Best score: the front's point "
                         "furthest towards the goal; lowest flipping h: the least visible front "
                         + ("point that succeeds (a dash: none does)." if _multiclass(p) else
                            "point that crosses 0.5 (a dash: none does)."),
                 reading=reading)


def _share(value: object) -> float:
    return math.nan if value is None else 100.0 * float(value)


def detector_table(p: ParetoFolder) -> Table | None:
    """The detector's shares (summary.json ``detector``), or None when it was not run."""
    det = p.summary.get("detector")
    if not isinstance(det, dict):
        return None
    rows = (("Successful front points", int(det.get("successful_points", 0)),
             _share(det.get("successful_points_flagged"))),
            ("Stealthiest successful point per image", int(det.get("images_with_success", 0)),
             _share(det.get("stealthiest_success_flagged"))),
            ("Original images", len(p.images), _share(det.get("originals_flagged"))))
    cal = det.get("calibration") or {}
    how = ", ".join(f"{k} {cal[k]:.4g}" if isinstance(cal[k], float) else f"{k} {cal[k]}"
                    for k in ("statistic", "threshold", "target_fpr") if k in cal)
    reading = ""
    if rows[1][1]:
        reading = (f"The detector flags {rows[1][2]:.0f}% of the {rows[1][1]} images' stealthiest "
                   f"successful pixels and {rows[2][2]:.0f}% of the originals.")
    return Table("stealth_detector", "The detector on the successful front points", "stealth",
                 ("Attacked images", "Count", "Flagged %"), rows, ("", "d", ".1f"),
                 caption="The isolated-anomalous-pixel detector (docs/defences.md) on the attacked "
                         "image of every successful front point, of each image's lowest-h "
                         "successful point, and on the originals" + (f" ({how})." if how else "."),
                 reading=reading)


def campaign_table(p: ParetoFolder) -> tuple[Table | None, list[Note]]:
    """The front's lowest-score end against a campaign's pixel (summary.json ``campaign``)."""
    ref = p.summary.get("campaign")
    if not isinstance(ref, dict):
        return None, []
    goals = {im["image"]: im["goal"] for im in p.images}
    rows = []
    for e in ref.get("images") or ():
        if not isinstance(e, dict) or "campaign_score" not in e or "front_best_score" not in e:
            continue
        goal = goals.get(e.get("image"), "decrease")
        cs, fs = float(e["campaign_score"]), float(e["front_best_score"])
        rows.append((str(e.get("image", "")), goal, cs, _optional(e.get("campaign_h")), fs,
                     _optional(e.get("front_best_h")), gap(goal, cs, fs)))
    better = sum(r[6] >= -1e-6 for r in rows)
    seeded = " (the campaign's pixel seeded each search)" if ref.get("seeded") else ""
    table = Table(
        "stealth_campaign", "The front's best against the campaign's pixel", "stealth",
        ("Image", "Goal", "Campaign score", "Campaign h", "Front best score", "Front best h",
         "Gap"), tuple(rows), ("", "", ".4g", ".3f", ".4g", ".3f", ".4f"),
        caption=f"The campaign RUN `{ref.get('run', '?')}`{seeded}: its pixel re-scored, against "
                "the front's point furthest towards the goal. Gap: how much further the front "
                "got (>= 0: at least as good).",
        reading=(f"The front is at least as good as the campaign on {better} of {len(rows)} "
                 f"images." if rows else "No image of the front was attacked in the campaign."))
    notes = []
    missing = ref.get("not_in_campaign") or []
    if missing:
        notes.append(Note("stealth", f"{len(missing)} image(s) have no attacked row in the "
                                     f"campaign RUN (first: {missing[0]})."))
    return table, notes


# --------------------------------------------------------------------------- figure


def curve_figure(p: ParetoFolder) -> ExtraFigure | None:
    """The budget curve (left) and the fronts (right), drawn now; None without a curve."""
    if not p.curve:
        return None
    names = [im["image"] for im in p.images if im["image"] in p.fronts]
    drawn = names[:MAX_FRONTS_DRAWN]
    goals = {im["image"]: im["goal"] for im in p.images}
    multi = _multiclass(p)
    with figure(10.4, 4.2) as fig:
        ax, ax_f = fig.subplots(1, 2)
        budgets = [r[0] for r in p.curve]
        ax.step(budgets, [r[3] for r in p.curve], where="post", color="#d62728",
                label="success (predicted class)" if multi else "success (past 0.5)")
        ax.step(budgets, [r[5] for r in p.curve], where="post", color="#ff7f0e", ls="--",
                label="strong success (0.05 / 0.95)")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("colour budget H (largest h allowed)")
        ax.set_ylabel(f"share of the {p.curve[0][1]} images flipped")
        ax.legend(loc="upper left")
        for name in drawn:
            h, score = zip(*p.fronts[name], strict=True)
            ax_f.plot(h, score, "o-", ms=3, lw=1, alpha=0.8,
                      color="#1f77b4" if lowers_score(goals.get(name, "decrease")) else "#d62728")
        if not multi:
            ax_f.axhline(0.5, ls="--", lw=1, color="#444444")
        ax_f.set_xlim(0, 1)
        ax_f.set_ylim(-0.02, 1.02)
        ax_f.set_xlabel("h (visibility)")
        ax_f.set_ylabel("p[true] or p[target] of the attacked image" if multi
                        else "score of the attacked image")
        ax_f.set_title("Fronts: blue untargeted, red targeted" if multi
                       else "Fronts: blue decrease, red increase", fontsize=10)
        png = png_bytes(fig)
    more = (f" {len(drawn)} of the {len(names)} fronts are drawn (the first by summary.json's "
            "order)." if len(drawn) < len(names) else "")
    return ExtraFigure(
        "stealth_budget_curve", "How visible must the pixel be?", png,
        caption="Left: the share of images flipped (strongly flipped) within each colour budget H, "
                "from the fronts. Right: each image's front (h against the model's score), from "
                f"`{p.folder / PARETO_FRONT}`"
                + ("; success is the predicted class, not a threshold." if multi
                   else "; dashed: the 0.5 threshold.") + more)


# --------------------------------------------------------------------------- section


def pareto_section(pareto_dir: str | Path, *, figures: bool = True) -> ExtraSection:
    """The report section "How visible must the pixel be?" from an ``onepixel pareto`` folder.

    Parameters
    ----------
    pareto_dir : path
        The folder ``onepixel pareto ... --out DIR`` wrote.
    figures : bool
        Draw the figure (matplotlib).

    Raises
    ------
    RunError
        A file of the folder missing or malformed (the message names it).
    """
    p = read_pareto(pareto_dir)
    search = p.summary.get("search") or {}
    settings = ""
    if search:
        settings = (f" ({search.get('algorithm', 'NSGA-II')}, population "
                    f"{search.get('population', '?')}, {search.get('generations', '?')} "
                    f"generations, seed {search.get('seed', '?')})")
    intro = (f"`onepixel pareto` searched each image's Pareto front{settings}, folder "
             f"`{p.folder}`: the pixels no other beats on both the score towards the goal and the "
             "visibility h (the RMSE in [0, 1] between the colour and the mean of its neighbours "
             "in the original image). From the fronts, the share of images a pixel flips within "
             "each colour budget H (docs/pareto.md). Upper bounds on the lowest flipping h: a "
             "wider search can only lower them.")
    notes = []
    lows = [(float(im["lowest_flip_h"]), im["image"]) for im in p.images
            if im["lowest_flip_h"] is not None]
    strong = [(float(im["lowest_strong_flip_h"]), im["image"]) for im in p.images
              if im["lowest_strong_flip_h"] is not None]
    if lows:
        h, name = min(lows)
        text = (f"Lowest h at which a pixel flips an image: {h:.3f} ({name}); {len(lows)} of "
                f"{len(p.images)} images flip at some h")
        if strong:
            hs, ns = min(strong)
            text += f"; the lowest strong flip is at h = {hs:.3f} ({ns})"
        notes.append(Note("stealth", text + "."))
    else:
        notes.append(Note("stealth", f"No front point flips any of the {len(p.images)} images at "
                                     "any h."))
    skipped = p.summary.get("skipped") or []
    if skipped:
        notes.append(Note("stealth", f"{len(skipped)} image(s) were skipped (misclassified, or "
                                     "already of the target class), as a campaign skips them."
                          if _multiclass(p) else
                          f"{len(skipped)} image(s) of the dataset were skipped as ambiguous (the "
                          "papers' skip rule), as a campaign skips them."))
    tables = [curve_table(p), image_table(p)]
    det = detector_table(p)
    if det is not None:
        tables.append(det)
    camp, camp_notes = campaign_table(p)
    if camp is not None:
        tables.append(camp)
    notes += camp_notes
    figs = []
    if figures:
        fig = curve_figure(p)
        if fig is not None:
            figs.append(fig)
        else:
            notes.append(Note("stealth", f"No budget curve in `{p.folder}`."))
    return ExtraSection("stealth", _HEADING, intro, tuple(tables), tuple(figs), tuple(notes))
