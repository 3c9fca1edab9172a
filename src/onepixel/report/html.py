"""``onepixel report RUN``: one self-contained HTML file with every table and figure.

The report embeds its figures as base64 ``data:`` URIs and its style sheet inline: no script,
no external file, no network access. It opens with a summary (model, dataset, settings,
counts, success rates), then follows the sections of the two papers, each table and figure
with a one-sentence reading computed from its numbers. A print style sheet lays it out on A4.
"""

from __future__ import annotations

import base64
import html
import logging
import struct
import time
from pathlib import Path

from onepixel.analysis import SECTIONS, Note, Table
from onepixel.errors import RunError
from onepixel.fileio import atomic_open
from onepixel.report.analyze import AnalysisResult, analyze_run, is_stale, load_analysis
from onepixel.report.audit_section import audit_section, audit_verdict, default_audit_dir
from onepixel.report.figures import FigureInfo
from onepixel.report.pareto_section import default_pareto_dir, pareto_section
from onepixel.report.robustness_section import robustness_section
from onepixel.report.sections import ExtraFigure, ExtraSection
from onepixel.runs.schema import lowers_score
from onepixel.runs.summary import format_skips
from onepixel.version import __version__

log = logging.getLogger(__name__)

#: What each section reproduces, shown under its heading.
SECTION_INTROS = {
    "summary": "",
    "classes": "Multi-class campaign: how often the attack changed the model's answer for each true "
               "class, and which class the images ended up in (the source x adversarial class matrix "
               "of Su et al.). Later sections pool the attacks of every class.",
    "scores": "Model confidence before and after the one-pixel attack, and how many attacks crossed the "
              "success thresholds (breast-cancer paper, section 2.2, Tables 1-2 and Figures 1-2).",
    "convergence": "Attacks that stop after their first generation count as failed (breast-cancer paper, "
                   "section 2.1); the curves show how differential evolution improved the best score "
                   "(Figures 5-6).",
    "examples": "The most successful attacks of each direction, original next to attacked (breast-cancer "
                "paper, Figures 3-4).",
    "colours": "Which pixel colours the attacks settled on (breast-cancer paper, section 2.3: pure "
               "yellow first).",
    "chromatic": "How far the attack colour is from its neighbours in the original image, and whether "
                 "larger differences work better (chromatic paper, section 3.1, Figures 1-2).",
    "spatial": "Where the attack pixels are and what colour they have (chromatic paper, section 3.2, "
               "Tables 1-2).",
    "periodicity": "Whether attack pixels prefer even coordinates, a trace of stride-2 convolutions "
                   "(chromatic paper, section 3.3, Figures 3-4).",
    "confmaps": "Maps of the lowest, highest and mean score a single pixel can reach at each position "
                "over a grid of colours (chromatic paper, sections 2.2 and 3.4, Figure 5, at step 5). "
                "Each map states how it was made: its colour step, the colours per channel, the engine "
                "(exact incremental or brute force: the same scores), the model and the defence.",
}

EMPTY_SECTION = {
    "confmaps": "No confidence maps in this RUN (RUN/confmaps/*/confmap.npz); create them with "
                "`onepixel confmap`.",
}

CSS = """
:root { --fg: #1d1d1f; --muted: #5a5f66; --accent: #1f5fa8; --rule: #d9dce1; --zebra: #f4f6f9;
        --note: #fff6da; --note-rule: #e3a800; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
.page { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { font-size: 1.75rem; margin: 0 0 2px; }
header .sub { color: var(--muted); margin: 0; font-size: 0.92rem; overflow-wrap: anywhere; }
h2 { font-size: 1.35rem; margin: 2.2em 0 0.4em; padding-bottom: 4px; border-bottom: 2px solid var(--rule); }
h2 .num { color: var(--muted); font-weight: 400; margin-right: 0.4em; }
h3 { font-size: 1.02rem; margin: 1.4em 0 0.3em; }
p.intro { color: var(--muted); margin: 0.2em 0 1em; }
nav.toc { margin: 18px 0 8px; padding: 10px 14px; border: 1px solid var(--rule); border-radius: 8px;
          font-size: 0.92rem; }
nav.toc ol { margin: 0; padding-left: 1.4em; columns: 2; column-gap: 2.5em; }
nav.toc a { color: var(--accent); text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px;
         margin: 16px 0; }
.card { border: 1px solid var(--rule); border-radius: 8px; padding: 10px 14px; background: #fbfcfd; }
.card .label { color: var(--muted); font-size: 0.82rem; text-transform: uppercase; letter-spacing: 0.03em; }
.card .big { font-size: 1.55rem; font-weight: 650; line-height: 1.25; }
.card .small { font-size: 0.85rem; color: var(--muted); }
.tablewrap { overflow-x: auto; margin: 0.4em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.86rem; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; vertical-align: bottom; }
th, td { hyphens: manual; }
td.num, th.num { text-align: right; }
td.num, td.nw { white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--zebra); }
.block { margin: 1.1em 0 1.6em; }
.caption { color: var(--muted); font-size: 0.84rem; margin: 0.25em 0; }
.reading { margin: 0.45em 0 0; padding: 2px 0 2px 10px; border-left: 3px solid var(--accent); }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule);
             border-radius: 4px; }
.note { background: var(--note); border-left: 3px solid var(--note-rule); padding: 6px 10px; margin: 0.6em 0;
        font-size: 0.92rem; }
code { font-size: 0.88em; background: #f1f3f5; padding: 0 3px; border-radius: 3px; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.82rem; border-top: 1px solid var(--rule);
         padding-top: 8px; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555; vertical-align: -0.1em;
          margin-right: 0.3em; }
@media (max-width: 700px) { nav.toc ol { columns: 1; } .page { padding: 14px; } }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { font-size: 10pt; }
  .page { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .block, figure, .card, tr { break-inside: avoid; page-break-inside: avoid; }
  .tablewrap { overflow: visible; }
  table { font-size: 8pt; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  figure img { max-height: 235mm; width: auto; max-width: 100%; border: none; }
  a { color: inherit; text-decoration: none; }
  section { break-before: auto; }
}
"""


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _inline_code(text: str) -> str:
    """Escape ``text`` and render `backticked` spans as <code>."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _table_html(t: Table) -> str:
    numeric = t.numeric()
    head = "".join(f'<th class="num">{_e(c)}</th>' if n else f"<th>{_e(c)}</th>"
                   for c, n in zip(t.columns, numeric, strict=True))
    body = []
    hex_col = t.columns.index("Hex") if "Hex" in t.columns else -1
    for row in t.cells():
        cells = []
        for j, (value, n) in enumerate(zip(row, numeric, strict=True)):
            content = _e(value)
            if j == hex_col and value.startswith("#"):
                content = f'<span class="swatch" style="background:{_e(value)}"></span>{content}'
            if n:
                cells.append(f'<td class="num">{content}</td>')
            else:
                cells.append(f'<td class="nw">{content}</td>' if len(value) <= 28 else f"<td>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(t.columns)}">(no rows)</td></tr>')
    parts = [f'<div class="block" id="table-{_e(t.name)}"><h3>{_e(t.title)}</h3>']
    if t.caption:
        parts.append(f'<p class="caption">{_inline_code(t.caption)}</p>')
    parts.append(f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>'
                 + "".join(body) + "</tbody></table></div>")
    if t.reading:
        parts.append(f'<p class="reading">{_e(t.reading)}</p>')
    parts.append("</div>")
    return "".join(parts)


def _figure_html(result: AnalysisResult, f: FigureInfo) -> str:
    path = result.analysis_dir / f.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"figure {path} is missing ({exc}); run `onepixel analyze "
                            f"{result.run_dir}` again") from exc
    return _png_block(data, f)


def _png_block(data: bytes, f: FigureInfo | ExtraFigure) -> str:
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    parts = [f'<div class="block" id="figure-{_e(f.name)}"><h3>{_e(f.title)}</h3><figure>'
             f'<img src="{uri}" alt="{_e(f.title)}"{dims}>']
    if f.caption:
        parts.append(f'<figcaption class="caption">{_inline_code(f.caption)}</figcaption>')
    parts.append("</figure>")
    if f.reading:
        parts.append(f'<p class="reading">{_e(f.reading)}</p>')
    parts.append("</div>")
    return "".join(parts)


def _note_html(n: Note) -> str:
    return f'<p class="note">{_inline_code(n.text)}</p>'


def _class_cards(result: AnalysisResult) -> list[tuple[str, str, str]]:
    """Multi-class RUNs: overall success and the most / least vulnerable class, from the
    ``class_success`` table (one card per class would not fit K classes)."""
    t = result.table("class_success")
    targeted = "Target" in t.columns
    off = 1 if targeted else 0
    per_class = [r for r in t.rows if r[0] != "all classes"]
    total = next((r for r in t.rows if r[0] == "all classes"), per_class[0])
    n, won, rate = total[1 + off], total[2 + off], total[3 + off]
    goal = f"reached class {total[1]}" if targeted else "fooled (another class predicted)"
    cards = [("Targeted success" if targeted else "Untargeted success",
              "–" if n == 0 else f"{rate:.1f}% success", f"{won:,} of {n:,} attacked images {goal}")]
    ranked = [r for r in per_class if r[1 + off]]
    if len(ranked) > 1:
        most = max(ranked, key=lambda r: (r[3 + off], r[1 + off]))
        least = min(ranked, key=lambda r: (r[3 + off], -r[1 + off]))
        cards.append(("Most vulnerable class", str(most[0]),
                      f"{most[3 + off]:.1f}% of {most[1 + off]:,} attacked; most robust: {least[0]} "
                      f"({least[3 + off]:.1f}%)"))
    return cards


def _cards(result: AnalysisResult) -> str:
    f = result.facts
    multiclass = result.has_table("class_success")
    cards = [("Images", f"{f.images:,}", f"{f.image_shape[1]}x{f.image_shape[0]} pixels"),
             ("Attacked", f"{f.attacked:,}", format_skips(dict(f.skip_reasons)))]
    if f.progress.unfinished:
        cards.insert(0, ("Unfinished", f"{f.images:,} of {f.planned:,}", "planned images done"))
    if multiclass:
        return _card_html(cards + _class_cards(result))
    for d in f.directions:
        if d["attacked"]:
            op = "<" if lowers_score(d["goal"]) else ">"
            cards.append((d["direction"], f"{d['success_percent']:.1f}% success",
                          f"{d['success']:,} of {d['attacked']:,} crossed {d['success_threshold']:g}; "
                          f"{d['strong_percent']:.1f}% {op} {d['strong_threshold']:g}; "
                          f"{d['early_percent']:.1f}% converged early"))
        else:
            cards.append((d["direction"], "not attacked",
                          "its only image was skipped" if d["images"] == 1 else
                          f"all {d['images']:,} images skipped"))
    return _card_html(cards)


def unbroken_note(result: AnalysisResult, audit_dir: Path | None = None) -> Note | None:
    """The summary's word on early convergence and the images the attack did not break: unbroken
    by this attack, not shown robust; naming `onepixel audit` and, with ``audit_dir``, its result.
    None when every attacked image was broken."""
    failed = [(d["direction"], d["attacked"] - d["success"], d["early"]) for d in result.facts.directions
              if d["attacked"] and d["attacked"] > d["success"]]
    if not failed:
        return None
    counts = "; ".join(f"{direction}: {n:,} not broken, {early:,} of the attacks converged early"
                       for direction, n, early in failed)
    text = (f"Unbroken by this attack, not shown robust ({counts}). Early convergence means "
            "differential evolution stopped after its first generation because its population stopped "
            "improving (the `tol` rule), not that no pixel can flip the image: the papers count it as a "
            "failed attack, nothing more.")
    verdict = ""
    if audit_dir is not None:
        try:
            verdict = audit_verdict(result.run_dir, audit_dir)
        except RunError as exc:
            log.warning("audit result not shown in the summary: %s", exc)
    if verdict:
        text += f" In this RUN, {verdict} (section \"How strong was the attack?\")."
    else:
        text += (f" A far stronger search, `onepixel audit {result.run_dir} --out "
                 f"{result.run_dir}/audit --failed`, tells whether a flipping pixel exists; the "
                 "report shows its result when `RUN/audit` holds one.")
    return Note("summary", text)


def _card_html(cards: list[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{_e(a)}</div><div class="big">{_e(b)}</div>'
        f'<div class="small">{_e(c)}</div></div>' for a, b, c in cards) + "</div>"


def render_report(result: AnalysisResult, extras: tuple[ExtraSection, ...] = (),
                  audit_dir: Path | None = None) -> str:
    """The report as an HTML string (figures read from ``result.analysis_dir``); ``extras``
    (the audit, the defences, the stealth section) follow the papers' sections. An unfinished
    RUN says so in the headline; ``audit_dir`` (an audit of this RUN) gives the summary the
    audit's result for the images the attack did not break."""
    f = result.facts
    title = f"One-pixel attack report: {f.model}"
    generated = time.strftime("%Y-%m-%d %H:%M")
    sub = (f"Model <b>{_e(f.model)}</b> · dataset <code>{_e(f.dataset)}</code>"
           + ("" if f.dataset_available else " (not reachable when analysed)")
           + (f" · campaign created {_e(f.created)}" if f.created else "")
           + f" · RUN <code>{_e(result.run_dir.name)}</code>")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">', f"<title>{_e(title)}</title>", f"<style>{CSS}</style>",
           '</head><body><div class="page">',
           f'<header><h1>One-pixel attack report{" (unfinished)" if f.progress.unfinished else ""}</h1>'
           f'<p class="sub">{sub}</p>'
           + (f'<p class="note" id="unfinished">{_inline_code(f.progress.sentence())}</p>'
              if f.progress.unfinished else "") + "</header>"]
    sections = []
    for key, heading in SECTIONS:
        tables, figures, notes = result.in_section(key)
        tables = [t for t in tables if t.markdown]
        if key == "classes" and not (tables or figures or notes):
            continue  # binary RUNs have no classes section
        if key == "confmaps" and not (tables or figures or notes):
            notes = [Note(key, EMPTY_SECTION[key])]
        sections.append((len(sections), key, heading, tables, figures, notes))
    toc = [(k, h) for _, k, h, *_ in sections] + [(x.key, x.heading) for x in extras]
    out.append('<nav class="toc" aria-label="Contents"><ol>' + "".join(
        f'<li><a href="#{k}">{_e(h)}</a></li>' for k, h in toc) + "</ol></nav>")
    for number, key, heading, tables, figures, notes in sections:
        out.append(f'<section id="{key}"><h2><span class="num">{number + 1}.</span>{_e(heading)}</h2>')
        if SECTION_INTROS.get(key):
            out.append(f'<p class="intro">{_e(SECTION_INTROS[key])}</p>')
        if key == "summary":
            out.append(_cards(result))
            unbroken = unbroken_note(result, audit_dir)
            if unbroken is not None:
                notes = [*notes, unbroken]
        out += [_note_html(n) for n in notes]
        if not (tables or figures or notes):
            why = "no image was attacked" if f.attacked == 0 else "no data for this section"
            out.append(_note_html(Note(key, f"Nothing to show: {why}.")))
        # Figures after the section's first table (the papers' order: table, then its plot).
        blocks = [_table_html(t) for t in tables[:1]] + [_figure_html(result, fg) for fg in figures] + \
                 [_table_html(t) for t in tables[1:]]
        if key == "summary":
            order = {"summary": 0, "skipped": 1}
            tables = sorted(tables, key=lambda t: order.get(t.name, 2))
            blocks = [_table_html(t) for t in tables] + [_figure_html(result, fg) for fg in figures]
        out += blocks
        if key == "periodicity" and f.attacked:
            out.append('<p class="caption">The per-pixel counts behind the heatmaps are in '
                       '<code>analysis/tables/locations_*.csv</code>.</p>')
        out.append("</section>")
    for number, x in enumerate(extras, start=len(sections) + 1):
        out.append(f'<section id="{_e(x.key)}"><h2><span class="num">{number}.</span>{_e(x.heading)}</h2>'
                   f'<p class="intro">{_inline_code(x.intro)}</p>')
        out += [_note_html(n) for n in x.notes]
        out += [_table_html(t) for t in x.tables[:1]] + [_png_block(fg.png, fg) for fg in x.figures] + \
               [_table_html(t) for t in x.tables[1:]]
        out.append("</section>")
    out.append(f"<footer>Generated {generated} by onepixel {_e(__version__)} from the files of "
               f"<code>{_e(result.run_dir)}</code> (config.json, attacks.csv, history.csv, confmaps"
               + ("; the audit, robustness and pareto folders named in their sections" if extras else "")
               + "); "
               "tables as CSV and Markdown in <code>analysis/tables</code>. Self-contained: no "
               "scripts, no external files.</footer>")
    out.append("</div></body></html>")
    return "\n".join(out)


def write_report(run_dir: str | Path, out: str | Path | None = None, *, reanalyze: bool = False,
                 audit: str | Path | None = None, robustness: str | Path | None = None,
                 pareto: str | Path | None = None, evaluation: str | Path | None = None) -> Path:
    """Write ``RUN/report.html``, running the analysis first when it is missing or stale.

    Parameters
    ----------
    run_dir : path
        A RUN folder written by ``onepixel attack``.
    out : path, optional
        Where to write (default ``RUN/report.html``).
    reanalyze : bool
        Recompute the analysis even when ``RUN/analysis`` is up to date.
    audit : path, optional
        An ``onepixel audit RUN --out DIR`` folder: adds "How strong was the attack?" (default:
        ``RUN/audit`` when it holds ``audit.csv``; none otherwise).
    robustness : path, optional
        An ``onepixel robustness DATASET --out DIR`` folder: adds "Defences".
    pareto : path, optional
        An ``onepixel pareto ... --out DIR`` folder: adds "How visible must the pixel be?"
        (default: ``RUN/pareto`` when it holds ``summary.json`` and ``front.csv``).
    evaluation : path, optional
        An ``onepixel evaluate DATASET -o DIR`` folder: adds "Robust accuracy under one-pixel
        attack".

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    RunError
        Missing or malformed RUN files (the message names the file).
    """
    run_dir = Path(run_dir)
    if reanalyze or is_stale(run_dir, need_figures=True):
        log.info("analysing %s first (RUN/analysis missing or older than the RUN)", run_dir)
        result = analyze_run(run_dir)
    else:
        result = load_analysis(run_dir)
    extras = []
    audit_dir = Path(audit) if audit is not None else default_audit_dir(run_dir)
    if audit_dir is not None:
        extras.append(audit_section(run_dir, audit_dir))
    if robustness is not None:
        extras.append(robustness_section(robustness))
    pareto_dir = Path(pareto) if pareto is not None else default_pareto_dir(run_dir)
    if pareto_dir is not None:
        extras.append(pareto_section(pareto_dir))
    if evaluation is not None:
        from onepixel.report.evaluate_section import evaluation_section

        extras.append(evaluation_section(evaluation))
    text = render_report(result, tuple(extras), audit_dir)
    path = Path(out) if out is not None else run_dir / "report.html"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
