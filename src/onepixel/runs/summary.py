"""The one campaign summary: the papers' Tables 1-2 and headline counts, per direction.

:func:`summarize` is what ``summary.json`` holds, what ``onepixel attack`` and the demo print,
and the analysis and the report build their score and success tables from the same
:func:`score_stats` and :func:`success_counts` (with the one success rule,
:func:`onepixel.runs.schema.judge`). In ``summary.json`` undefined statistics (no attacked
image, the SD of one value) are ``null``; in the dataclasses they are ``nan``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.runs import schema
from onepixel.runs.evidence import compare_rate
from onepixel.runs.reader import AttackTable, load_run


def percent(count: int, total: int) -> float:
    """``100 * count / total``; ``nan`` when ``total`` is 0."""
    return 100.0 * count / total if total else float("nan")


@dataclass(frozen=True)
class ScoreStats:
    """Maximum, mean, median, sample SD and minimum of ``n`` scores (the papers' Tables 1-2)."""

    n: int
    max: float
    mean: float
    median: float
    sd: float
    min: float

    ROWS = (("Maximum", "max"), ("Mean", "mean"), ("Median", "median"),
            ("Standard deviation", "sd"), ("Minimum", "min"))


def score_stats(values: Sequence[float] | np.ndarray) -> ScoreStats:
    """Summary statistics of scores.

    Parameters
    ----------
    values : array_like, (N,)
        Scores; ``nan`` entries are ignored.

    Returns
    -------
    ScoreStats
        All ``nan`` when no value is left; ``sd`` (``ddof=1``) is ``nan`` for a single value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        nan = float("nan")
        return ScoreStats(0, nan, nan, nan, nan, nan)
    sd = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    return ScoreStats(int(v.size), float(v.max()), float(v.mean()), float(np.median(v)), sd,
                      float(v.min()))


@dataclass(frozen=True)
class SuccessCounts:
    """How many of ``n`` attacks crossed the success and the strong-success thresholds."""

    n: int
    success: int
    strong: int
    success_threshold: float
    strong_threshold: float
    goal: str

    @property
    def success_percent(self) -> float:
        return percent(self.success, self.n)

    @property
    def strong_percent(self) -> float:
        return percent(self.strong, self.n)

    @property
    def criterion(self) -> str:
        """Human-readable thresholds, e.g. ``< 0.5 / < 0.05``."""
        op = "<" if schema.lowers_score(self.goal) else ">"
        return f"{op} {self.success_threshold:g} / {op} {self.strong_threshold:g}"


def success_counts(goal: str, attacked_scores: np.ndarray,
                   success_threshold: float = schema.SUCCESS_THRESHOLD,
                   strong_threshold: float | None = None,
                   flags: tuple[np.ndarray, np.ndarray] | None = None) -> SuccessCounts:
    """Count attacks whose final score crossed the thresholds (:func:`~onepixel.runs.schema.judge`).

    Parameters
    ----------
    goal : {"decrease", "increase", "untargeted", "targeted"}
    attacked_scores : ndarray, (N,)
        Final scores of the attacks (``nan`` entries are not counted at all).
    success_threshold : float
    strong_threshold : float, optional
        Default: the papers' 0.05 for ``decrease`` and 0.95 for ``increase``.
    flags : (ndarray (N,) bool, ndarray (N,) bool), optional
        The RUN's ``success`` and ``strong_success`` columns: how multi-class goals count (their
        success is the predicted class, which the scores alone do not say).
    """
    s = np.asarray(attacked_scores, dtype=np.float64).ravel()
    keep = ~np.isnan(s)
    s = s[keep]
    if strong_threshold is None:
        strong_threshold = schema.strong_threshold(goal)
    if goal in schema.BINARY_GOALS:
        ok, strong = schema.judge(goal, s, success_threshold, strong_threshold, strong_threshold)
    elif flags is None:
        raise ValueError(f"{goal} attacks are counted from the success flags; pass flags=")
    else:
        ok, strong = (np.asarray(f, dtype=bool).ravel()[keep] for f in flags)
    return SuccessCounts(int(s.size), int(ok.sum()), int(strong.sum()), float(success_threshold),
                         float(strong_threshold), goal)


@dataclass(frozen=True)
class RunProgress:
    """How much of a campaign's plan is done: ``done`` of ``planned`` images have a row.

    ``planned`` is config.json's ``planned`` (the images the campaign set out to attack, after
    ``limit``); RUNs written before it was recorded have ``planned = None``, and nothing is
    claimed about them.
    """

    done: int
    planned: int | None
    run_dir: str = "RUN"
    dataset: str = "DATASET"

    @property
    def unfinished(self) -> bool:
        return self.planned is not None and self.done < self.planned

    @property
    def resume_command(self) -> str:
        """The command that continues the campaign where it stopped."""
        return f"onepixel attack {self.dataset} --out {self.run_dir}"

    def sentence(self) -> str:
        """``"UNFINISHED: 3 of 4 planned images done; ..."``, or ``""`` for a finished RUN."""
        if not self.unfinished:
            return ""
        return (f"UNFINISHED: {self.done:,} of {self.planned:,} planned images done; every number "
                f"below is of those {self.done:,} only. Resume with `{self.resume_command}` and the "
                "settings it was started with (config.json): it continues where it stopped.")


def run_progress(config: Mapping[str, Any], done: int, run_dir: str | Path = "RUN") -> RunProgress:
    """:class:`RunProgress` of a RUN from its config.json and its number of attacks.csv rows."""
    planned = config.get("planned")
    return RunProgress(int(done), None if planned is None else int(planned), str(run_dir),
                       str(config.get("dataset") or "DATASET"))


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _count(n: int, total: int) -> dict[str, float | int | None]:
    return {"count": n, "percent": round(100.0 * n / total, 2) if total else None}


def _describe(stats: ScoreStats) -> dict[str, float | None]:
    return {key: _json_number(getattr(stats, key)) for key in ("max", "mean", "median", "sd", "min")}


def summarize(attacks: AttackTable | Iterable[Mapping[str, Any]],
              settings: Mapping[str, Any] | None = None, top_colours: int = 5,
              planned: int | None = None) -> dict:
    """Per-direction summary of a RUN's attacks (``summary.json``; see docs/run-format.md).

    Parameters
    ----------
    attacks : AttackTable or iterable of dict
        The attacks.csv rows, as the reader's table or as dicts (``csv.DictReader`` rows).
    settings : mapping, optional
        ``config.json["attack"]``: the thresholds to judge by (default: the papers').
    top_colours : int
        How many most common attack colours to list.
    planned : int, optional
        The images the campaign set out to attack (config.json's ``planned``): recorded as
        ``planned``, with ``unfinished`` true when fewer rows than that are done.

    Returns
    -------
    dict
        ``{"images": N, "planned": P or None, "unfinished": bool, "directions": {direction: {...}}}``;
        each direction's ``skip_reasons`` counts skipped images by :func:`skip_category`.
    """
    table = attacks if isinstance(attacks, AttackTable) else AttackTable.from_rows(attacks)
    s = {**schema.DEFAULT_ATTACK_SETTINGS, **{k: v for k, v in (settings or {}).items()
                                              if k in schema.DEFAULT_ATTACK_SETTINGS and v is not None}}
    out: dict = {"images": len(table), "planned": planned,
                 "unfinished": planned is not None and len(table) < planned, "directions": {}}
    for direction in sorted(set(table.direction.tolist())):
        group = table.select(table.direction == direction)
        goal = str(group.goal[0])
        rows = group.select(group.attacked)
        n = len(rows)
        strong = float(s["strong_decrease_below"] if schema.lowers_score(goal)
                       else s["strong_increase_above"])
        late = ~rows.early_converged
        colours = Counter(zip(rows.r.tolist(), rows.g.tolist(), rows.b.tolist(), strict=True))
        success = success_counts(goal, rows.attacked_score, float(s["success_threshold"]), strong,
                                 (rows.success, rows.strong_success))
        success_late = success_counts(goal, rows.attacked_score[late], float(s["success_threshold"]),
                                      strong, (rows.success[late], rows.strong_success[late]))
        out["directions"][direction] = {
            "goal": goal,
            "attacked": n,
            "skipped": len(group) - n,
            "skip_reasons": skip_categories(group.skip_reason[~group.attacked]),
            "before": _describe(score_stats(rows.original_score)),
            "after": _describe(score_stats(rows.attacked_score)),
            # The thresholds judged by, so the terminal and the headlines state the RUN's own.
            "success_threshold": float(s["success_threshold"]),
            "strong_threshold": strong,
            "success": _count(success.success, n),
            "strong_success": _count(success.strong, n),
            "early_converged": _count(int(rows.early_converged.sum()), n),
            "success_excluding_early": _count(success_late.success, int(late.sum())),
            "mean_nit": float(rows.nit.mean()) if n else None,
            "top_colours": [{"rgb": list(rgb), "count": c}
                            for rgb, c in colours.most_common(top_colours)],
        }
    return out


def summarize_run(run_dir: str | Path, top_colours: int = 5) -> dict:
    """:func:`summarize` of a RUN folder, judged by the thresholds in its ``config.json``."""
    run = load_run(run_dir)
    return summarize(run.attacks, run.config.attack.settings, top_colours, run.config.planned)


#: Skip categories, in the order they are listed.
SKIP_CATEGORIES = ("ambiguous", "misclassified", "target class", "wrong size", "unreadable", "other")


def skip_category(reason: str) -> str:
    """The category of one ``skip_reason``: ``ambiguous`` (the papers' score rule), ``misclassified``
    or ``target class`` (K-class rules), ``wrong size``, ``unreadable`` (a file that is missing,
    truncated or not an image) or ``other``."""
    text = str(reason)
    if text.startswith("unreadable image"):
        return "wrong size" if "but the model takes" in text or "got shape" in text else "unreadable"
    if " scored " in text:
        return "ambiguous"
    if "target class" in text:
        return "target class"
    if "misclassif" in text or "predicts" in text or "already" in text:
        return "misclassified"
    return "other"


def skip_categories(reasons: Iterable[str]) -> dict[str, int]:
    """Skipped images per :func:`skip_category`, only the categories present, in list order."""
    counts = Counter(skip_category(r) for r in reasons)
    return {c: counts[c] for c in SKIP_CATEGORIES if counts[c]}


def format_skips(counts: Mapping[str, int]) -> str:
    """``"3 skipped (2 ambiguous, 1 wrong size)"``; ``"0 skipped"`` when none."""
    total = sum(counts.values())
    if not total:
        return "0 skipped"
    return f"{total:,} skipped (" + ", ".join(f"{n:,} {c}" for c, n in counts.items()) + ")"


def headlines(summary: Mapping[str, Any], attacks: AttackTable) -> tuple[str, ...]:
    """The papers' three findings in words: success per direction, even coordinates, colour.

    Parameters
    ----------
    summary : dict
        :func:`summarize`'s output.
    attacks : AttackTable
        The same rows (for the coordinates and colours of attacks that ran past generation 1).
    """
    out = []
    for direction, d in summary["directions"].items():
        if not d["attacked"]:
            continue
        s, e = d["success"], d["early_converged"]
        t = d.get("success_threshold", schema.SUCCESS_THRESHOLD)  # older summary.json: the papers'
        out.append(f"{direction}: {s['count']} of {d['attacked']} attacks crossed "
                   f"{t:g} ({s['percent']:.0f}%), {e['count']} converged early")
    effective = attacks.select(attacks.attacked & ~attacks.early_converged)
    if len(effective):
        n = len(effective)
        even = int(((effective.x % 2 == 0) & (effective.y % 2 == 0)).sum())
        evidence = compare_rate(even, n, 0.25)
        out.append(f"both pixel coordinates even in {even} of {n} attacks that ran past the first "
                   f"generation ({100 * even / n:.0f}%; 25% expected by chance): "
                   + evidence.claim("more often than chance" if even > 0.25 * n else
                                    "less often than chance"))
        colours = Counter(zip(effective.r.tolist(), effective.g.tolist(), effective.b.tolist(),
                              strict=True))
        rgb, count = max(colours.items(), key=lambda kv: (kv[1], kv[0]))
        out.append(f"most common attack colour {rgb} ({count} of {n})")
    return tuple(out)


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`summarize`'s output for the terminal."""
    lines = [f"{summary['images']} images"]
    planned = summary.get("planned")
    if summary.get("unfinished") and planned is not None:
        lines = [f"UNFINISHED: {summary['images']} of {planned} planned images done (run the same "
                 "`onepixel attack` command again to resume)"]
    for direction, d in summary["directions"].items():
        # summary.json written before the thresholds were recorded: the papers'.
        op = "<" if schema.lowers_score(d["goal"]) else ">"
        t = d.get("success_threshold", schema.SUCCESS_THRESHOLD)
        strong = d.get("strong_threshold", schema.strong_threshold(d["goal"]))
        thresholds = (f"{op} {t:g}", f"{op} {strong:g}")
        skips = (format_skips(d["skip_reasons"]) if "skip_reasons" in d
                 else f"{d['skipped']} skipped")
        lines.append(f"\n{direction}: {d['attacked']} attacked, {skips}")
        if not d["attacked"]:
            continue
        lines.append(f"  {'':8}{'before':>10}{'after':>10}")
        for key in ("max", "mean", "median", "sd", "min"):
            b, a = d["before"][key], d["after"][key]
            fmt = lambda v: f"{v:10.4g}" if v is not None else f"{'-':>10}"  # noqa: E731
            lines.append(f"  {key:8}{fmt(b)}{fmt(a)}")
        s, st, e = d["success"], d["strong_success"], d["early_converged"]
        if d["goal"] in schema.BINARY_GOALS:
            lines.append(f"  score {thresholds[0]}: {s['count']} ({s['percent']}%), "
                         f"{thresholds[1]}: {st['count']} ({st['percent']}%)")
        else:
            what = "class changed" if d["goal"] == "untargeted" else "target class reached"
            lines.append(f"  {what}: {s['count']} ({s['percent']}%), probability {thresholds[1]}: "
                         f"{st['count']} ({st['percent']}%)")
        lines.append(f"  converged early: {e['count']} ({e['percent']}%), "
                     f"mean generations: {d['mean_nit']:.1f}")
        if d["top_colours"]:
            top = ", ".join(f"{tuple(c['rgb'])} x{c['count']}" for c in d["top_colours"][:3])
            lines.append(f"  most common colours: {top}")
    return "\n".join(lines)
