"""RunConfig: config.json read once, typed, with defaults for older RUNs; the report and the
analysis state the RUN's own thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onepixel.attack.campaign import attack_settings
from onepixel.attack.config import AttackConfig
from onepixel.errors import RunError
from onepixel.report import analyze_run
from onepixel.report.html import render_report
from onepixel.runs import RunConfig, format_summary, load_run, load_run_config, summarize_run
from onepixel.runs.schema import DEFAULT_ATTACK_SETTINGS
from onepixel.runs.summary import headlines
from test_analysis_runs import small_run, write_run

# The first config.json format (onepixel's first campaigns): no classes, target, defence,
# evaluator, executor or engine_choice, and an ``attack`` without the later settings.
OLD = {
    "format": 1, "onepixel_version": "0.1.0", "created": "2026-11-23T19:30:00+00:00",
    "dataset": "/data/tupac", "positive_label": "mitosis", "negative_label": "normal",
    "model": {"spec": "max-mitosis", "name": "max-mitosis", "sha256": "1888ef"},
    "attack": {"population": 200, "maxiter": 100, "mutation": 0.5, "recombination": 0.7,
               "tol": 0.01, "atol": 0.0, "updating": "immediate", "seed": 0,
               "skip_positive_below": 0.9, "skip_negative_above": 0.1, "success_threshold": 0.5},
    "device": "cpu", "engine": "OnnxClassifier", "batch_images": 32, "limit": None,
    "versions": {"python": "3.11.7"},
}

# Non-default thresholds: every caption must show these, not the papers' 0.9 / 0.1 / 0.5.
THRESHOLDS = {"skip_positive_below": 0.8, "skip_negative_above": 0.2, "success_threshold": 0.25,
              "strong_decrease_below": 0.03, "strong_increase_above": 0.97}


def test_old_format_reads_with_the_defaults():
    cfg = RunConfig.from_json(OLD)
    assert cfg.found and cfg.format == 1 and cfg.dataset == Path("/data/tupac")
    assert cfg.classes == () and not cfg.multiclass and cfg.target is None
    assert cfg.defence == "none" and cfg.executor_kind == "local" and cfg.engine_choice is None
    assert cfg.evaluator is None and cfg.limit is None and cfg.batch_images == 32
    assert cfg.model.spec == "max-mitosis" and cfg.model.sha256 == "1888ef"
    a = cfg.attack
    # Absent keys take the papers' values, recorded ones are kept.
    assert a.strong_decrease_below == DEFAULT_ATTACK_SETTINGS["strong_decrease_below"] == 0.05
    assert a.strong_increase_above == 0.95 and a.success_threshold == 0.5
    assert a.pixels == 1 and a.method == "de" and a.max_colour_diff is None
    assert a.population == 200 and a.maxiter == 100
    assert list(a.de_settings) == ["population", "maxiter", "mutation", "recombination", "tol",
                                   "atol", "updating", "seed"]
    assert cfg.raw == OLD
    # Older still: a bare model spec, K-class RUNs' null labels, no attack at all.
    bare = RunConfig.from_json({"model": "model.onnx", "positive_label": None, "defence": None})
    assert bare.model.spec == "model.onnx" and bare.model.title == "model.onnx"
    assert bare.positive_label == "mitosis" and bare.defence == "none"
    assert bare.attack.settings == DEFAULT_ATTACK_SETTINGS
    # No config.json at all.
    none = RunConfig.from_json(None)
    assert not none.found and none.dataset is None and none.attack.success_threshold == 0.5


def test_current_format_round_trips_what_the_campaign_writes():
    attack = AttackConfig(pixels=3, max_colour_diff=0.25, **THRESHOLDS)
    current = {**OLD, "classes": ["a", "b", "c"], "target": "b", "positive_label": None,
               "negative_label": None, "defence": "median3", "evaluator": "IncrementalEvaluator",
               "executor": {"kind": "ray", "workers": 2}, "limit": 40,
               "engine_choice": {"chosen": "incremental", "cached": True},
               # The writer's own function: a renamed key fails here, not in a report.
               "attack": json.loads(json.dumps(attack_settings(attack)))}
    cfg = RunConfig.from_json(current)
    assert cfg.classes == ("a", "b", "c") and cfg.multiclass and cfg.target == "b"
    assert cfg.defence == "median3" and cfg.executor_kind == "ray" and cfg.limit == 40
    assert cfg.engine_choice == {"chosen": "incremental", "cached": True}
    for name, value in THRESHOLDS.items():
        assert getattr(cfg.attack, name) == value, name
    assert cfg.attack.pixels == 3 and cfg.attack.max_colour_diff == 0.25
    assert cfg.attack.population == attack.de.population and cfg.attack.maxiter == attack.de.maxiter
    assert cfg.attack.strong_threshold("decrease") == 0.03
    assert cfg.attack.strong_threshold("targeted") == 0.97


@pytest.mark.parametrize(("patch", "key"), [
    ({"attack": {"success_threshold": "half"}}, "attack.success_threshold"),
    ({"attack": {"pixels": 1.5}}, "attack.pixels"),
    ({"attack": [0.5]}, "attack"),
    ({"classes": "abc"}, "classes"),
])
def test_a_wrong_value_names_the_file_and_key(patch, key):
    with pytest.raises(RunError, match=rf"RUN/config\.json: {key} is"):
        RunConfig.from_json({**OLD, **patch}, "RUN/config.json")


def test_load_run_returns_the_typed_config(tmp_path):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    run = load_run(run_dir)
    assert isinstance(run.config, RunConfig) and run.config == load_run_config(run_dir)
    (run_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=r"config\.json: expected a JSON object, got list"):
        load_run(run_dir)
    (run_dir / "config.json").unlink()
    assert not load_run(run_dir).config.found


def test_report_and_analysis_state_the_runs_own_thresholds(tmp_path):
    run_dir, _ = small_run(tmp_path)
    attack = {**json.loads((run_dir / "config.json").read_text())["attack"], **THRESHOLDS}
    rows = list(_rows(run_dir))
    write_run(run_dir, rows, tmp_path / "dataset", config={"attack": attack})
    # Judged by the RUN's 0.25, not 0.5: m1 (0.30) fails, n2 (0.30) succeeds.
    summary = summarize_run(run_dir)
    assert summary["directions"]["mitosis-to-normal"]["success"]["count"] == 1  # m0 (0.02)
    assert summary["directions"]["normal-to-mitosis"]["success"]["count"] == 2  # n0 (0.70), n2 (0.30)
    terminal = format_summary(summary)
    assert "score < 0.25: 1 " in terminal and "score > 0.25: 2 " in terminal and "> 0.97" in terminal
    assert "< 0.5" not in terminal and "> 0.95" not in terminal
    assert "attacks crossed 0.25 " in headlines(summary, load_run(run_dir).attacks)[0]
    # Without figures (matplotlib would take seconds): the tables and captions are the same.
    result = analyze_run(run_dir, figures=False)
    tables = (run_dir / "analysis" / "tables.md").read_text(encoding="utf-8")
    html = render_report(result)
    for text in (tables, html):
        assert "positives scoring at least 0.8 and negatives scoring at most 0.2" in text
        assert "ended below 0.8, increase attacks that ended above 0.2" in text
        assert "success threshold (0.25)" in text and "(0.03 / 0.97)" in text
        assert "crosses 0.25; strong: &lt; 0.03" in text or "crosses 0.25; strong: < 0.03" in text
        for paper in ("at least 0.9", "at most 0.1", "ended below 0.9", "ended above 0.1",
                      "(0.05 / 0.95", "crosses 0.5"):
            assert paper not in text, paper


def _rows(run_dir: Path):
    import csv

    with open(run_dir / "attacks.csv", newline="") as fh:
        yield from csv.DictReader(fh)
