"""The end-of-campaign summary (the papers' Tables 1-2 and headline counts) from attacks.csv rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np


def describe(values: Iterable[float]) -> dict[str, float | None]:
    """max, mean, median, sample SD (ddof=1) and min; ``None`` where undefined."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"max": None, "mean": None, "median": None, "sd": None, "min": None}
    return {"max": float(arr.max()), "mean": float(arr.mean()), "median": float(np.median(arr)),
            "sd": float(arr.std(ddof=1)) if arr.size > 1 else None, "min": float(arr.min())}


def _count(n: int, total: int) -> dict[str, float | int | None]:
    return {"count": n, "percent": round(100.0 * n / total, 2) if total else None}


def summarize(rows: Iterable[Mapping[str, str]], top_colours: int = 5) -> dict:
    """Per-direction summary of attacks.csv rows (dicts of strings, as csv.DictReader gives).

    Returns
    -------
    dict
        ``{"directions": {direction: {...}}, "images": N}``; see docs/run-format.md.
    """
    rows = list(rows)
    by_direction: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        by_direction.setdefault(row["direction"], []).append(row)
    out: dict = {"images": len(rows), "directions": {}}
    for direction in sorted(by_direction):
        group = by_direction[direction]
        attacked = [r for r in group if r["status"] == "attacked"]
        n = len(attacked)
        flag = lambda r, k: r[k] == "1"  # noqa: E731
        late = [r for r in attacked if not flag(r, "early_converged")]
        colours = Counter((int(r["r"]), int(r["g"]), int(r["b"])) for r in attacked)
        out["directions"][direction] = {
            "goal": group[0]["goal"],
            "attacked": n,
            "skipped": len(group) - n,
            "before": describe(float(r["original_score"]) for r in attacked),
            "after": describe(float(r["attacked_score"]) for r in attacked),
            "success": _count(sum(flag(r, "success") for r in attacked), n),
            "strong_success": _count(sum(flag(r, "strong_success") for r in attacked), n),
            "early_converged": _count(sum(flag(r, "early_converged") for r in attacked), n),
            "success_excluding_early": _count(sum(flag(r, "success") for r in late), len(late)),
            "mean_nit": float(np.mean([int(r["nit"]) for r in attacked])) if n else None,
            "top_colours": [{"rgb": list(rgb), "count": c}
                            for rgb, c in colours.most_common(top_colours)],
        }
    return out


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`summarize`'s output for the terminal."""
    lines = [f"{summary['images']} images"]
    for direction, d in summary["directions"].items():
        thresholds = ("< 0.5", "< 0.05") if d["goal"] == "decrease" else ("> 0.5", "> 0.95")
        lines.append(f"\n{direction}: {d['attacked']} attacked, {d['skipped']} skipped")
        if not d["attacked"]:
            continue
        lines.append(f"  {'':8}{'before':>10}{'after':>10}")
        for key in ("max", "mean", "median", "sd", "min"):
            b, a = d["before"][key], d["after"][key]
            fmt = lambda v: f"{v:10.4g}" if v is not None else f"{'-':>10}"  # noqa: E731
            lines.append(f"  {key:8}{fmt(b)}{fmt(a)}")
        s, st, e = d["success"], d["strong_success"], d["early_converged"]
        lines.append(f"  score {thresholds[0]}: {s['count']} ({s['percent']}%), "
                     f"{thresholds[1]}: {st['count']} ({st['percent']}%)")
        lines.append(f"  converged early: {e['count']} ({e['percent']}%), "
                     f"mean generations: {d['mean_nit']:.1f}")
        if d["top_colours"]:
            top = ", ".join(f"{tuple(c['rgb'])} x{c['count']}" for c in d["top_colours"][:3])
            lines.append(f"  most common colours: {top}")
    return "\n".join(lines)
