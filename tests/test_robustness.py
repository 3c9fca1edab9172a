"""`onepixel robustness`: clean cost and the attack per defence, on the real MAX model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from onepixel.attack.config import AttackConfig
from onepixel.audit.store import AUDIT_COLUMNS
from onepixel.cli.main import main
from onepixel.datasets.images import load_image, scan_dataset
from onepixel.defences.wrapper import defend
from onepixel.errors import ConfigError
from onepixel.models.options import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.robustness import RobustnessConfig, parse_defences, run_folder_name
from onepixel.robustness.runner import clean_cost, run_robustness
from onepixel.runs.reader import read_attacks_csv
from onepixel.scoring.policy import load_scoring_classifier
from run_files import write_patch_dataset

TINY = AttackConfig(de=DEConfig(population=20, maxiter=4))


def test_parse_defences_canonical_and_chains():
    assert parse_defences("none, median3,blur:1,repair+median3") == (
        "none", "median3", "blur:1", "repair:0.5,median3")
    assert run_folder_name("repair:0.5,median3") == "repair-0.5+median3"
    assert run_folder_name("none") == "none"
    with pytest.raises(ConfigError, match="RobustnessConfig.defences"):
        parse_defences("median3,nope")
    with pytest.raises(ConfigError, match="twice"):
        parse_defences("median3,median3")
    with pytest.raises(ConfigError, match="at least one"):
        parse_defences(" , ")


def test_clean_cost_counts_changes_agreement_and_accuracy():
    cost = clean_cost(np.array([0.9, 0.4, 0.2]), np.array([0.8, 0.6, 0.2]),
                      np.array([True, True, False]))
    assert cost.mean_abs_change == pytest.approx(0.1)
    assert cost.max_abs_change == pytest.approx(0.2)
    assert cost.label_agreement == pytest.approx(2 / 3)  # the second image's label flips
    assert cost.accuracy == pytest.approx(2 / 3)
    assert clean_cost(np.array([0.7]), np.array([0.7])).accuracy is None


def _rows(path):
    with open(path, newline="") as fh:
        return {r["defence"]: r for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_robustness_rows_clean_cost_and_resume(tmp_path, true_png, false_png, max_model_path, capsys):
    dataset = write_patch_dataset(tmp_path / "ds", true_png, false_png)
    out = tmp_path / "rob"
    base = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"))
    cfg = RobustnessConfig(dataset=dataset, out=out, defences=("none", "median3"),
                           model_options=ModelOptions(device="cpu"), attack=TINY, progress=False)
    rows = run_robustness(cfg, classifier=base)
    assert [r.defence for r in rows] == ["none", "median3"]
    assert all(r.new_evaluations > 0 for r in rows)

    # The clean cost, recomputed here from the model's own scores.
    items = scan_dataset(dataset).items
    images = np.stack([load_image(it.path, base.input_shape) for it in items])
    plain = base.scores(images)
    median = defend(base, "median3").scores(images)
    positive = np.array([it.positive for it in items])
    table = _rows(out / "robustness.csv")
    assert set(table) == {"none", "median3"}
    none, med = table["none"], table["median3"]
    assert int(none["images"]) == int(med["images"]) == len(items) == 10
    assert float(none["clean_mean_abs_change"]) == 0.0 and float(none["label_agreement"]) == 1.0
    assert float(med["clean_mean_abs_change"]) == pytest.approx(np.abs(median - plain).mean(), rel=1e-5)
    assert float(med["clean_mean_abs_change"]) > 0
    assert float(med["accuracy"]) == pytest.approx(np.mean((median > 0.5) == positive), rel=1e-5)
    assert float(none["accuracy"]) == pytest.approx(np.mean((plain > 0.5) == positive), rel=1e-5)

    # The attack columns are the campaign's, through each defence.
    for name, row in table.items():
        run = out / "runs" / run_folder_name(name)
        attacks = read_attacks_csv(run / "attacks.csv")
        done = attacks.select(attacks.attacked)
        assert json.loads((run / "config.json").read_text())["defence"] == name
        assert int(row["attacked"]) == len(done) and int(row["skipped"]) == len(attacks) - len(done)
        assert float(row["success_rate"]) == pytest.approx(done.success.mean(), rel=1e-5)
        assert float(row["median_queries"]) == pytest.approx(np.median(done.nfev), rel=1e-5)
        even = np.mean((done.x % 2 == 0) & (done.y % 2 == 0))
        assert float(row["even_even_share"]) == pytest.approx(even, rel=1e-5)
        assert row["audit_success_rate"] == ""
    summary = json.loads((out / "robustness.json").read_text())
    assert [d["defence"] for d in summary["defences"]] == ["none", "median3"]
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # An audit of the undefended run (hand-written here: 1 of 2 vulnerable) is read when present.
    audit = out / "runs" / "none" / "audit"
    audit.mkdir()
    with open(audit / "audit.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(AUDIT_COLUMNS)
        for status in ("vulnerable", "not-found"):
            w.writerow([{"status": status, "image": "a", "goal": "decrease"}.get(c, "0")
                        for c in AUDIT_COLUMNS])

    # Resumed through the CLI with the same attack: no new attack, the same rows.
    lines = {n: (out / "runs" / n / "attacks.csv").read_text() for n in ("none", "median3")}
    assert main(["robustness", str(dataset), "--out", str(out), "--defences", "none,median3",
                 "--popsize", "20", "--maxiter", "4", "--device", "cpu", "--no-progress"]) == 0
    assert "median3" in capsys.readouterr().out
    again = _rows(out / "robustness.csv")
    assert {n: (out / "runs" / n / "attacks.csv").read_text() for n in lines} == lines
    for name in ("none", "median3"):
        assert int(again[name]["new_evaluations"]) == 0
        assert again[name]["success_rate"] == table[name]["success_rate"]
    assert float(again["none"]["audit_success_rate"]) == 0.5
