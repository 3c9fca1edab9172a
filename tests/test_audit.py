"""`onepixel audit`: every reported pixel re-scores to its score, the audit is never worse than
DE, per-position optima equal the confidence-map path, and the folder resumes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.audit import AUDIT_COLUMNS, AuditConfig, ExactPositions, audit_run, parse_exact_positions
from onepixel.audit.exact import position_optima
from onepixel.audit.search import apply_pixel, energy, scan
from onepixel.cli.main import main
from onepixel.confmap.result import colour_grid
from onepixel.datasets.images import load_image
from onepixel.errors import ConfigError, RunError
from onepixel.models import ModelOptions
from onepixel.models.registry import load_classifier
from onepixel.optimize.de import DEConfig
from onepixel.runs.schema import judge
from onepixel.scoring.evaluators import HostEvaluator
from onepixel.scoring.policy import load_confmap_classifier
from run_files import write_pair_dataset

FAST = AttackConfig(de=DEConfig(population=20, maxiter=6))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, true_png, false_png, max_model_path):
    """A real RUN: true.png (mitosis-to-normal) and false.png (normal-to-mitosis, which
    converges early), attacked with a small DE."""
    base = tmp_path_factory.mktemp("audit")
    data = write_pair_dataset(base / "data", true_png, false_png)
    run = base / "run"
    run_campaign(CampaignConfig(dataset=data, out=run, model_options=ModelOptions(device="cpu"),
                                attack=FAST, progress=False))
    return run


@pytest.fixture(scope="module")
def classifier(max_model_path):
    return load_confmap_classifier("max-mitosis", ModelOptions(device="cpu"))


def _attacks(run) -> dict[str, dict]:
    with open(run / "attacks.csv", newline="") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def _near_de_pixels(run) -> tuple[tuple[int, int], ...]:
    """A 4x4 block at each DE pixel: a small scan (keeps the test short) that DE's own pixel
    does not have to be the best of."""
    out = set()
    for r in _attacks(run).values():
        x, y = int(r["x"]), int(r["y"])
        out |= {(min(max(x + dx, 0), 63), min(max(y + dy, 0), 63))
                for dx in range(-2, 2) for dy in range(-2, 2)}
    return tuple(sorted(out))


def _read_audit(out) -> tuple[list[str], list[dict]]:
    with open(out / "audit.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_parse_exact_positions():
    spec = parse_exact_positions("10,12; 3,4;top:2;de;10,12")
    assert spec.positions == ((10, 12), (3, 4)) and spec.top == 2 and spec.de
    assert parse_exact_positions(spec.as_text()) == spec
    assert not parse_exact_positions("")
    for bad in ("10", "top:0", "x,y", "-1,2"):
        with pytest.raises(ConfigError, match="parse_exact_positions"):
            parse_exact_positions(bad)
    with pytest.raises(ConfigError, match="step"):
        AuditConfig(step=0)
    with pytest.raises(ConfigError, match="selection"):
        AuditConfig(selection="some")


@pytest.mark.slow
def test_audit_rows_rescore_and_never_lose_to_de(run_dir, classifier, tmp_path):
    out = tmp_path / "audit"
    config = AuditConfig(step=255, top=1, rounds=1, pixels=_near_de_pixels(run_dir),
                         exact=ExactPositions(de=True), exact_step=85, progress=False)
    summary = audit_run(run_dir, out, config, classifier=classifier)
    header, rows = _read_audit(out)
    assert tuple(header) == AUDIT_COLUMNS
    attacks = _attacks(run_dir)
    assert sorted(r["image"] for r in rows) == sorted(attacks)
    # An independent scorer: the ONNX Runtime network, not the torch one the audit used.
    onnx = load_classifier("max-mitosis", ModelOptions(device="cpu", engine="onnxruntime"))
    dataset = json.loads((run_dir / "config.json").read_text())["dataset"]
    for row in rows:
        de = attacks[row["image"]]
        image = load_image(f"{dataset}/{row['image']}")
        pixel = [int(row[k]) for k in ("x", "y", "r", "g", "b")]
        attacked = apply_pixel(image, pixel[0], pixel[1], pixel[2:])
        score = float(row["best_score"])
        assert classifier.scores(attacked[None])[0] == pytest.approx(score, abs=1e-6)
        assert onnx.scores(attacked[None])[0] == pytest.approx(score, abs=1e-5)
        goal = row["goal"]
        assert goal == de["goal"]
        assert row["status"] == ("vulnerable" if judge(goal, score)[0] else "not-found")
        # Never worse than DE on the same image (DE's pixel is among the re-scored finalists).
        assert energy(goal, score) <= energy(goal, float(de["attacked_score"])) + 1e-6
        assert float(row["de_score"]) == pytest.approx(float(de["attacked_score"]), rel=1e-9)
        assert row["de_success"] == de["success"]
        assert row["de_early_converged"] == de["early_converged"]
        # Scan (8 colours per scanned pixel) + refinement + exact (64) + re-scoring.
        assert int(row["queries"]) > 8 * len(config.pixels) + 64
    with open(out / "exact.csv", newline="") as fh:
        exact = list(csv.DictReader(fh))
    assert sorted(e["image"] for e in exact) == sorted(attacks)
    for e in exact:
        de = attacks[e["image"]]
        assert e["source"] == "de" and (e["x"], e["y"]) == (de["x"], de["y"])
        assert int(e["evaluations"]) == 64
    saved = json.loads((out / "summary.json").read_text())
    assert saved["images"] == 2 == summary["images"]
    dec = saved["goals"]["decrease"]
    assert dec["audited"] == 1
    assert dec["vulnerable"] == sum(r["status"] == "vulnerable" for r in rows if r["goal"] == "decrease")

    # Rerun: nothing is audited again; a torn last line is cut and that image redone.
    before = (out / "audit.csv").read_bytes()
    audit_run(run_dir, out, config, classifier=classifier)
    assert (out / "audit.csv").read_bytes() == before
    lines = before.decode().splitlines(keepends=True)
    (out / "audit.csv").write_text("".join(lines[:-1]) + lines[-1][:10])
    audit_run(run_dir, out, config, classifier=classifier)
    _, again = _read_audit(out)
    assert sorted(r["image"] for r in again) == sorted(attacks)
    redone = next(r for r in again if r["image"] == rows[-1]["image"])
    assert redone == rows[-1]
    with open(out / "exact.csv", newline="") as fh:
        assert sorted(e["image"] for e in csv.DictReader(fh)) == sorted(attacks)
    with pytest.raises(RunError, match="other settings"):
        audit_run(run_dir, out, AuditConfig(step=128, pixels=config.pixels, progress=False),
                  classifier=classifier)


@pytest.mark.slow
def test_position_optimum_equals_confmap_and_brute_force(classifier, true_png):
    image = load_image(true_png)
    x, y = 30, 32
    around = ((x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1))
    coarse = scan(image, classifier, 255, pixels=around)  # the confidence-map path, 8 colours
    host = HostEvaluator(load_classifier("max-mitosis", ModelOptions(device="cpu",
                                                                     engine="onnxruntime")))
    for goal in ("decrease", "increase"):
        # The per-position routine on the same grid equals the confidence map at that pixel.
        # (Two positions at once, as the audit computes them: one map over both.)
        ref = (coarse.min, coarse.argmin_rgb) if goal == "decrease" else (coarse.max, coarse.argmax_rgb)
        both = position_optima(image, classifier, goal, [(x + 1, y), (x, y)], step=255)
        for opt, (px, py) in zip(both, [(x + 1, y), (x, y)], strict=True):
            assert (opt.best.x, opt.best.y) == (px, py)
            assert opt.best.score == pytest.approx(float(ref[0][py, px]), abs=1e-9)
            assert opt.best.rgb == tuple(int(v) for v in ref[1][py, px])
            assert opt.evaluations == 8
        same = both[1]
        # On a finer grid that contains it ({0, 51, ..., 255} contains {0, 255}): brute force
        # through the whole network agrees, and the optimum is at least as good.
        [fine] = position_optima(image, classifier, goal, [(x, y)], step=51)
        grid = colour_grid(51).astype(np.int64)
        cand = np.concatenate([np.tile([[x, y]], (len(grid), 1)), grid], axis=1)[None]
        brute = host.scores(image[None], cand)[0]
        best = int(np.argmin(energy(goal, brute)))
        assert fine.best.score == pytest.approx(float(brute[best]), abs=1e-5)
        assert fine.best.rgb == tuple(int(v) for v in grid[best])
        assert fine.evaluations == len(grid) == 216
        assert energy(goal, fine.best.score) <= energy(goal, same.best.score) + 1e-6  # batch rounding


def test_select_targets(run_dir):
    from onepixel.audit import select_targets
    from onepixel.runs.reader import load_run

    table = load_run(run_dir).attacks
    attacks = _attacks(run_dir)
    every = select_targets(table, AuditConfig())
    assert [t.image for t in every] == sorted(attacks)
    for selection, column in (("failed", "success"), ("early-converged", "early_converged")):
        want = sorted(name for name, r in attacks.items()
                      if r[column] == ("0" if selection == "failed" else "1"))
        assert [t.image for t in select_targets(table, AuditConfig(selection=selection))] == want
    [named] = select_targets(table, AuditConfig(images=("true",)))
    de = attacks["mitosis/true.png"]
    assert named.image == "mitosis/true.png" and named.goal == "decrease"
    assert named.de.vector == tuple(int(de[k]) for k in ("x", "y", "r", "g", "b"))
    with pytest.raises(ConfigError, match="matches no attacked image"):
        select_targets(table, AuditConfig(images=("nope",)))


def test_exact_position_outside_the_image(run_dir, classifier, tmp_path):
    config = AuditConfig(step=255, exact=parse_exact_positions("64,0"), progress=False)
    with pytest.raises(ConfigError, match="64,0 is outside the 64x64 image"):
        audit_run(run_dir, tmp_path / "a", config, classifier=classifier)


def test_cli_audit_errors(run_dir, tmp_path, capsys):
    rc = main(["audit", str(run_dir), "--out", str(tmp_path / "a"), "--exact-positions", "1;2"])
    assert rc == 2 and "parse_exact_positions" in capsys.readouterr().err
    rc = main(["audit", str(run_dir), "--out", str(tmp_path / "a"), "--images", "nope.png",
               "--device", "cpu", "--no-progress"])
    assert rc == 2 and "nope.png" in capsys.readouterr().err
