"""``onepixel analyze RUN``: every table (CSV + Markdown) and figure (PNG) under ``RUN/analysis``.

Layout written::

    RUN/analysis/
      analysis.json      the tables, figure list, notes and the fingerprint of the input files
      tables.md          every table in one Markdown document
      tables/<name>.csv  one CSV (and .md) per table
      figures/<name>.png

The folder is built beside the old one and swapped in, so a reader never sees half of it.
:func:`is_stale` compares the recorded fingerprint (size and mtime of config.json, attacks.csv,
history.csv and the confidence maps) with the files now in the RUN.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onepixel.analysis import (
    SECTIONS,
    Note,
    RunAnalysis,
    RunError,
    Table,
    build_tables,
    compute_analysis,
    load_run,
)
from onepixel.fileio import atomic_output_dir
from onepixel.report.figures import FigureInfo, all_figures, colour_budget
from onepixel.runs.summary import RunProgress, format_skips, skip_categories
from onepixel.version import __version__

log = logging.getLogger(__name__)

#: 2: the chromatic figure draws the RUN's colour budget (an older analysis is redrawn).
#: 3: the facts say whether the RUN is unfinished, and count skips by category.
ANALYSIS_FORMAT = 3
#: Attack pixels with h within this of the colour budget H count as "at the budget".
AT_BUDGET = 0.01
MAIN_TABLES = ("summary", "class_success", "class_matrix", "scores_*", "success", "early_convergence",
               "chromatic", "spatial_*")


@dataclass(frozen=True)
class RunFacts:
    """Headline facts of the RUN for the report's summary (from config.json and attacks.csv)."""

    model: str
    dataset: str
    dataset_available: bool
    created: str
    images: int
    attacked: int
    skipped: int
    image_shape: tuple[int, int]
    directions: tuple[dict, ...] = ()
    #: config.json's ``planned`` (None for RUNs that do not record it) and the RUN folder.
    planned: int | None = None
    run_dir: str = "RUN"
    #: Skipped images per category (:func:`onepixel.runs.summary.skip_category`).
    skip_reasons: tuple[tuple[str, int], ...] = ()

    @property
    def progress(self) -> RunProgress:
        """Done against planned: whether the campaign is unfinished, and how to resume it."""
        return RunProgress(self.images, self.planned, self.run_dir, self.dataset)

    def to_dict(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "dataset_available": self.dataset_available,
                "created": self.created, "images": self.images, "attacked": self.attacked,
                "skipped": self.skipped, "image_shape": list(self.image_shape),
                "directions": list(self.directions), "planned": self.planned, "run_dir": self.run_dir,
                "skip_reasons": dict(self.skip_reasons)}

    @classmethod
    def from_dict(cls, data: dict) -> RunFacts:
        return cls(data["model"], data["dataset"], bool(data["dataset_available"]), data["created"],
                   int(data["images"]), int(data["attacked"]), int(data["skipped"]),
                   tuple(data["image_shape"]), tuple(data.get("directions", ())), data.get("planned"),
                   str(data.get("run_dir", "RUN")), tuple((data.get("skip_reasons") or {}).items()))


@dataclass(frozen=True)
class AnalysisResult:
    """What ``analyze_run`` wrote.

    Attributes
    ----------
    run_dir, analysis_dir : Path
    facts : RunFacts
    tables : tuple of Table
        In report order; each was written as ``tables/<name>.csv`` (and ``.md``).
    figures : tuple of FigureInfo
        Each written as ``analysis_dir / figure.file``.
    notes : tuple of Note
        Skipped analyses and empty selections, by report section.
    seconds : float
        Time taken to compute and write.
    """

    run_dir: Path
    analysis_dir: Path
    facts: RunFacts
    tables: tuple[Table, ...]
    figures: tuple[FigureInfo, ...]
    notes: tuple[Note, ...] = field(default=())
    seconds: float = 0.0

    def table(self, name: str) -> Table:
        """The table called ``name`` (KeyError if absent)."""
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r}; have {', '.join(t.name for t in self.tables)}")

    def has_table(self, name: str) -> bool:
        return any(t.name == name for t in self.tables)

    def figure_path(self, figure: FigureInfo | str) -> Path:
        """Absolute path of a figure (object or name)."""
        if isinstance(figure, str):
            figure = next(f for f in self.figures if f.name == figure)
        return self.analysis_dir / figure.file

    @property
    def table_paths(self) -> dict[str, list[Path]]:
        """Table name -> its CSV (and Markdown) files."""
        return {t.name: [self.analysis_dir / "tables" / f"{t.name}.{ext}"
                         for ext in (("csv", "md") if t.markdown else ("csv",))] for t in self.tables}

    @property
    def figure_paths(self) -> dict[str, Path]:
        return {f.name: self.analysis_dir / f.file for f in self.figures}

    def in_section(self, section: str) -> tuple[list[Table], list[FigureInfo], list[Note]]:
        return ([t for t in self.tables if t.section == section],
                [f for f in self.figures if f.section == section],
                [n for n in self.notes if n.section == section])


def _current_fingerprint(run_dir: Path) -> dict[str, list[int]]:
    names = ["config.json", "attacks.csv", "history.csv"]
    paths = [run_dir / n for n in names] + sorted((run_dir / "confmaps").glob("*/confmap.npz"))
    out = {}
    for path in paths:
        if path.is_file():
            st = path.stat()
            out[path.relative_to(run_dir).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def is_stale(run_dir: str | Path, need_figures: bool = False) -> bool:
    """True when ``RUN/analysis`` is missing, incomplete, from another onepixel version, older
    than the RUN's files, or (with ``need_figures``) was written without figures."""
    run_dir = Path(run_dir)
    manifest = run_dir / "analysis" / "analysis.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    if not isinstance(data, dict) or data.get("format") != ANALYSIS_FORMAT or \
            data.get("onepixel_version") != __version__:
        return True
    if data.get("inputs") != _current_fingerprint(run_dir):
        return True
    if need_figures and not data.get("figures_drawn", False):
        return True
    return any(not (run_dir / "analysis" / fig.get("file", "")).is_file() for fig in data.get("figures", []))


def load_analysis(run_dir: str | Path) -> AnalysisResult:
    """Read ``RUN/analysis/analysis.json`` back (no recomputation).

    Raises
    ------
    RunError
        No analysis, or an unreadable manifest: run ``onepixel analyze RUN``.
    """
    run_dir = Path(run_dir)
    path = run_dir / "analysis" / "analysis.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AnalysisResult(
            run_dir=run_dir, analysis_dir=path.parent, facts=RunFacts.from_dict(data["facts"]),
            tables=tuple(Table.from_dict(t) for t in data["tables"]),
            figures=tuple(FigureInfo.from_dict(f) for f in data["figures"]),
            notes=tuple(Note(n["section"], n["text"]) for n in data["notes"]),
            seconds=float(data.get("seconds", 0.0)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"cannot read {path} ({exc}); run `onepixel analyze {run_dir}` to "
                            f"recreate it") from exc


def analyze_run(run_dir: str | Path, *, figures: bool = True, read_originals: bool = True,
                workers: int | None = None) -> AnalysisResult:
    """Compute the papers' statistics and figures for a RUN and write them under ``RUN/analysis``.

    Parameters
    ----------
    run_dir : path
        A RUN folder written by ``onepixel attack`` (see ``docs/run-format.md``).
    figures : bool
        Draw the figures (needs matplotlib, the ``analysis`` extra).
    read_originals : bool
        Read the original images from ``config["dataset"]`` for the chromatic analysis and the
        example figures; when the folder is not reachable these are skipped with a note.
    workers : int, optional
        Worker processes for reading the original images (default: one per CPU, at most 8).

    Returns
    -------
    AnalysisResult

    Raises
    ------
    RunError
        Missing or malformed RUN files (the message names the file).
    OnepixelError
        Figures asked for but matplotlib is not installed.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    fingerprint = _current_fingerprint(run_dir)
    run = load_run(run_dir)
    analysis = compute_analysis(run, read_originals=read_originals, workers=workers)
    tables = build_tables(analysis)
    notes = list(analysis.notes)
    budget = budget_note(analysis)
    if budget is not None:
        notes.append(budget)
    final = run_dir / "analysis"
    with atomic_output_dir(final, overwrite=True) as tmp:
        figure_list: list[FigureInfo] = []
        if figures:
            figure_list, missing = all_figures(analysis, tmp / "figures")
            notes += [Note(section, text) for section, text in missing]
        else:
            notes.append(Note("summary", "Figures were not drawn (analysis run without figures)."))
        for t in tables:
            t.write(tmp / "tables")
        facts = _facts(analysis, run_dir)
        result = AnalysisResult(run_dir=run_dir, analysis_dir=final, facts=facts, tables=tables,
                                figures=tuple(figure_list), notes=tuple(_dedupe(notes)),
                                seconds=time.perf_counter() - start)
        (tmp / "tables.md").write_text(_tables_markdown(result), encoding="utf-8")
        manifest = {"format": ANALYSIS_FORMAT, "onepixel_version": __version__,
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": fingerprint,
                    "seconds": result.seconds, "figures_drawn": bool(figures), "facts": facts.to_dict(),
                    "tables": [t.to_dict() for t in tables], "figures": [f.to_dict() for f in figure_list],
                    "notes": [{"section": n.section, "text": n.text} for n in result.notes]}
        (tmp / "analysis.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False),
                                           encoding="utf-8")
    log.info("analysis of %s written to %s in %.1f s (%d tables, %d figures)", run_dir, final,
             result.seconds, len(tables), len(figure_list))
    return result


def budget_note(analysis: RunAnalysis) -> Note | None:
    """The chromatic section's note on the RUN's colour budget H: the budget, why every pixel
    keeps h <= H, the largest h observed and how many pixels sit at the budget (h >= H - 0.01);
    None for a RUN without a budget."""
    budget = colour_budget(analysis.run.config)
    if budget is None:
        return None
    text = (f"Colour budget: the campaign ran with `--max-colour-diff {budget:g}`, so every attack "
            f"pixel has h <= {budget:g} by construction (DE's infeasible candidates are repaired "
            "towards the neighbour mean before they are scored; docs/attack.md, \"Colour budget\").")
    dirs = [d for d in analysis.stat_directions if d.h is not None]
    h = np.concatenate([d.h for d in dirs]) if dirs else np.zeros(0)
    h = h[~np.isnan(h)]
    if not analysis.dataset_available:
        text += " The h observed is not shown: the original images are not reachable."
    elif h.size == 0:
        text += " No attack pixel to measure."
    else:
        near = int((h >= budget - AT_BUDGET).sum())
        text += (f" Largest h observed among the {h.size:,} attack pixels: {h.max():.4f}; "
                 f"{near:,} ({100 * near / h.size:.1f}%) sit at the budget (h >= "
                 f"{budget - AT_BUDGET:g}).")
        if h.max() > budget + 1e-9:
            text += (" An h above the budget means the original images read now are not the "
                     "ones the campaign attacked (changed, or resized to the model's input).")
    return Note("chromatic", text)


def _dedupe(notes: list[Note]) -> list[Note]:
    seen: set[tuple[str, str]] = set()
    out = []
    for n in notes:
        if (n.section, n.text) not in seen:
            seen.add((n.section, n.text))
            out.append(n)
    return out


def _facts(analysis, run_dir: Path) -> RunFacts:
    cfg = analysis.run.config
    dirs = []
    for d in analysis.directions:
        dirs.append({"direction": d.direction, "goal": d.goal, "images": d.images, "attacked": d.attacked,
                     "skipped": d.skipped, "success": d.success_all.success,
                     "success_percent": None if d.success_all.n == 0 else d.success_all.success_percent,
                     "strong": d.success_all.strong,
                     "strong_percent": None if d.success_all.n == 0 else d.success_all.strong_percent,
                     "success_threshold": d.success_all.success_threshold,
                     "strong_threshold": d.success_all.strong_threshold,
                     "early": d.early.early,
                     "early_percent": None if d.early.n == 0 else d.early.percent})
    return RunFacts(model=cfg.model.title, dataset=str(cfg.dataset or "unknown dataset"),
                    dataset_available=analysis.dataset_available, created=cfg.created or "",
                    images=analysis.total_images, attacked=analysis.total_attacked,
                    skipped=analysis.total_skipped, image_shape=analysis.image_shape, directions=tuple(dirs),
                    planned=cfg.planned, run_dir=str(run_dir),
                    skip_reasons=tuple(skip_categories(
                        analysis.run.attacks.skip_reason[~analysis.run.attacks.attacked]).items()))


def _tables_markdown(result: AnalysisResult) -> str:
    out = [f"# Analysis of {result.run_dir.name}", ""]
    if result.facts.progress.unfinished:
        out += [f"**{result.facts.progress.sentence()}**", ""]
    out += [f"Model {result.facts.model}; dataset {result.facts.dataset}; {result.facts.images:,} images, "
            f"{result.facts.attacked:,} attacked, {format_skips(dict(result.facts.skip_reasons))}.", ""]
    for key, title in SECTIONS:
        tables, _, notes = result.in_section(key)
        tables = [t for t in tables if t.markdown]
        if not tables and not notes:
            continue
        out += [f"# {title}", ""]
        out += [f"> {n.text}" for n in notes]
        if notes:
            out.append("")
        out += [t.to_markdown() for t in tables]
    return "\n".join(out)


def format_main_tables(result: AnalysisResult) -> str:
    """The main tables as aligned plain text, for ``onepixel analyze`` to print.

    Summary, success per class and the class matrix (multi-class RUNs), scores per direction
    (Tables 1-2), success counts, early convergence, chromatic and spatial statistics, then the
    periodicity reading, the notes and where the files are.
    """
    f = result.facts
    lines = [f"Run {result.run_dir}: model {f.model}, dataset {f.dataset}"]
    if f.progress.unfinished:
        lines.append(f.progress.sentence())
    lines += [f"{f.images:,} images, {f.attacked:,} attacked, {format_skips(dict(f.skip_reasons))}", ""]
    for pattern in MAIN_TABLES:
        for t in result.tables:
            if t.name == pattern or (pattern.endswith("*") and t.name.startswith(pattern[:-1])):
                lines += [t.to_text(), ""]
    if result.has_table("periodicity") and result.table("periodicity").reading:
        lines += ["Periodicity: " + result.table("periodicity").reading, ""]
    for n in result.notes:
        lines.append(f"note ({n.section}): {n.text}")
    if result.notes:
        lines.append("")
    lines.append(f"{len(result.tables)} tables (CSV + Markdown) and {len(result.figures)} figures (PNG) "
                 f"in {result.analysis_dir}")
    return "\n".join(lines)
