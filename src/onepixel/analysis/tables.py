"""The analysis as tables: CSV, Markdown and plain text, each with a one-sentence reading.

:func:`build_tables` turns a :class:`~onepixel.analysis.compute.RunAnalysis` into
:class:`Table` objects. A table's ``reading`` is computed from its numbers (for example
"Pixels with both coordinates even are 3.9x more common than expected ..."). Every reading that
compares (two groups, or a rate with the expected one) goes through
:class:`onepixel.runs.evidence.Evidence`: it states its sample size and test, and says "too few
to tell" where the test does not support the conclusion.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.analysis.compute import DirectionAnalysis, RunAnalysis, parity_expected
from onepixel.analysis.confmaps import confmap_stats, map_provenance
from onepixel.analysis.stats import SPATIAL_COLUMNS, ColourCount, ScoreStats, colour_name, percent
from onepixel.runs.config import AttackRecord
from onepixel.runs.evidence import compare_rate, compare_rates
from onepixel.runs.schema import lowers_score
from onepixel.runs.summary import skip_categories, skip_category

__all__ = ["Table", "build_tables", "fmt", "goal_probability", "pixel_note", "slug"]

DASH = "–"


def slug(text: str) -> str:
    """A file-name-safe lower-case form of ``text`` (``mitosis-to-normal`` stays as it is)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def fmt(value: Any, spec: str = "") -> str:
    """Format one cell for people: ints with thousands separators (a float ``spec`` does not apply
    to them), floats with ``spec`` (default ``.4g``), ``nan``/None as an en dash."""
    if value is None:
        return DASH
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return format(int(value), spec) if spec in ("d", ",", "x") else f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return DASH
        text = format(float(value), spec or ".4g")
        if text.startswith("-") and float(text) == 0:
            text = text[1:]  # "-0.00" reads as a sign where there is none
        return text
    return str(value)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class Table:
    """One result table.

    Attributes
    ----------
    name : str
        File stem (``scores_mitosis-to-normal``).
    title, caption : str
    section : str
        Report section key (see :data:`onepixel.analysis.compute.SECTIONS`).
    columns : tuple of str
    rows : tuple of tuples
        Cell values: str, int or float (``nan`` for not applicable).
    formats : tuple of str
        Per column format spec for people (``".1f"``); ``""`` picks a default.
    reading : str
        One sentence saying what the table shows, computed from its numbers.
    markdown : bool
        False for large grids (location maps): CSV only.
    """

    name: str
    title: str
    section: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    formats: tuple[str, ...] = ()
    caption: str = ""
    reading: str = ""
    markdown: bool = True

    def cells(self) -> list[list[str]]:
        """Rows formatted for people."""
        specs = self.formats or ("",) * len(self.columns)
        return [[fmt(v, s) for v, s in zip(row, specs, strict=True)] for row in self.rows]

    def numeric(self) -> list[bool]:
        """Per column: all values are numbers (right-aligned)."""
        out = []
        for j in range(len(self.columns)):
            vals = [row[j] for row in self.rows]
            out.append(bool(vals) and all(isinstance(v, int | float | np.integer | np.floating)
                                          and not isinstance(v, bool) for v in vals))
        return out

    def to_csv(self) -> str:
        """Machine-readable CSV: full precision, empty cells for ``nan``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([_csv_value(v) for v in row] for row in self.rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        """A Markdown document: title, caption, the table, and its reading."""
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = [f"## {self.title}", ""]
        if self.caption:
            lines += [self.caption, ""]
        if self.rows:
            align = ["---:" if n else "---" for n in self.numeric()]
            lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
            lines.append("|" + "|".join(align) + "|")
            lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.cells()]
        else:
            lines.append("(no rows)")
        if self.reading:
            lines += ["", self.reading]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """Aligned plain text for a terminal."""
        cells = self.cells()
        widths = [max([len(c)] + [len(r[j]) for r in cells]) for j, c in enumerate(self.columns)]
        num = self.numeric()

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if n else v.ljust(w)
                             for v, w, n in zip(values, widths, num, strict=True)).rstrip()

        out = [self.title, line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in cells] if cells else ["(no rows)"]
        if self.reading:
            out.append(self.reading)
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "section": self.section,
                "columns": list(self.columns), "rows": [[_json_value(v) for v in r] for r in self.rows],
                "formats": list(self.formats), "caption": self.caption, "reading": self.reading,
                "markdown": self.markdown}

    @classmethod
    def from_dict(cls, data: dict) -> Table:
        rows = tuple(tuple(float("nan") if v is None else v for v in r) for r in data["rows"])
        return cls(name=data["name"], title=data["title"], section=data["section"],
                   columns=tuple(data["columns"]), rows=rows, formats=tuple(data.get("formats", ())),
                   caption=data.get("caption", ""), reading=data.get("reading", ""),
                   markdown=bool(data.get("markdown", True)))

    def write(self, folder: Path) -> list[Path]:
        """Write ``<name>.csv`` (and ``<name>.md`` unless ``markdown`` is False) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{self.name}.csv"]
        paths[0].write_text(self.to_csv(), encoding="utf-8")
        if self.markdown:
            paths.append(folder / f"{self.name}.md")
            paths[1].write_text(self.to_markdown(), encoding="utf-8")
        return paths


# --------------------------------------------------------------------------- readings


def pct(value: float) -> str:
    """``91.0%``; an en dash for nan."""
    return DASH if math.isnan(value) else f"{value:.1f}%"


def num(value: float, spec: str = ".3g") -> str:
    return fmt(float(value), spec)


def towards(goal: str) -> str:
    return "below" if lowers_score(goal) else "above"


def moved(goal: str) -> str:
    """The verb of a score change towards the goal: ``lowered`` or ``raised``."""
    return "lowered" if lowers_score(goal) else "raised"


def colour_label(c: ColourCount) -> str:
    name = colour_name(c.rgb)
    rgb = f"({c.rgb[0]}, {c.rgb[1]}, {c.rgb[2]})"
    return f"{name} {rgb}" if name else f"RGB {rgb}"


def goal_probability(analysis: RunAnalysis) -> str:
    """What a multi-class RUN's scores are: "the probability of the true class" (untargeted) or
    "the probability of class T" (targeted); "" for a binary RUN."""
    if not analysis.multiclass:
        return ""
    target = analysis.target
    return "the probability of the true class" if target is None else f"the probability of class {target}"


def pixel_note(analysis: RunAnalysis) -> str:
    """For k-pixel RUNs, a sentence saying the pixel statistics count every pixel; else ""."""
    k = analysis.pixels_per_attack
    if k <= 1:
        return ""
    return (f" Each attack set up to {k} pixels; every pixel counts here (a position set twice in one "
            f"attack once), with its attack's scores.")


def _join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- builders


def build_tables(analysis: RunAnalysis) -> tuple[Table, ...]:
    """Every table of the analysis, in report order.

    Returns
    -------
    tuple of Table
        ``run_info``, ``summary``, ``skipped``, ``scores_<direction>``, ``success``,
        ``early_convergence``, ``nit``, ``nit_distribution``, ``colours``, ``colours_success``,
        ``chromatic`` (when the dataset was readable), ``spatial_<direction>``, ``periodicity``,
        ``locations_<direction>`` (CSV only). Per-direction tables exist for directions with
        attacked images; tables over all directions keep a row for each (with zeros and a reading
        that says so). When no image was attacked only ``run_info``, ``summary`` and ``skipped``
        are returned.
    """
    tables = [run_info_table(analysis), summary_table(analysis)]
    if analysis.total_skipped:
        tables.append(skipped_table(analysis))
    dirs = analysis.directions
    attacked = [d for d in dirs if d.attacked]
    if attacked:
        # Multi-class RUNs: per-class rows where a table has one row per direction, and the
        # attacks of every class pooled where a table or figure is drawn per direction.
        stat_dirs = list(analysis.stat_directions)
        pixel_dirs = [d for d in stat_dirs if d.attacked]
        if analysis.classes:
            tables.append(class_success_table(analysis))
        matrix = class_matrix_table(analysis)
        if matrix is not None:
            tables.append(matrix)
        tables += [scores_table(d, analysis) for d in pixel_dirs]
        tables += [success_table(dirs), early_table(dirs), nit_table(dirs), nit_distribution_table(dirs),
                   colours_table(stat_dirs, success_only=False, analysis=analysis),
                   colours_table(stat_dirs, success_only=True, analysis=analysis)]
        if analysis.dataset_available:
            tables.append(chromatic_table(stat_dirs, analysis))
        tables += [spatial_table(d, analysis) for d in pixel_dirs]
        tables.append(periodicity_table(analysis))
        tables += [locations_table(d) for d in pixel_dirs]
    if analysis.confmaps:
        tables.append(confmaps_table(analysis))
    return tuple(tables)


def run_info_table(analysis: RunAnalysis) -> Table:
    cfg = analysis.run.config
    attack = cfg.attack
    rows: list[tuple[str, str]] = [
        ("Model", cfg.model.name or cfg.model.spec or "unknown"),
        ("Model spec", cfg.model.spec or DASH),
        ("Model sha256", cfg.model.sha256 or DASH),
        ("Dataset", str(cfg.dataset or DASH) + ("" if analysis.dataset_available else
                                                " (not reachable here)")),
        _labels_row(analysis),
        ("Campaign created", cfg.created or DASH),
        ("onepixel version of the campaign", cfg.onepixel_version or DASH),
        ("Device", cfg.device or DASH),
    ]
    if cfg.limit is not None:
        rows.append(("Image limit", str(cfg.limit)))
    de = ", ".join(f"{k} {v}" for k, v in attack.de_settings.items())
    rows.append(("Differential evolution", de or "papers' defaults (not recorded)"))
    if analysis.multiclass:
        rows += _multiclass_rules(analysis)
    else:
        rows.append(("Skip rule", f"positives scoring < {attack.skip_positive_below:g}, "
                                  f"negatives scoring > {attack.skip_negative_above:g}"))
        rows.append(("Success thresholds",
                     f"crosses {attack.success_threshold:g}; strong: < "
                     f"{attack.strong_decrease_below:g} (decrease) / > "
                     f"{attack.strong_increase_above:g} (increase)"))
    recorded_pixels = attack.recorded.get("pixels")
    if analysis.multiclass or analysis.pixels_per_attack > 1 or attack.pixels != 1:
        rows.append(("Pixels per attack", str(attack.pixels if recorded_pixels is not None
                                              else analysis.pixels_per_attack)))
    rows.append(("Image size", f"{analysis.image_shape[1]}x{analysis.image_shape[0]}"))
    pop, maxiter = attack.population, attack.recorded.get("maxiter")
    de_text = (f" with differential evolution (population {pop}, at most {maxiter} generations)"
               if pop is not None and maxiter is not None else "")
    reading = (f"The campaign scored {analysis.total_images:,} images of {analysis.image_shape[1]}x"
               f"{analysis.image_shape[0]} pixels with {rows[0][1]} and attacked "
               f"{analysis.total_attacked:,} of them{de_text}.")
    return Table("run_info", "Run settings", "summary", ("Setting", "Value"), tuple(rows),
                 caption="From config.json of the RUN folder.", reading=reading)


def _labels_row(analysis: RunAnalysis) -> tuple[str, str]:
    cfg = analysis.run.config
    # RUNs from before unlabelled images were supported took labels from folders.
    predicted = ("; labels are the model's own predictions (unlabelled images)"
                 if cfg.labels == "predicted" else "")
    if analysis.multiclass:
        classes = list(cfg.classes)
        shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
        return ("Classes", (shown or "not recorded") + predicted)
    return ("Labels", f"{cfg.positive_label} (positive) / {cfg.negative_label} (negative){predicted}")


def _multiclass_rules(analysis: RunAnalysis) -> list[tuple[str, str]]:
    target = analysis.target
    strong_down = analysis.run.config.attack.strong_decrease_below
    strong_up = analysis.run.config.attack.strong_increase_above
    if target is None:
        goal = ("untargeted: push down the probability of the true class until another class is "
                "predicted")
        rule = f"another class predicted; strong: probability of the true class < {strong_down:g}"
        skip = "images the model already misclassifies"
    else:
        goal = f"targeted: push up the probability of class {target} until it is predicted"
        rule = f"class {target} predicted; strong: probability of class {target} > {strong_up:g}"
        skip = f"images the model already misclassifies, and images of class {target}"
    return [("Goal", goal), ("Skip rule", skip), ("Success", rule)]


def summary_table(analysis: RunAnalysis) -> Table:
    rows = []
    for d in analysis.directions:
        rows.append((d.direction, d.images, d.attacked, d.skipped, d.early.early, d.early.percent,
                     d.success_all.success, d.success_all.success_percent, d.success_all.strong,
                     d.success_all.strong_percent, d.nit.mean))
    if len(analysis.directions) > 1:
        rows.append(("all directions", analysis.total_images, analysis.total_attacked,
                     analysis.total_skipped, sum(d.early.early for d in analysis.directions),
                     float("nan"), sum(d.success_all.success for d in analysis.directions), float("nan"),
                     sum(d.success_all.strong for d in analysis.directions), float("nan"), float("nan")))
    columns = ("Direction", "Images", "Attacked", "Skipped", "Early-converged", "Early %", "Success",
               "Success %", "Strong success", "Strong %", "Mean nit")
    formats = ("", "", "", "", "", ".1f", "", ".1f", "", ".1f", ".1f")
    if not analysis.directions:
        reading = "The RUN has no images yet."
    elif not analysis.total_attacked:
        reading = f"All {analysis.total_images:,} images were skipped, so nothing was attacked."
    else:
        parts = []
        for d in analysis.directions:
            if d.attacked and d.multiclass:
                parts.append(f"{d.success_all.success_percent:.1f}% of the {d.attacked:,} {d.direction} "
                             f"attacks fooled the model ({d.success_all.strong_percent:.1f}% strongly)")
            elif d.attacked:
                parts.append(f"{d.success_all.success_percent:.1f}% of the {d.attacked:,} {d.direction} "
                             f"attacks crossed {d.success_all.success_threshold:g} "
                             f"({d.success_all.strong_percent:.1f}% crossed "
                             f"{d.success_all.strong_threshold:g})")
            else:
                parts.append(f"no {d.direction} image was attacked ({d.skipped:,} skipped)")
        reading = _join(parts)
    attack = analysis.run.config.attack
    caption = (f"Success: the score crossed the success threshold ({attack.success_threshold:g}); "
               f"strong success: it crossed the strong threshold ({attack.strong_decrease_below:g} "
               f"/ {attack.strong_increase_above:g}). Percentages are of the "
               "attacked images. Early-converged: stopped after the first generation.")
    if analysis.multiclass:
        target = analysis.target
        caption = (("Success: the model predicts another class after the attack" if target is None else
                    f"Success: the model predicts class {target} after the attack")
                   + f"; strong success: {goal_probability(analysis)} crossed "
                   + (f"{attack.strong_decrease_below:g}" if target is None else
                      f"{attack.strong_increase_above:g}")
                   + ". One direction per true class. Percentages are of the attacked images. "
                     "Early-converged: stopped after the first generation.")
    return Table("summary", "Attacks per direction", "summary", columns, tuple(rows), formats,
                 caption=caption, reading=reading)


def skipped_table(analysis: RunAnalysis) -> Table:
    rows = [(d.direction, reason, skip_category(reason), count)
            for d in analysis.directions for reason, count in d.skip_reasons]
    top = max(rows, key=lambda r: r[3])
    categories = skip_categories(r[1] for r in rows for _ in range(r[3]))
    reading = (f"{analysis.total_skipped:,} of {analysis.total_images:,} images were skipped: "
               + ", ".join(f"{n:,} {c}" for c, n in categories.items())
               + f"; the most common reason is “{top[1]}” ({top[3]:,} "
               f"image{'' if top[3] == 1 else 's'} in {top[0]}).")
    attack = analysis.run.config.attack
    caption = (f"The papers attack only unambiguous images: positives scoring at least "
               f"{attack.skip_positive_below:g} and negatives scoring at most "
               f"{attack.skip_negative_above:g} (the others are skipped as ambiguous). Images that "
               "cannot be read (unreadable) or are not the model's input size (wrong size) are "
               "skipped too, each counted under its own category.")
    if analysis.multiclass:
        caption = ("As Su et al., only images the model classifies correctly are attacked"
                   + ("" if analysis.target is None else
                      f"; images of the target class {analysis.target} are not attacked either") + "."
                   + " Unreadable and wrong-size images are counted under their own categories.")
    return Table("skipped", "Images not attacked", "summary", ("Direction", "Reason", "Category", "Images"),
                 tuple(rows), caption=caption, reading=reading)


def scores_table(d: DirectionAnalysis, analysis: RunAnalysis | None = None) -> Table:
    (b_rest, a_rest), (b_all, a_all) = d.scores_rest, d.scores_all
    rows = tuple((label, getattr(b_rest, key), getattr(a_rest, key), getattr(b_all, key),
                  getattr(a_all, key)) for label, key in ScoreStats.ROWS)
    rows += (("N", b_rest.n, a_rest.n, b_all.n, a_all.n),)
    if b_rest.n:
        reading = (f"Excluding early-converged attacks (N = {b_rest.n:,}), the {d.direction} attack moved "
                   f"the median score from {num(b_rest.median)} to {num(a_rest.median)} and the mean "
                   f"from {num(b_rest.mean)} to {num(a_rest.mean)}.")
    elif b_all.n:
        reading = (f"Every {d.direction} attack converged early; over all {b_all.n:,} attacks the median "
                   f"score went from {num(b_all.median)} to {num(a_all.median)}.")
    else:
        reading = f"No {d.direction} image was attacked ({d.skipped:,} skipped), so there are no scores."
    return Table(f"scores_{slug(d.direction)}", f"Confidence scores, {d.direction}", "scores",
                 ("Statistic", "Before (excl. early)", "After (excl. early)", "Before (all)", "After (all)"),
                 rows, ("", ".4g", ".4g", ".4g", ".4g"),
                 caption=_scores_caption(analysis), reading=reading)


def _scores_caption(analysis: RunAnalysis | None) -> str:
    caption = ("Before: score of the original image; after: score with the attack pixel. "
               "'Excl. early' leaves out attacks that converged after the first generation, "
               "as Tables 1-2 of the breast-cancer paper do. SD with ddof=1.")
    if analysis is None or not analysis.multiclass:
        return caption
    pixels = "pixels" if analysis.pixels_per_attack > 1 else "pixel"
    return (f"Score: {goal_probability(analysis)}, before the attack and with the attack {pixels}, "
            f"over the attacks of every class. 'Excl. early' leaves out attacks that converged after "
            f"the first generation. SD with ddof=1.")


def success_table(dirs: Sequence[DirectionAnalysis]) -> Table:
    rows = []
    parts = []
    for d in dirs:
        for subset, s in (("all attacked", d.success_all), ("excluding early-converged", d.success_rest)):
            rows.append((d.direction, subset, s.n, s.criterion, s.success, s.success_percent, s.strong,
                         s.strong_percent))
        a, r = d.success_all, d.success_rest
        if a.n and d.multiclass:
            parts.append(f"{d.direction}: {pct(a.success_percent)} of the attacks fooled the model")
        elif a.n:
            parts.append(f"{d.direction}: {pct(a.success_percent)} of the attacks pushed the score "
                         f"{towards(d.goal)} {a.success_threshold:g} and {pct(a.strong_percent)} "
                         f"{towards(d.goal)} {a.strong_threshold:g}"
                         + (f" ({pct(r.success_percent)} and {pct(r.strong_percent)} without the "
                            f"early-converged ones)" if r.n and r.n != a.n else ""))
        else:
            parts.append(f"{d.direction}: no attacks")
    return Table("success", "Success counts", "scores",
                 ("Direction", "Subset", "Attacks", "Criterion (success / strong)", "Success", "Success %",
                  "Strong", "Strong %"), tuple(rows), ("", "", "", "", "", ".1f", "", ".1f"),
                 caption="Counted from the attacked scores with the thresholds of config.json "
                         "(strict inequalities, as the campaign judges).",
                 reading=_join(parts))


def class_success_table(analysis: RunAnalysis) -> Table:
    """Multi-class RUNs: attacked, succeeded and the rate per true class (per (true, target) pair
    for targeted RUNs), with the mean recorded probability before and after; a total row."""
    targeted = analysis.target is not None
    what = "p(true class)" if not targeted else f"p(class {analysis.target})"
    rows = []
    for c in analysis.classes:
        rows.append((c.source, *((c.target,) if targeted else ()), c.attacked, c.success, c.success_percent,
                     c.strong, c.strong_percent, c.mean_before, c.mean_after))
    pooled = analysis.pooled
    n = sum(c.attacked for c in analysis.classes)
    won = sum(c.success for c in analysis.classes)
    strong = sum(c.strong for c in analysis.classes)
    if len(analysis.classes) > 1 and pooled is not None:
        rows.append(("all classes", *((analysis.target,) if targeted else ()), n, won, percent(won, n),
                     strong, percent(strong, n), float(pooled.rows.original_score.mean()),
                     float(pooled.rows.attacked_score.mean())))
    columns = ("True class", *(("Target",) if targeted else ()), "Attacked",
               "Reached target" if targeted else "Fooled", "Success %", "Strong", "Strong %",
               f"Mean {what} before", f"Mean {what} after")
    formats = ("", *(("",) if targeted else ()), "", "", ".1f", "", ".1f", ".4g", ".4g")
    attacked = [c for c in analysis.classes if c.attacked]
    most = max(attacked, key=lambda c: (c.success_percent, c.attacked))
    least = min(attacked, key=lambda c: (c.success_percent, -c.attacked))
    goal = (f"reach class {analysis.target}" if targeted else "change the predicted class")
    reading = f"{won:,} of {n:,} attacks ({pct(percent(won, n))}) managed to {goal}"
    if most is not least:
        evidence = compare_rates(most.success, most.attacked, least.success, least.attacked)
        reading += ("; whether some classes are more vulnerable than others: " + evidence.claim(
            f"the most vulnerable class is {most.source} ({pct(most.success_percent)} of "
            f"{most.attacked:,}), the most robust {least.source} ({pct(least.success_percent)} of "
            f"{least.attacked:,})"))
    reading += "."

    if targeted:
        caption = (f"Targeted attacks towards class {analysis.target}, per true class. Success: the model "
                   f"predicts class {analysis.target} after the attack; strong: the probability of class "
                   f"{analysis.target} rose above {analysis.run.config.attack.strong_increase_above:g}. "
                   f"{what} is the probability of class {analysis.target}, the score this goal records.")
    else:
        caption = (f"Untargeted attacks per true class. Success: the model predicts another class after "
                   f"the attack; strong: the probability of the true class fell below "
                   f"{analysis.run.config.attack.strong_decrease_below:g}. {what} is the probability of "
                   f"the true class, the score this goal records.")
    return Table("class_success", "Success per class", "classes", columns, tuple(rows), formats,
                 caption=caption + " From the success flags of attacks.csv.", reading=reading)


def class_matrix_table(analysis: RunAnalysis) -> Table | None:
    """Multi-class RUNs: attacked images by true class (rows) and class after the attack
    (columns), as Su et al. tabulate; with each true class's success rate. None for binary RUNs."""
    table = analysis.run.attacks
    multi = table.attacked & np.isin(table.goal, ("untargeted", "targeted"))
    if not multi.any():
        return None
    rows_t = table.select(multi)
    order = {c: i for i, c in enumerate(analysis.run.config.classes)}

    def by_model_order(names: set[str]) -> list[str]:
        return sorted(names, key=lambda c: (order.get(c, len(order)), c))

    sources = by_model_order(set(rows_t.label.tolist()))
    targets = by_model_order(set(rows_t.attacked_class.tolist()) | set(sources))
    rows = []
    for src in sources:
        mine = rows_t.select(rows_t.label == src)
        counts = [int((mine.attacked_class == t).sum()) for t in targets]
        rows.append((src, len(mine), int(mine.success.sum()), percent(int(mine.success.sum()), len(mine)),
                     *counts))
    best = max(rows, key=lambda r: (r[3] if r[1] else -1, r[0]))
    others = [r for r in rows if r is not best]
    evidence = compare_rates(best[2], best[1], sum(r[2] for r in others), sum(r[1] for r in others))
    target = analysis.target
    which = ("success: any column but the true class's" if target is None else
             f"success: the column -> {target}")
    return Table("class_matrix", "Classes before and after the attack", "classes",
                 ("True class", "Attacked", "Success", "Success %", *(f"-> {t}" for t in targets)),
                 tuple(rows), ("", "", "", ".1f", *([""] * len(targets))),
                 caption="Attacked images by true class (rows) and the class the model predicts "
                         "after the attack (columns), as Su et al. tabulate; "
                         f"{which} ({'untargeted' if target is None else 'targeted'} goal).",
                 reading=f"{best[0]}: {pct(best[3])} of its {best[1]} attacked images were fooled; "
                         "is it more vulnerable than the other classes? " + evidence.claim(
                             f"yes, the most vulnerable class is {best[0]}") + ".")


def early_table(dirs: Sequence[DirectionAnalysis]) -> Table:
    rows = [(d.direction, d.early.n, d.early.early, d.early.percent, d.early.mean_gain_early,
             d.early.median_gain_rest) for d in dirs]
    parts = []
    for d in dirs:
        e = d.early
        if not e.n:
            continue
        text = f"{pct(e.percent)} of the {d.direction} attacks stopped after the first generation"
        if e.early:
            text += f" and moved the score by only {num(e.mean_gain_early, '.2g')} on average"
        if e.n > e.early:
            text += f", against a median change of {num(e.median_gain_rest, '.2g')} for the others"
            if e.early and e.split is not None:
                text += ": " + e.split.claim("a real difference")
        parts.append(text)
    return Table("early_convergence", "Early convergence", "convergence",
                 ("Direction", "Attacked", "Early-converged", "%", "Mean change (early)",
                  "Median change (others)"), tuple(rows), ("", "", "", ".1f", ".3g", ".3g"),
                 caption="An attack that stops after its first generation has converged early: the "
                         "papers count it as failed. Change: score moved towards the goal "
                         "(before - after for decrease, after - before for increase).",
                 reading=_join(parts) or "No attacks.")


def nit_table(dirs: Sequence[DirectionAnalysis]) -> Table:
    rows = [(d.direction, d.nit.n, d.nit.mean, d.nit.median, d.nit.min, d.nit.q25, d.nit.q75, d.nit.max,
             d.nit.at_limit) for d in dirs]
    parts = [f"{d.direction} attacks ran {num(d.nit.mean, '.1f')} generations on average (median "
             f"{num(d.nit.median, 'g')}), {d.nit.at_limit:,} reached the limit of {d.nit.maxiter}"
             for d in dirs if d.nit.n]
    maxiter = dirs[0].nit.maxiter if dirs else 100
    return Table("nit", "Generations run (nit)", "convergence",
                 ("Direction", "Attacks", "Mean", "Median", "Min", "25%", "75%", "Max",
                  f"At maxiter ({maxiter})"), tuple(rows), ("", "", ".1f", "g", "g", "g", "g", "g", ""),
                 caption="DE generations per attack, as recorded in attacks.csv.",
                 reading=_join(parts) or "No attacks.")


def nit_distribution_table(dirs: Sequence[DirectionAnalysis]) -> Table:
    labels = [label for label, _ in dirs[0].nit_bins]
    for d in dirs[1:]:
        for label, _ in d.nit_bins:
            if label not in labels:
                labels.insert(0, label)
    rows = [(d.direction, *(dict(d.nit_bins).get(label, 0) for label in labels)) for d in dirs]
    parts = []
    for d in dirs:
        if d.nit.n:
            bins = dict(d.nit_bins)
            top = max(labels, key=lambda lb, b=bins: b.get(lb, 0))
            parts.append(f"the largest share of {d.direction} attacks "
                         f"({pct(100 * bins.get(top, 0) / d.nit.n)}) ran {top} "
                         f"generation{'' if top == '1' else 's'}")
    return Table("nit_distribution", "Distribution of generations run", "convergence",
                 ("Direction", *(f"nit {lb}" for lb in labels)), tuple(rows),
                 caption="Attacks per range of DE generations; nit 1 is early convergence.",
                 reading=_join(parts) or "No attacks.")


def colours_table(dirs: Sequence[DirectionAnalysis], success_only: bool, k: int = 10,
                  analysis: RunAnalysis | None = None) -> Table:
    rows = []
    parts = []
    for d in dirs:
        colours = d.colours_success if success_only else d.colours
        total = d.success_all.success if success_only else d.attacked
        if d.pixels.shape[0] != d.attacked:  # k pixels: percentages are of the pixels
            total = int(d.success_mask[d.owner].sum()) if success_only else int(d.pixels.shape[0])
        unit = "attack" if d.pixels.shape[0] == d.attacked else "attack pixel"
        for rank, c in enumerate(colours[:k], start=1):
            rows.append((d.direction, rank, f"{c.rgb[0]}, {c.rgb[1]}, {c.rgb[2]}", c.hex,
                         colour_name(c.rgb), c.count, c.percent))
        if colours:
            c = colours[0]
            parts.append(f"the most common {d.direction} colour is {colour_label(c)}, used in "
                         f"{c.count:,} of {total:,} {'successful ' if success_only else ''}"
                         f"{unit}{'' if total == 1 else 's'} "
                         f"({pct(c.percent)})")
        elif success_only:
            parts.append(f"no {d.direction} attack succeeded")
    which = "successful attacks" if success_only else "all attacks"
    return Table("colours_success" if success_only else "colours", f"Most common attack colours, {which}",
                 "colours", ("Direction", "Rank", "RGB", "Hex", "Name", "Count", "%"), tuple(rows),
                 ("", "", "", "", "", "", ".1f"),
                 caption=f"The {k} most frequent attack pixel colours per direction over {which}."
                         + (pixel_note(analysis) if analysis is not None else ""),
                 reading=_join(parts) or "No attacks.")


def chromatic_table(dirs: Sequence[DirectionAnalysis], analysis: RunAnalysis | None = None) -> Table:
    rows = []
    parts = []
    for d in dirs:
        for subset, c in (("paper filter", d.chromatic_filtered), ("all attacks", d.chromatic_all)):
            if c is None:
                continue
            rows.append((d.direction, subset, c.n, c.mean, c.median, c.sd, c.rho, c.gain_high, c.gain_low))
        c = d.chromatic_filtered
        if c is not None and c.n >= 2 and not math.isnan(c.gain_high):
            verdict = "more" if c.gain_high > c.gain_low else "less"
            rho = "" if math.isnan(c.rho) else f", Spearman ρ = {fmt(c.rho, '.2f')}"
            claim = (c.split.claim(f"larger colour differences were {verdict} effective")
                     if c.split is not None else "too few to tell")
            parts.append(f"{d.direction} attacks with a colour difference h above its median "
                         f"{num(c.median, '.2f')} (h SD {num(c.sd, '.2g')}{rho}) {moved(d.goal)} the "
                         f"score by {num(c.gain_high, '.2f')} on average against "
                         f"{num(c.gain_low, '.2f')} for the rest: {claim}")
        elif c is not None:
            parts.append(f"too few {d.direction} attacks pass the paper filter ({c.n}) to compare")
    return Table("chromatic", "Chromatic analysis: colour difference h to the neighbours", "chromatic",
                 ("Direction", "Subset", "N", "Mean h", "Median h", "SD h", "Spearman ρ (h, change)",
                  "Mean change, h > median", "Mean change, h ≤ median"), tuple(rows),
                 ("", "", "", ".3f", ".3f", ".3f", ".2f", ".3f", ".3f"),
                 caption="h = sqrt(((r-rμ)² + (g-gμ)² + (b-bμ)²) / 3) on values scaled to [0, 1], μ the "
                         "mean of the attack pixel's 8 neighbours in the original image (5 at an edge, "
                         f"3 in a corner). Paper filter: {_paper_filter(analysis)}. Change: score "
                         "moved towards the goal."
                         + _multiclass_score_note(analysis) + (pixel_note(analysis) if analysis else ""),
                 reading=_join(parts) or "No attacks with readable original images.")


def _multiclass_score_note(analysis: RunAnalysis | None) -> str:
    """For multi-class RUNs: what the score and the paper filter mean for its goal."""
    if analysis is None or not analysis.multiclass:
        return ""
    attack = analysis.run.config.attack
    if analysis.target is None:
        return (" Here the score is the probability of the true class; the paper filter keeps attacks "
                f"that ended below {attack.skip_positive_below:g}.")
    return (f" Here the score is the probability of class {analysis.target}; the paper filter keeps "
            f"attacks that ended above {attack.skip_negative_above:g}.")


def _paper_filter(analysis: RunAnalysis | None) -> str:
    """The paper filter in words, with the RUN's skip thresholds (the papers' without a RUN)."""
    attack = analysis.run.config.attack if analysis is not None else AttackRecord()
    return (f"decrease attacks that ended below {attack.skip_positive_below:g}, increase attacks "
            f"that ended above {attack.skip_negative_above:g}")


def _channel_word(v: float) -> str:
    return "high" if v >= 170 else ("low" if v <= 85 else "mid-range")


def spatial_table(d: DirectionAnalysis, analysis: RunAnalysis | None = None) -> Table:
    rows = []
    for subset, s in (("paper filter", d.spatial_filtered), ("all attacks", d.spatial_all)):
        for label, values in (("Mean", s.mean), ("Median", s.median), ("SD", s.sd)):
            rows.append((subset, s.n, label, *values))
    s = d.spatial_filtered if d.spatial_filtered.n else d.spatial_all
    if s.n:
        h, w = d.location.shape
        cx, cy = (w - 1) / 2, (h - 1) / 2
        dist = math.hypot(s.mean[0] - cx, s.mean[1] - cy)
        r, g, b = s.mean[2:]
        reading = (f"{d.direction} attack pixels lie at mean (X, Y) = ({s.mean[0]:.1f}, {s.mean[1]:.1f}), "
                   f"{dist:.1f} px from the image centre, with mean colour ({r:.0f}, {g:.0f}, {b:.0f}): "
                   f"{_channel_word(r)} red, {_channel_word(g)} green and {_channel_word(b)} blue.")
    else:
        reading = f"No {d.direction} attacks to describe."
    return Table(f"spatial_{slug(d.direction)}", f"Spatial statistics, {d.direction}", "spatial",
                 ("Subset", "N", "Statistic", *SPATIAL_COLUMNS), tuple(rows),
                 ("", "", "", ".2f", ".2f", ".2f", ".2f", ".2f"),
                 caption="Mean, median and SD (ddof=1) of the attack vectors (Tables 1-2 of the chromatic "
                         f"paper, which use the paper filter: {_paper_filter(analysis)})."
                         + _multiclass_score_note(analysis) + (pixel_note(analysis) if analysis else ""),
                 reading=reading)


def parity_sentence(direction: str, n: int, both_even_pct: float, expected: float,
                    unit: str = "attacks") -> str:
    """The periodicity reading for one direction (``n`` counted in ``unit``), with the exact
    binomial test of the observed share against the expected one."""
    if not n:
        return ""
    ratio = both_even_pct / (100 * expected) if expected else float("nan")
    if math.isnan(ratio):
        return ""
    how = f"{ratio:.1f}x more common" if ratio >= 1 else f"only {ratio:.2f}x as common"
    evidence = compare_rate(round(both_even_pct * n / 100), n, expected)
    return (f"{direction}: pixels with both coordinates even: {both_even_pct:.1f}% of {n:,} {unit} "
            f"vs {100 * expected:.0f}% expected under uniform placement; "
            + evidence.claim(f"{how} than expected"))


def periodicity_table(analysis: RunAnalysis) -> Table:
    expected = parity_expected(analysis)
    rows = []
    parts = []
    for d in analysis.stat_directions:
        for subset, p in (("all attacks", d.parity_all), ("successful", d.parity_success)):
            for key, label in p.FIELDS:
                e = expected[key]
                obs = p.percent(key)
                rows.append((d.direction, subset, label, getattr(p, key), obs, 100 * e,
                             obs / (100 * e) if e and p.n else float("nan")))
        parts.append(parity_sentence(d.direction, d.parity_all.n, d.parity_all.percent("both_even"),
                                     expected["both_even"],
                                     "attacks" if d.parity_all.n == d.attacked else "attack pixels"))
    h, w = analysis.image_shape
    success = ("fooled the model (the success flag of attacks.csv)" if analysis.multiclass else
               "crossed the success threshold")
    return Table("periodicity", "Periodicity: parity of the attack coordinates", "periodicity",
                 ("Direction", "Subset", "Coordinates", "Count", "%", "Expected %", "Ratio"), tuple(rows),
                 ("", "", "", "", ".1f", ".1f", ".2f"),
                 caption=f"Expected: the share if attack pixels were spread uniformly over the {w}x{h} "
                         f"image. Ratio = observed / expected. Successful: {success}."
                         + pixel_note(analysis),
                 reading=_join(parts) or "No attacks.")


def checkerboard_claim(evidence) -> str:
    """Whether a min map's even-even pixels differ from the rest, as its test supports."""
    return evidence.claim("a checkerboard")


def locations_table(d: DirectionAnalysis) -> Table:
    grid = d.location
    rows = tuple((y, *(int(v) for v in grid[y])) for y in range(grid.shape[0]))
    if grid.sum():
        y, x = np.unravel_index(int(np.argmax(grid)), grid.shape)
        reading = f"The most attacked {d.direction} pixel is (x={x}, y={y}) with {int(grid[y, x]):,} attacks."
    else:
        reading = f"No {d.direction} attacks."
    return Table(f"locations_{slug(d.direction)}", f"Attack locations, {d.direction}", "periodicity",
                 ("y \\ x", *(str(x) for x in range(grid.shape[1]))), rows,
                 caption="Number of attacks per pixel: row y, column x.", reading=reading, markdown=False)


def confmaps_table(analysis: RunAnalysis) -> Table:
    rows = []
    parts = []
    for cm in analysis.confmaps:
        st = confmap_stats(cm)
        rgb = "" if st.lowest_rgb is None else ", ".join(map(str, st.lowest_rgb))
        rgb_hi = "" if st.highest_rgb is None else ", ".join(map(str, st.highest_rgb))
        rows.append((cm.name, str(cm.metadata.get("image", "")), cm.original_score, st.lowest,
                     f"{st.lowest_xy[0]}, {st.lowest_xy[1]}", rgb, st.highest,
                     f"{st.highest_xy[0]}, {st.highest_xy[1]}", rgb_hi, st.even_min_mean,
                     st.other_min_mean))
        parts.append(f"map {cm.name} ({map_provenance(cm)}): scores range from "
                     f"{num(st.lowest, '.4g')} at (x={st.lowest_xy[0]}, y={st.lowest_xy[1]}) to "
                     f"{num(st.highest, '.4g')}, and the min map averages "
                     f"{num(st.even_min_mean, '.3g')} on even-even pixels against "
                     f"{num(st.other_min_mean, '.3g')} elsewhere"
                     + (f": {checkerboard_claim(st.checkerboard)}" if st.checkerboard else ""))
    return Table("confmaps", "One-pixel confidence maps", "confmaps",
                 ("Map", "Image", "Original score", "Lowest score", "Lowest at (x, y)", "RGB at lowest",
                  "Highest score", "Highest at (x, y)", "RGB at highest", "Min map, even-even pixels",
                  "Min map, other pixels"), tuple(rows),
                 ("", "", ".4g", ".4g", "", "", ".4g", "", "", ".4g", ".4g"),
                 caption="Per pixel, the lowest (min), highest (max) and mean score over the colour grid "
                         "of `onepixel confmap` (chromatic paper, Algorithm 1).",
                 reading=_join(parts))
