"""`onepixel attack --method scan`: the audit's scan + refinement as a campaign's attack method,
and `onepixel audit --defence`. Every reported pixel re-scores to its score, the budget holds,
a scan RUN refuses to resume as DE, and analyze / report read it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from independent import csv_dicts
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.audit import AuditConfig, audit_run
from onepixel.audit.method import REFINE_RESERVE, ScanExecutor, choose_scan_step, scan_cost
from onepixel.audit.search import Refiner, apply_pixel, scan, scan_candidates
from onepixel.cli.main import main
from onepixel.datasets.images import load_image
from onepixel.errors import ConfigError, OnepixelError, RunError
from onepixel.models import ModelOptions
from onepixel.runs.schema import judge
from onepixel.scoring.policy import evaluator_for, load_confmap_classifier, load_scoring_classifier
from run_files import write_pair_dataset

#: An 8x8 block at the centre of the patches (where the cells are): a scan small enough for a
#: test; refinement may still step outside it.
BLOCK = tuple((x, y) for y in range(28, 36) for x in range(28, 36))
#: 64 pixels x 27 colours (step 128) + the refinement reserve fit; 64 colours (step 85) do not.
MAX_QUERIES = 3000


@pytest.fixture(scope="module")
def classifier(max_model_path):
    return load_confmap_classifier("max-mitosis", ModelOptions(device="cpu"))


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory, true_png, false_png, classifier):
    """A real scan RUN: true.png (mitosis-to-normal) and false.png (normal-to-mitosis)."""
    base = tmp_path_factory.mktemp("scan")
    data = write_pair_dataset(base / "data", true_png, false_png)
    run = base / "run"
    cfg = CampaignConfig(dataset=data, out=run, model_options=ModelOptions(device="cpu"),
                         attack=AttackConfig(method="scan", max_queries=MAX_QUERIES), progress=False)
    summary = run_campaign(cfg, classifier=classifier, executor=ScanExecutor(pixels=BLOCK))
    return run, summary


def test_choose_scan_step():
    assert scan_cost(64 * 64, 85) == 262_144 and scan_cost(64, 255) == 512
    # The finest grid that leaves the reserve: 64 colours need 4096 + 1024 queries on 64 pixels.
    assert choose_scan_step(64, 4096 + REFINE_RESERVE) == 85
    assert choose_scan_step(64, 4096 + REFINE_RESERVE - 1) == 128
    assert choose_scan_step(64, MAX_QUERIES) == 128
    assert choose_scan_step(64 * 64, 10**9) < choose_scan_step(64 * 64, 300_000) == 85
    assert choose_scan_step(64 * 64, None) == 85
    assert choose_scan_step(64, None, 17) == 17
    with pytest.raises(ConfigError, match="at least 33,792"):
        choose_scan_step(64 * 64, 33_791)
    with pytest.raises(ConfigError, match="AttackConfig.scan_step 85"):
        choose_scan_step(64, 4096, 85)


def test_attack_config_method_checks():
    assert AttackConfig().method == "de" and AttackConfig().max_queries is None
    assert AttackConfig(method="scan", max_queries=5000, scan_step=255).scan_step == 255
    for kwargs, message in [
        (dict(method="pgd"), "AttackConfig.method"),
        (dict(max_queries=5000), "AttackConfig.max_queries is for method scan or rs"),
        (dict(scan_step=85), "AttackConfig.scan_step is for method scan"),
        (dict(method="rs", scan_step=85), "AttackConfig.scan_step is for method scan"),
        (dict(labels_only=True), "AttackConfig.labels_only is for method 'rs'"),
        (dict(method="scan", max_queries=0), "AttackConfig.max_queries must be"),
        (dict(method="scan", scan_step=256), "AttackConfig.scan_step must be"),
        (dict(method="scan", max_queries=True), "AttackConfig.max_queries must be"),
        (dict(method="scan", pixels=3), "AttackConfig.pixels"),
        (dict(method="scan", max_colour_diff=0.2), "AttackConfig.max_colour_diff"),
        (dict(method="scan", stop_on_success=True), "AttackConfig.stop_on_success"),
    ]:
        with pytest.raises(OnepixelError, match=message):
            AttackConfig(**kwargs)


def test_runs_made_before_the_method_read_as_de(tmp_path):
    """A config.json without method / max_queries / scan_step resumes as DE, not as a scan."""
    from onepixel.attack.campaign import attack_settings
    from onepixel.runs.store import RunStore

    old = attack_settings(AttackConfig())
    for key in ("method", "max_queries", "scan_step"):
        old.pop(key)
    RunStore(tmp_path / "run").open({"attack": old})
    defaults = {"attack": attack_settings(AttackConfig())}
    assert RunStore(tmp_path / "run").open({"attack": attack_settings(AttackConfig())},
                                           defaults) == set()
    scan_settings = attack_settings(AttackConfig(method="scan", max_queries=40_000))
    with pytest.raises(RunError, match="attack.method: \"scan\" here, \"de\" in RUN"):
        RunStore(tmp_path / "run").open({"attack": scan_settings}, defaults)


def test_refiner_keeps_its_budget(classifier, true_png):
    """Under max_evaluations the climb never scores more, and stops when nothing fits."""
    image = load_image(true_png, classifier.input_shape)
    cmap = scan(image, classifier, 255, pixels=BLOCK[:8])
    starts = [c.vector for c in scan_candidates(cmap, "decrease", 4)]
    evaluator = evaluator_for(classifier, "auto", updating="deferred")
    for budget in (3, 300, 1000):
        refiner = Refiner(evaluator, image, "decrease", cmap, max_evaluations=budget)
        ends = refiner.refine(starts, rounds=3)
        assert 0 < refiner.evaluations <= budget
        assert len(refiner.history) == refiner.rounds_run + 1
        assert np.all(np.diff(refiner.history) <= 0)  # decrease: the best only goes down
        assert len(ends) == min(len(starts), budget)
    # 1000 queries: the neighbour moves of all 4 starts and 3 of their 4 colour lines fit.
    assert refiner.rounds_run == 1 and refiner.evaluations > 700


@pytest.mark.slow
def test_scan_campaign_rows_rescore_within_budget(scan_run, true_png, false_png):
    run, summary = scan_run
    rows = {r["image"]: r for r in csv_dicts(run / "attacks.csv")}
    assert sorted(rows) == ["mitosis/true.png", "normal/false.png"]
    # The classifier the test loads itself, on whole images (not the incremental path).
    plain = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"))
    history = {}
    for r in csv_dicts(run / "history.csv"):
        history.setdefault(r["image"], []).append((int(r["generation"]), float(r["best_score"])))
    min_queries = scan_cost(len(BLOCK), choose_scan_step(len(BLOCK), MAX_QUERIES))
    for name, png in (("mitosis/true.png", true_png), ("normal/false.png", false_png)):
        r = rows[name]
        assert r["status"] == "attacked"
        image = load_image(png, plain.input_shape)
        x, y, rgb = int(r["x"]), int(r["y"]), tuple(int(r[c]) for c in "rgb")
        rescored = float(plain.scores(apply_pixel(image, x, y, rgb)[None])[0])
        assert rescored == pytest.approx(float(r["attacked_score"]), abs=1e-5)
        assert min_queries < int(r["nfev"]) <= MAX_QUERIES
        success, strong = judge(r["goal"], float(r["attacked_score"]))
        assert (r["success"], r["strong_success"]) == (str(int(success)), str(int(strong)))
        assert r["early_converged"] == "0"
        gens = sorted(history[name])
        assert [g for g, _ in gens] == list(range(int(r["nit"]) + 1))
        assert gens[-1][1] == float(r["attacked_score"])
    # The scan at step 128 already finds true.png's flipping pixel inside the block.
    assert rows["mitosis/true.png"]["success"] == "1"
    config = json.loads((run / "config.json").read_text())
    assert config["attack"]["method"] == "scan" and config["attack"]["max_queries"] == MAX_QUERIES
    assert config["executor"]["method"] == "scan"
    assert summary["evaluations_this_session"] == sum(int(r["nfev"]) for r in rows.values())


@pytest.mark.slow
def test_scan_run_resume_refuses_de_and_analyze_report_read_it(scan_run, tmp_path, capsys,
                                                               classifier):
    run, _ = scan_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    dataset = Path(json.loads((work / "config.json").read_text())["dataset"])
    # Resuming as DE (the default method) is refused, naming the differing settings.
    rc = main(["-q", "attack", str(dataset), "--out", str(work), "--device", "cpu", "--no-progress"])
    assert rc == 2 and 'attack.method: "de" here, "scan" in RUN' in capsys.readouterr().err
    # The same scan settings resume: nothing left to attack, rows unchanged.
    before = (work / "attacks.csv").read_text()
    cfg = CampaignConfig(dataset=dataset, out=work, model_options=ModelOptions(device="cpu"),
                         attack=AttackConfig(method="scan", max_queries=MAX_QUERIES), progress=False)
    run_campaign(cfg, classifier=classifier, executor=ScanExecutor(pixels=BLOCK))
    assert (work / "attacks.csv").read_text() == before
    # Without ScanExecutor the scan still runs (the search comes from AttackConfig.method, not
    # from the executor), over the whole image: this budget is refused for it, not run as DE.
    with pytest.raises(ConfigError, match="below the coarsest scan"):
        run_campaign(cfg, classifier=classifier)
    assert main(["-q", "analyze", str(work), "--no-figures"]) == 0
    assert (work / "analysis" / "tables.md").is_file()
    assert main(["-q", "report", str(work)]) == 0
    assert "mitosis-to-normal" in (work / "report.html").read_text()


def test_cli_scan_option_errors(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "mitosis").mkdir(parents=True)
    (data / "normal").mkdir(parents=True)
    for args, message in [
        (["--max-queries", "5000"], "--max-queries is for method scan or rs"),
        (["--method", "scan", "--pixels", "3"], "--pixels"),
    ]:
        rc = main(["-q", "attack", str(data), "--out", str(tmp_path / "run"), "--no-progress",
                   *args])
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_scan_budget_too_small_is_refused_before_the_run(tmp_path, capsys, true_png):
    data = tmp_path / "data"
    (data / "mitosis").mkdir(parents=True)
    shutil.copy(true_png, data / "mitosis" / "true.png")
    rc = main(["-q", "attack", str(data), "--out", str(tmp_path / "run"), "--no-progress",
               "--device", "cpu", "--method", "scan", "--max-queries", "20200"])
    assert rc == 2 and "give at least 33,792" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # On Ray too (scan runs there since issue 28): refused before Ray starts or the RUN exists.
    rc = main(["-q", "attack", str(data), "--out", str(tmp_path / "run"), "--no-progress",
               "--device", "cpu", "--method", "scan", "--max-queries", "20200",
               "--executor", "ray", "--workers", "2"])
    assert rc == 2 and "give at least 33,792" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_audit_through_a_defence(scan_run, tmp_path, true_png):
    """With --defence the audit scores the defended pipeline (brute force), reports pixels that
    re-score through it, and records the defence so a resume without it is refused."""
    run, _ = scan_run
    config = AuditConfig(step=255, top=1, rounds=1, pixels=BLOCK[:4], images=("true.png",),
                         progress=False)
    out = tmp_path / "audit"
    summary = audit_run(run, out, config, model_options=ModelOptions(device="cpu"),
                        defence="median3")
    assert summary["defence"] == "median3"
    row = csv_dicts(out / "audit.csv")[0]
    defended = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"), "median3")
    image = load_image(true_png, defended.input_shape)
    attacked = apply_pixel(image, int(row["x"]), int(row["y"]), [int(row[c]) for c in "rgb"])
    assert float(row["best_score"]) == pytest.approx(float(defended.scores(attacked[None])[0]),
                                                     abs=1e-9)
    # A median filter removes a lone pixel: the undefended flip does not survive it.
    assert row["status"] == "not-found"
    with pytest.raises(RunError, match="defence"):
        audit_run(run, out, config, model_options=ModelOptions(device="cpu"))


@pytest.mark.slow
def test_audit_scan_on_a_map_executor_equals_local(scan_run, tmp_path):
    """--executor ray: the audit's scan through a MapExecutor (the local one, then Ray actors)
    gives the same audit.csv as the scan in this process."""
    from onepixel.confmap.engine import local_map

    run, _ = scan_run
    config = AuditConfig(step=255, top=2, rounds=1, pixels=BLOCK[:6], progress=False)
    options = ModelOptions(device="cpu")
    audit_run(run, tmp_path / "here", config, model_options=options)
    expected = csv_dicts(tmp_path / "here" / "audit.csv")
    assert len(expected) == 2
    calls = []

    def counting(*args):
        calls.append(args[4])  # the spec the workers would load
        return local_map(*args)

    audit_run(run, tmp_path / "mapped", config, model_options=options, mapper=counting)
    assert calls == ["max-mitosis", "max-mitosis"]
    assert csv_dicts(tmp_path / "mapped" / "audit.csv") == expected
    # Through a defence the mapper gets the defended model; Ray's workers then load the same
    # pipeline (tests/test_scaleout.py: a Ray map through median3 equals the local one).
    ray = pytest.importorskip("ray")
    from onepixel.scaleout import RayMapper
    from onepixel.scaleout.config import ExecutorConfig

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        audit_run(run, tmp_path / "ray", config, model_options=options,
                  mapper=RayMapper(ExecutorConfig(kind="ray", workers=1)))
    finally:
        ray.shutdown()
    rows = csv_dicts(tmp_path / "ray" / "audit.csv")
    # Ray workers score with their own copy of the model: the same pixels, scores to ~1e-6.
    for got, want in zip(rows, expected, strict=True):
        assert [got[k] for k in ("image", "status", "x", "y", "r", "g", "b", "queries")] == \
            [want[k] for k in ("image", "status", "x", "y", "r", "g", "b", "queries")]
        assert float(got["best_score"]) == pytest.approx(float(want["best_score"]), abs=1e-6)
