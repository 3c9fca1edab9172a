"""`onepixel audit` and `attack --method scan` on K-class models: untargeted and targeted goals,
the 10-class digits CNN (32x32 RGB) and its 24x32 greyscale twin.

Everything the code under test reports is checked independently: each pixel is applied here and
the image scored with ONNX Runtime directly (softmax of the logits), the goal class's
probability must be the reported score, `vulnerable` / `success` must be this file's own argmax
check, the audit must never lose to DE's pixel (re-scored here too), and a scan attack must stay
within its query budget.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from digits_models import model_options, ort_probs, train_and_export, write_image_folder  # noqa: E402
from independent import csv_dicts  # noqa: E402
from onepixel.attack import AttackConfig  # noqa: E402
from onepixel.attack.campaign import run_campaign  # noqa: E402
from onepixel.attack.config import CampaignConfig  # noqa: E402
from onepixel.attack.goals import Decrease, Increase, Targeted, Untargeted  # noqa: E402
from onepixel.audit import AUDIT_COLUMNS, AuditConfig, audit_run, parse_exact_positions  # noqa: E402
from onepixel.audit.method import REFINE_RESERVE, choose_scan_step, scan_cost  # noqa: E402
from onepixel.audit.search import pick_best  # noqa: E402
from onepixel.cli.main import main  # noqa: E402
from onepixel.confmap.engine import local_map  # noqa: E402
from onepixel.datasets.images import load_image  # noqa: E402
from onepixel.errors import ConfigError  # noqa: E402
from onepixel.optimize.de import DEConfig  # noqa: E402
from onepixel.report.audit_section import audit_section  # noqa: E402

OPTIONS = model_options()
CLI_MODEL = ["--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit"]
CLASSES = tuple(str(d) for d in range(10))
EPOCHS = 5
#: A weak DE (so the audit has room to beat it) and a coarse audit: 8 colours (2 grey levels)
#: per pixel keep each image's scan to about 8,000 evaluations.
WEAK_DE = AttackConfig(de=DEConfig(population=10, maxiter=2))
COARSE = AuditConfig(step=255, top=2, rounds=1, progress=False)
MAX_QUERIES = 12_000


def _dataset(root: Path, model: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """An ImageFolder of 4 correctly classified held-out digits: the 3 the model is least sure
    of (top-2 margin: one pixel may flip them) and the one it is surest of (it will not flip),
    so both outcomes occur."""
    probs = ort_probs(model, images)
    top2 = np.sort(probs, axis=1)
    right = np.flatnonzero(probs.argmax(axis=1) == labels)
    order = right[np.argsort((top2[:, -1] - top2[:, -2])[right], kind="stable")]
    pick = [*order[:3], order[-1]]
    return write_image_folder(root / "ds", images[pick], labels[pick], per_class=len(pick))


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """The RGB model, its dataset, and an untargeted and a targeted DE RUN of it."""
    root = tmp_path_factory.mktemp("audit-mc-rgb")
    model = root / "digits.onnx"
    images, labels = train_and_export(model, (32, 32, 3), epochs=EPOCHS)
    dataset = _dataset(root, model, images, labels)
    runs = {}
    for name, target in (("untargeted", None), ("targeted", "8")):
        runs[name] = root / f"run-{name}"
        run_campaign(CampaignConfig(dataset=dataset, out=runs[name], model=str(model),
                                    model_options=OPTIONS, attack=WEAK_DE, progress=False,
                                    classes=CLASSES, target=target))
    return model, dataset, runs


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """The greyscale 24x32 model, its dataset and an untargeted DE RUN (through the CLI)."""
    root = tmp_path_factory.mktemp("audit-mc-grey")
    model = root / "grey.onnx"
    images, labels = train_and_export(model, (24, 32, 1), epochs=EPOCHS)
    dataset = _dataset(root, model, images, labels)
    run = root / "run"
    assert main(["-q", "attack", str(dataset), "--out", str(run), "--model", str(model), *CLI_MODEL,
                 "--classes", ",".join(CLASSES), "--popsize", "10", "--maxiter", "2",
                 "--no-progress"]) == 0
    return model, dataset, run


def test_pick_best_prefers_success_then_energy():
    """The best finalist: a success first (the campaign's criterion), then the lowest energy,
    then the first listed."""
    untargeted = Untargeted(true_class=0)
    probs = np.array([[0.40, 0.50, 0.10],   # flipped (class 1 predicted), p[true] 0.40
                      [0.34, 0.33, 0.33],   # lowest p[true] but class 0 still predicted
                      [0.30, 0.60, 0.10],   # flipped and lower: the best
                      [0.30, 0.60, 0.10]])  # its equal, listed later
    assert pick_best(untargeted, probs) == (2, True)
    assert pick_best(untargeted, probs[:2]) == (0, True)
    assert pick_best(untargeted, probs[1:2]) == (0, False)
    targeted = Targeted(target_class=2)
    probs = np.array([[0.10, 0.45, 0.45],   # p[target] 0.45, a tie: argmax is class 1
                      [0.50, 0.10, 0.40],
                      [0.20, 0.20, 0.60]])
    assert pick_best(targeted, probs) == (2, True)
    assert pick_best(targeted, probs[:2]) == (0, False)
    # binary goals: the energy order, success by the threshold
    assert pick_best(Decrease(), np.array([0.7, 0.2, 0.6])) == (1, True)
    assert pick_best(Increase(), np.array([0.2, 0.4])) == (1, False)


def test_greyscale_scan_cost_and_step():
    """A greyscale scan costs one evaluation per grey level, an RGB one per colour."""
    assert scan_cost(24 * 32, 255, channels=1) == 24 * 32 * 2
    assert scan_cost(24 * 32, 85, channels=1) == 24 * 32 * 4 and scan_cost(24 * 32, 85) == 24 * 32 * 64
    step = choose_scan_step(24 * 32, MAX_QUERIES, channels=1)
    assert scan_cost(24 * 32, step, 1) + REFINE_RESERVE <= MAX_QUERIES
    assert scan_cost(24 * 32, step - 1, 1) + REFINE_RESERVE > MAX_QUERIES
    with pytest.raises(ConfigError, match="2 grey levels"):
        choose_scan_step(24 * 32, 24 * 32 * 2, channels=1)


def _apply(image: np.ndarray, x: int, y: int, rgb: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    out[y, x] = rgb[: out.shape[2]]  # a greyscale value is written as r = g = b
    return out


def _goal(row: dict[str, str], run: Path) -> tuple[int, bool]:
    """(the class whose probability is the score, whether the goal pushes it down)."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    if row["goal"] == "untargeted":
        return config["classes"].index(row["label"]), True
    return config["classes"].index(config["target"]), False


def _succeeds(probs: np.ndarray, k: int, down: bool) -> bool:
    """This file's own success rule: another class predicted (untargeted), the target (targeted)."""
    return int(probs.argmax()) != k if down else int(probs.argmax()) == k


def _check_audit(model: Path, dataset: Path, run: Path, out: Path, shape) -> list[dict[str, str]]:
    """Every audit row re-scored and judged here, and compared with DE's own pixel."""
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        assert tuple(next(csv.reader(fh))) == AUDIT_COLUMNS
    rows = csv_dicts(out / "audit.csv")
    attacks = {r["image"]: r for r in csv_dicts(run / "attacks.csv")}
    attacked = [name for name, r in attacks.items() if r["status"] == "attacked"]
    assert sorted(r["image"] for r in rows) == sorted(attacked) and rows
    h, w, c = shape
    for row in rows:
        de = attacks[row["image"]]
        assert row["goal"] == de["goal"]
        k, down = _goal(de, run)
        image = load_image(dataset / row["image"], shape)
        pixel = (int(row["x"]), int(row["y"]), tuple(int(row[ch]) for ch in "rgb"))
        assert 0 <= pixel[0] < w and 0 <= pixel[1] < h
        if c == 1:
            assert len(set(pixel[2])) == 1
        de_pixel = (int(de["x"]), int(de["y"]), tuple(int(de[ch]) for ch in "rgb"))
        probs = ort_probs(model, np.stack([_apply(image, *pixel), _apply(image, *de_pixel)]))
        mine, de_probs = probs
        assert float(row["best_score"]) == pytest.approx(mine[k], rel=1e-5, abs=1e-7), row
        assert (row["status"] == "vulnerable") == _succeeds(mine, k, down), (row, mine)
        assert float(row["de_score"]) == pytest.approx(float(de["attacked_score"]), rel=1e-9)
        assert row["de_success"] == de["success"]
        assert (de["success"] == "1") == _succeeds(de_probs, k, down)
        # Never worse than DE: a success wherever DE succeeded, and otherwise no further from
        # the goal (by its energy, p[true] or 1 - p[target]) unless the audit flipped it.
        sign = 1.0 if down else -1.0
        if de["success"] == "1":
            assert row["status"] == "vulnerable"
        if row["status"] != "vulnerable" or de["success"] == "1":
            assert sign * mine[k] <= sign * de_probs[k] + 1e-7, (row, de)
        # the scan alone: every pixel x every grid colour (8 RGB, 2 grey levels at step 255)
        assert int(row["queries"]) > h * w * (8 if c == 3 else 2)
    return rows


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_audit_of_untargeted_and_targeted_runs(rgb, tmp_path):
    model, dataset, runs = rgb
    statuses = []
    for goal, run in runs.items():
        out = tmp_path / goal
        summary = audit_run(run, out, COARSE, model_options=OPTIONS)
        rows = _check_audit(model, dataset, run, out, (32, 32, 3))
        statuses += [r["status"] for r in rows]
        assert list(summary["goals"]) == [goal]
        got = summary["goals"][goal]
        assert got["audited"] == len(rows)
        assert got["vulnerable"] == sum(r["status"] == "vulnerable" for r in rows)
        assert got["de_success"] == sum(r["de_success"] == "1" for r in rows)
        # resumable: the same command again audits nothing and changes nothing
        before = (out / "audit.csv").read_bytes()
        audit_run(run, out, COARSE, model_options=OPTIONS)
        assert (out / "audit.csv").read_bytes() == before
    # the picked images make both outcomes occur (the least sure flip, the surest does not)
    assert "vulnerable" in statuses and "not-found" in statuses


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_exact_positions_on_a_class_probability(rgb, tmp_path):
    """--exact-positions maps the goal class's probability: its optimum at DE's position is the
    best of every grid colour there, all scored here."""
    model, dataset, runs = rgb
    run = runs["targeted"]
    out = tmp_path / "exact"
    config = AuditConfig(step=255, top=1, rounds=1, exact=parse_exact_positions("de"),
                         exact_step=51, progress=False)
    audit_run(run, out, config, model_options=OPTIONS)
    _check_audit(model, dataset, run, out, (32, 32, 3))
    attacks = {r["image"]: r for r in csv_dicts(run / "attacks.csv")}
    exact = csv_dicts(out / "exact.csv")
    assert exact and all(r["source"] == "de" and r["step"] == "51" for r in exact)
    for r in exact:
        de = attacks[r["image"]]
        k, _down = _goal(de, run)
        assert (r["x"], r["y"]) == (de["x"], de["y"])
        image = load_image(dataset / r["image"], (32, 32, 3))
        levels = (0, 51, 102, 153, 204, 255)
        colours = [(a, b, c) for a in levels for b in levels for c in levels]
        x, y = int(r["x"]), int(r["y"])
        p = ort_probs(model, np.stack([_apply(image, x, y, c) for c in colours]))[:, k]
        # targeted: the highest p[target] over the 216 colours (to fp32 rounding)
        assert float(r["best_score"]) == pytest.approx(p.max(), abs=1e-5)
        at = colours.index(tuple(int(r[c]) for c in "rgb"))
        assert p[at] == pytest.approx(p.max(), abs=1e-5)
        assert int(r["evaluations"]) == len(colours)


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_greyscale_audit_through_the_cli(grey, tmp_path, capsys):
    model, dataset, run = grey
    out = tmp_path / "audit"
    assert main(["-q", "audit", str(run), "--out", str(out), *CLI_MODEL, "--step", "85", "--top",
                 "2", "--rounds", "1", "--no-progress"]) == 0
    assert "untargeted:" in capsys.readouterr().out
    _check_audit(model, dataset, run, out, (24, 32, 1))


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_k_pixel_rows_are_skipped_and_ray_maps_the_goal_class(rgb, tmp_path, caplog):
    model, dataset, runs = rgb
    run = tmp_path / "run3"
    run_campaign(CampaignConfig(dataset=dataset, out=run, model=str(model), model_options=OPTIONS,
                                attack=AttackConfig(de=DEConfig(population=10, maxiter=1), pixels=3),
                                progress=False, classes=CLASSES))
    with caplog.at_level(logging.WARNING, logger="onepixel.audit.runner"):
        summary = audit_run(run, tmp_path / "a3", COARSE, model_options=OPTIONS)
    assert summary["images"] == 0 and csv_dicts(tmp_path / "a3" / "audit.csv") == []
    assert "attacked with several pixels" in caplog.text and "searches one pixel" in caplog.text
    # A map executor (Ray's workers) maps the goal's class, as the scan in this process does.
    audit_run(runs["targeted"], tmp_path / "here", COARSE, model_options=OPTIONS)
    audit_run(runs["targeted"], tmp_path / "mapped", COARSE, model_options=OPTIONS,
              mapper=local_map)
    expected = csv_dicts(tmp_path / "here" / "audit.csv")
    assert expected and csv_dicts(tmp_path / "mapped" / "audit.csv") == expected
    ray = pytest.importorskip("ray")
    from onepixel.scaleout import RayMapper
    from onepixel.scaleout.config import ExecutorConfig

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        audit_run(runs["targeted"], tmp_path / "ray", COARSE, model_options=OPTIONS,
                  mapper=RayMapper(ExecutorConfig(kind="ray", workers=1)))
    finally:
        ray.shutdown()
    for got, want in zip(csv_dicts(tmp_path / "ray" / "audit.csv"), expected, strict=True):
        assert [got[k] for k in ("image", "status", "x", "y", "r", "g", "b", "queries")] == \
            [want[k] for k in ("image", "status", "x", "y", "r", "g", "b", "queries")]
        assert float(got["best_score"]) == pytest.approx(float(want["best_score"]), abs=1e-6)


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_report_section_renders_a_k_class_audit(rgb, tmp_path):
    _model, _dataset, runs = rgb
    run = runs["untargeted"]
    out = tmp_path / "audit"
    audit_run(run, out, COARSE, model_options=OPTIONS)
    rows = csv_dicts(out / "audit.csv")
    section = audit_section(run, out, figures=True)
    strength, early = section.tables
    by_direction = {r[0]: r for r in strength.rows}
    attacks = {r["image"]: r for r in csv_dicts(run / "attacks.csv")}
    assert sum(r[1] for r in strength.rows) == len(rows)
    for direction, r in by_direction.items():
        mine = [a for a in rows if attacks[a["image"]]["direction"] == direction]
        assert direction.endswith("-to-other") and r[1] == len(mine)
        assert r[4] == sum(a["status"] == "vulnerable" for a in mine)
        # largest gap: how much lower the audit took p[true] than DE did
        gaps = [float(a["de_score"]) - float(a["best_score"]) for a in mine]
        assert r[12] == pytest.approx(max(gaps), abs=1e-12)
    assert len(early.rows) == sum(a["de_early_converged"] == "1" for a in rows)
    assert next(f.name for f in section.figures) == "audit_scores"


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
@pytest.mark.parametrize("target", [None, "8"])
def test_scan_method_on_k_classes_within_budget(rgb, tmp_path, target):
    model, dataset, _runs = rgb
    run = tmp_path / "scan"
    extra = ["--target", target] if target else []
    assert main(["-q", "attack", str(dataset), "--out", str(run), "--model", str(model), *CLI_MODEL,
                 "--classes", ",".join(CLASSES), "--method", "scan", "--max-queries",
                 str(MAX_QUERIES), "--no-progress", *extra]) == 0
    _check_scan_rows(model, dataset, run, (32, 32, 3))


@pytest.mark.slow  # the module's two CNNs train once, about 12 s
def test_scan_method_on_a_greyscale_model(grey, tmp_path):
    model, dataset, _run = grey
    run = tmp_path / "scan"
    assert main(["-q", "attack", str(dataset), "--out", str(run), "--model", str(model), *CLI_MODEL,
                 "--classes", ",".join(CLASSES), "--method", "scan", "--max-queries",
                 str(MAX_QUERIES), "--no-progress"]) == 0
    _check_scan_rows(model, dataset, run, (24, 32, 1))


def _check_scan_rows(model: Path, dataset: Path, run: Path, shape) -> None:
    """Each scan row re-scored and judged here, within the budget."""
    rows = [r for r in csv_dicts(run / "attacks.csv") if r["status"] == "attacked"]
    assert rows
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["attack"]["method"] == "scan"
    for row in rows:
        k, down = _goal(row, run)
        image = load_image(dataset / row["image"], shape)
        pixel = (int(row["x"]), int(row["y"]), tuple(int(row[c]) for c in "rgb"))
        assert row["pixels"] == ",".join(str(v) for v in (pixel[0], pixel[1], *pixel[2]))
        p = ort_probs(model, _apply(image, *pixel)[None])[0]
        assert float(row["attacked_score"]) == pytest.approx(p[k], rel=1e-5, abs=1e-7), row
        assert row["attacked_class"] == CLASSES[int(p.argmax())]
        assert (row["success"] == "1") == _succeeds(p, k, down), row
        assert int(row["nfev"]) <= MAX_QUERIES
        assert row["early_converged"] == "0"
    history = csv_dicts(run / "history.csv")
    for row in rows:
        last = [h for h in history if h["image"] == row["image"]][-1]
        assert float(last["best_score"]) == pytest.approx(float(row["attacked_score"]), abs=1e-7)
