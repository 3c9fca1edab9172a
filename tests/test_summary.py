"""The one summary (summary.json, the terminal table, the demo's headlines) against hand-computed values."""

from __future__ import annotations

import json

import pytest

from onepixel.runs.reader import AttackTable
from onepixel.runs.schema import ATTACK_COLUMNS, AttackResult, judge
from onepixel.runs.summary import format_summary, headlines, summarize, summarize_run


def _attacked(image, direction, goal, before, after, xy, rgb, nit, early=False):
    success, strong = judge(goal, after)
    return AttackResult(image=image, label=direction.split("-")[0], direction=direction, goal=goal,
                        status="attacked", skip_reason="", original_score=before,
                        attacked_score=after, x=xy[0], y=xy[1], r=rgb[0], g=rgb[1], b=rgb[2],
                        nit=nit, nfev=200 * (nit + 1), early_converged=early, success=success,
                        strong_success=strong, history=(before, after))


def _skipped(image, direction, goal, before):
    return AttackResult(image=image, label=direction.split("-")[0], direction=direction, goal=goal,
                        status="skipped", skip_reason="ambiguous", original_score=before)


ROWS = [
    # mitosis-to-normal: scores before 0.99, 0.95, 0.97; after 0.02 (strong), 0.40, 0.80 (early)
    _attacked("m1", "mitosis-to-normal", "decrease", 0.99, 0.02, (2, 4), (255, 255, 0), 30),
    _attacked("m2", "mitosis-to-normal", "decrease", 0.95, 0.40, (6, 8), (255, 255, 0), 50),
    _attacked("m3", "mitosis-to-normal", "decrease", 0.97, 0.80, (3, 5), (0, 0, 255), 1, early=True),
    _skipped("m4", "mitosis-to-normal", "decrease", 0.5),
    # normal-to-mitosis: one attack, 0.01 -> 0.96 (strong)
    _attacked("n1", "normal-to-mitosis", "increase", 0.01, 0.96, (1, 1), (10, 20, 30), 7),
]


def _table(rows):
    return AttackTable.from_rows(dict(zip(ATTACK_COLUMNS, r.csv_row(), strict=True)) for r in rows)


def test_summary_matches_hand_computed_values():
    s = summarize(_table(ROWS))
    assert s["images"] == 5
    m = s["directions"]["mitosis-to-normal"]
    assert (m["goal"], m["attacked"], m["skipped"]) == ("decrease", 3, 1)
    assert m["before"]["max"] == 0.99 and m["before"]["min"] == 0.95
    assert m["before"]["mean"] == pytest.approx((0.99 + 0.95 + 0.97) / 3)
    assert m["before"]["median"] == 0.97
    # sample SD of 0.02, 0.40, 0.80: mean 0.40666..., squares 0.14868+0.00004+0.15468 -> /2
    after = [0.02, 0.40, 0.80]
    mean = sum(after) / 3
    sd = (sum((v - mean) ** 2 for v in after) / 2) ** 0.5
    assert m["after"]["sd"] == pytest.approx(sd) and m["after"]["median"] == 0.40
    assert m["success"] == {"count": 2, "percent": 66.67}
    assert m["strong_success"] == {"count": 1, "percent": 33.33}
    assert m["early_converged"] == {"count": 1, "percent": 33.33}
    assert m["success_excluding_early"] == {"count": 2, "percent": 100.0}
    assert m["mean_nit"] == pytest.approx((30 + 50 + 1) / 3)
    assert m["top_colours"][0] == {"rgb": [255, 255, 0], "count": 2}
    n = s["directions"]["normal-to-mitosis"]
    assert n["success"] == {"count": 1, "percent": 100.0}
    assert n["strong_success"]["count"] == 1
    assert n["before"]["sd"] is None  # one value: undefined, null in JSON
    json.dumps(s)  # JSON-able as it is


def test_summary_of_nothing_attacked_is_null_not_nan():
    s = summarize(_table([_skipped("m4", "mitosis-to-normal", "decrease", 0.5)]))
    d = s["directions"]["mitosis-to-normal"]
    assert d["attacked"] == 0 and d["before"]["mean"] is None and d["mean_nit"] is None
    assert d["success"] == {"count": 0, "percent": None}
    assert "NaN" not in json.dumps(s)


def test_summary_uses_the_runs_thresholds():
    rows = [_attacked("m", "mitosis-to-normal", "decrease", 0.99, 0.3, (0, 0), (1, 2, 3), 9)]
    assert summarize(_table(rows))["directions"]["mitosis-to-normal"]["success"]["count"] == 1
    strict = summarize(_table(rows), {"success_threshold": 0.2})
    assert strict["directions"]["mitosis-to-normal"]["success"]["count"] == 0


def test_summary_from_csv_dict_rows_equals_from_table():
    dict_rows = [dict(zip(ATTACK_COLUMNS, r.csv_row(), strict=True)) for r in ROWS]
    assert summarize(dict_rows) == summarize(_table(ROWS))


def test_format_summary_and_headlines():
    s = summarize(_table(ROWS))
    text = format_summary(s)
    assert text.splitlines()[0] == "5 images"
    assert "mitosis-to-normal: 3 attacked, 1 skipped" in text
    assert "score < 0.5: 2 (66.67%), < 0.05: 1 (33.33%)" in text
    assert "converged early: 1 (33.33%), mean generations: 27.0" in text
    assert "(255, 255, 0) x2" in text
    lines = headlines(s, _table(ROWS))
    assert lines[0] == "mitosis-to-normal: 2 of 3 attacks crossed 0.5 (67%), 1 converged early"
    # the three attacks past generation 1: (2,4) and (6,8) even, (1,1) not -> 2 of 3
    assert "both pixel coordinates even in 2 of 3" in lines[2]
    assert "(255, 255, 0) (2 of 3)" in lines[3]


def test_summarize_run_reads_the_files(tmp_path):
    from onepixel.runs.store import RunStore

    store = RunStore(tmp_path / "run")
    store.open({"attack": {"success_threshold": 0.5}})
    store.append(ROWS)
    assert summarize_run(tmp_path / "run") == summarize(_table(ROWS), {"success_threshold": 0.5})
