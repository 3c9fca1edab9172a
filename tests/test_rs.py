"""Search methods as strategies: ``rs`` (random search) and ``scan`` through ``run_campaign``
on a small real 10-class digits CNN (ONNX), checked against ONNX Runtime itself.

rs flips easy images, keeps its query budget, is reproducible per (seed, image) and resumable
(resumed == uninterrupted), works with labels only, and with the campaign prior on or off.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from digits_models import (  # noqa: E402
    NATIVE,
    model_and_folder,
    model_options,
    ort_probs,
    train_and_export,
    write_image_folder,
)
from onepixel.attack import AttackConfig  # noqa: E402
from onepixel.attack.campaign import run_campaign  # noqa: E402
from onepixel.attack.config import CampaignConfig  # noqa: E402
from onepixel.attack.goals import Decrease, Increase, Targeted, Untargeted  # noqa: E402
from onepixel.errors import RunError  # noqa: E402
from onepixel.models import ModelOptions  # noqa: E402
from onepixel.optimize.rs import BatchRandomSearch, CampaignPrior, RSConfig  # noqa: E402

OPTIONS = model_options()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-rs")
    return model_and_folder(root, "digits.onnx", (32, 32, 3), per_class=1)


def _rows(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "attacks.csv", newline="", encoding="utf-8") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def _check_rows(model: Path, dataset: Path, rows: dict[str, dict[str, str]], budget: int,
                shape: tuple[int, int, int] = (32, 32, 3)) -> None:
    """Every attacked row: nfev within the budget, and its pixels re-applied and re-scored by
    ONNX Runtime give the reported class and success."""
    from onepixel.datasets.images import load_image

    classes = sorted(p.name for p in dataset.iterdir())
    for name, r in rows.items():
        if r["status"] != "attacked":
            continue
        assert 0 < int(r["nfev"]) <= budget, name
        image = load_image(dataset / name, shape).copy()
        for group in r["pixels"].split(";"):
            x, y, red, green, blue = (int(v) for v in group.split(","))
            image[y, x] = (red, green, blue)
        probs = ort_probs(model, image[None])[0]
        assert classes[int(probs.argmax())] == r["attacked_class"], name
        assert (r["success"] == "1") == (r["attacked_class"] != r["label"]), name
        assert float(r["attacked_score"]) == pytest.approx(probs[classes.index(r["label"])],
                                                           abs=1e-5)


def _campaign(model, dataset, out, **attack) -> CampaignConfig:
    return CampaignConfig(dataset=dataset, out=out, model=str(model), model_options=OPTIONS,
                          attack=AttackConfig(**attack), progress=False, batch_images=4)


def test_goals_judge_in_one_place():
    """success() is the vectorised judge; class_index / maximise are what batched code reads."""
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert Untargeted(true_class=0).success(probs).tolist() == [False, True]
    assert Targeted(target_class=1).success(probs).tolist() == [False, True]
    assert Untargeted(true_class=0).judge(probs[1]) == (True, False)
    assert Decrease().success(np.array([0.49, 0.5])).tolist() == [True, False]
    assert Increase().success(np.array([0.51, 0.5])).tolist() == [True, False]
    assert (Decrease().class_index, Decrease().maximise) == (None, False)
    assert (Targeted(target_class=2).class_index, Targeted(target_class=2).maximise) == (2, True)
    assert (Untargeted(true_class=1).class_index, Untargeted(true_class=1).maximise) == (1, False)


def test_rs_core_finds_a_planted_pixel_and_keeps_the_budget():
    """On a synthetic objective (success only at one position and a bright colour) the search
    finds it, stops on success, and never exceeds its budget."""
    target = np.array([5, 7])

    def objective(rows, cand):
        pos = cand[..., :2]
        d = np.abs(pos - target).sum(axis=-1)
        bright = cand[..., 2:].sum(axis=-1) / 765.0
        e = 0.5 + 0.04 * d - 0.2 * bright
        return e, e < 0.4, cand

    rs = BatchRandomSearch(objective, (16, 16, 3), 1, np.array([1, 2, 3]), 2000,
                           RSConfig(prior=False), stop_on_success=True)
    while not rs.done:
        rs.step()
    results = [r for _, r in rs.take_finished()]
    assert all(r.stopped and r.nfev <= 2000 for r in results)
    assert all(r.fun < 0.4 for r in results)
    assert all(np.all(np.diff(r.history) <= 0) for r in results)
    # No budget is exceeded when the search cannot succeed, and every query is counted.
    rs = BatchRandomSearch(lambda rows, c: (np.ones(c.shape[:2]), np.zeros(c.shape[:2], bool), c),
                           (16, 16, 3), 2, np.array([9]), 250, RSConfig(candidates=16))
    while not rs.done:
        rs.step()
    (_, r), = rs.take_finished()
    assert r.nfev == 250 and not r.stopped and len(r.history) == 4  # first step, 100, 200, end


def test_rs_pattern_search_reaches_an_interior_colour_optimum_without_repeating_a_query():
    """After the first success the pattern search refines to the exact optimum of a smooth
    objective whose best colour is inside the cube (no corner is near it) and whose best
    position is 2 pixels from a decoy; no candidate is ever queried twice."""
    best_colour = np.array([201, 37, 90])
    queried: dict[int, list[bytes]] = {}

    def objective(rows, cand):
        for j, b in enumerate(rows):
            queried.setdefault(int(b), []).extend(c.tobytes() for c in cand[j])
        pos = cand[..., :2]
        d_best = np.abs(pos - [6, 9]).max(axis=-1)
        d_decoy = np.abs(pos - [8, 9]).max(axis=-1)
        place = np.where(d_best == 0, 0.0, np.where(d_decoy == 0, 0.05, 0.3 + 0.01 * d_best))
        e = place + np.abs(cand[..., 2:] - best_colour).sum(axis=-1) / 765.0
        return e, e < 0.6, cand

    rs = BatchRandomSearch(objective, (16, 16, 3), 1, np.array([4, 5]), 3000, RSConfig(prior=False))
    while not rs.done:
        rs.step()
    for b, r in rs.take_finished():
        assert r.nfev == 3000 and r.x.astype(int).tolist() == [6, 9, 201, 37, 90], r.x
        assert r.fun == pytest.approx(0.0)
        assert len(set(queried[b])) == len(queried[b]) == 3000


def test_prior_mixture_never_the_prior_alone():
    prior = CampaignPrior((32, 32, 3), weight=0.9)
    assert prior.share() == 0.0
    for _ in range(1000):
        prior.add(np.array([3, 4, 255, 0, 200]))
    assert 0.89 < prior.share() < 0.9  # 0.9 * n / (n + 2)
    pos, col = prior.sample(np.random.default_rng(0), 50)
    assert np.all(np.abs(pos - [3, 4]) <= 1) and np.all(col == [255, 0, 255])
    with pytest.raises(ValueError, match="RSConfig.prior_weight"):
        RSConfig(prior_weight=1.0)


def test_rs_campaign_flips_reproducible_and_resumable(digits, tmp_path):
    """rs on every executor path a library user has: rows re-score with ONNX Runtime, stay in
    the budget, and an interrupted + resumed run equals an uninterrupted one (prior off)."""
    model, dataset = digits
    budget = 300
    settings = dict(method="rs", max_queries=budget, stop_on_success=True)
    from onepixel.optimize.rs import RSConfig as R

    whole = tmp_path / "whole"
    run_campaign(_campaign(model, dataset, whole, rs=R(prior=False), **settings))
    rows = _rows(whole)
    _check_rows(model, dataset, rows, budget)
    # Stopped on success, else the whole budget (this CNN resists most single pixels).
    assert all((int(r["nfev"]) < budget) == (r["success"] == "1") for r in rows.values())
    # Interrupted after 3 images, then resumed: the same rows.
    part = tmp_path / "part"
    seen = []

    def stop_after_three(result):
        seen.append(result)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_campaign(_campaign(model, dataset, part, rs=R(prior=False), **settings),
                     on_result=stop_after_three)
    run_campaign(_campaign(model, dataset, part, rs=R(prior=False), **settings))
    resumed = _rows(part)
    keys = ("x", "y", "r", "g", "b", "nfev", "nit", "success", "attacked_score", "pixels")
    assert {n: [r[k] for k in keys] for n, r in resumed.items()} == \
        {n: [r[k] for k in keys] for n, r in rows.items()}
    # A RUN begun by an earlier revision of the search (config.json without rs_revision) is not
    # resumed with this one: its rows would mix two searches.
    config = json.loads((part / "config.json").read_text())
    assert config["attack"]["rs_revision"] >= 2
    del config["attack"]["rs_revision"]
    (part / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="attack.rs_revision"):
        run_campaign(_campaign(model, dataset, part, rs=R(prior=False), **settings))


def test_rs_prior_and_k_pixels(digits, tmp_path):
    model, dataset = digits
    budget = 300
    # Prior on: still a valid campaign, reproducible for the same campaign.
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        run_campaign(_campaign(model, dataset, out, method="rs", max_queries=budget,
                               stop_on_success=True))
    assert _rows(a).keys() == _rows(b).keys()
    assert [r["pixels"] for r in _rows(a).values()] == [r["pixels"] for r in _rows(b).values()]
    _check_rows(model, dataset, _rows(a), budget)
    # A colour budget: every reported pixel's h (re-derived independently) within it.
    from independent import own_h
    from onepixel.datasets.images import load_image

    h_run = tmp_path / "budget"
    run_campaign(_campaign(model, dataset, h_run, method="rs", max_queries=100, max_colour_diff=0.1))
    for name, r in _rows(h_run).items():
        if r["status"] == "attacked":
            image = load_image(dataset / name, (32, 32, 3))
            h = own_h(image, int(r["x"]), int(r["y"]), (int(r["r"]), int(r["g"]), int(r["b"])))
            assert h <= 0.1 + 1e-9, name
    # Three pixels, targeted.
    k3 = tmp_path / "k3"
    cfg = _campaign(model, dataset, k3, method="rs", max_queries=200, pixels=3)
    run_campaign(CampaignConfig(**{**cfg.__dict__, "target": "3"}))
    rows = _rows(k3)
    assert all(len(r["pixels"].split(";")) == 3 for r in rows.values() if r["status"] == "attacked")


@pytest.mark.slow
def test_rs_flips_the_native_8x8_digits_model(tmp_path):
    """The fragile K-class model (digits at their native 8x8): rs flips several held-out digits
    within 300 queries, and every row re-scores with ONNX Runtime."""
    images, labels = train_and_export(tmp_path / "native.onnx", NATIVE)
    dataset = write_image_folder(tmp_path / "ds", images, labels, per_class=1)
    out = tmp_path / "run"
    run_campaign(_campaign(tmp_path / "native.onnx", dataset, out, method="rs", max_queries=300,
                           stop_on_success=True))
    rows = _rows(out)
    _check_rows(tmp_path / "native.onnx", dataset, rows, 300, NATIVE)
    assert sum(r["success"] == "1" for r in rows.values()) >= 2


@pytest.fixture(scope="module")
def patches(tmp_path_factory, max_model_path, true_png):
    """Two rotations of the MAX sample (mitosis) that one pixel flips."""
    from PIL import Image

    from onepixel.datasets.demo import dihedral_variants
    from onepixel.datasets.images import load_image

    root = tmp_path_factory.mktemp("patches")
    (root / "mitosis").mkdir()
    (root / "normal").mkdir()
    variants = dihedral_variants(load_image(true_png, (64, 64, 3)))
    for key in ("flip-rot270", "rot180"):
        Image.fromarray(variants[key]).save(root / "mitosis" / f"true_{key}.png")
    return root


@pytest.mark.slow
def test_rs_flips_patches_of_the_max_model_also_with_labels_only(patches, tmp_path):
    """The real MAX model: rs flips both patches within 1,000 queries and stops there; the
    reported pixel re-scores (whole image, plain classifier) to the reported score; with
    labels only it flips them too and the RUN records that it saw labels only."""
    import json

    from onepixel.datasets.images import load_image
    from onepixel.scoring.policy import load_scoring_classifier

    plain = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"))
    for labels_only in (False, True):
        out = tmp_path / f"run-{labels_only}"
        run_campaign(CampaignConfig(
            dataset=patches, out=out, model_options=ModelOptions(device="cpu"), progress=False,
            attack=AttackConfig(method="rs", max_queries=1000, stop_on_success=True,
                                labels_only=labels_only)))
        rows = _rows(out)
        assert len(rows) == 2
        for name, r in rows.items():
            assert r["success"] == "1" and int(r["nfev"]) < 1000, (labels_only, name)
            image = load_image(patches / name, (64, 64, 3)).copy()
            image[int(r["y"]), int(r["x"])] = (int(r["r"]), int(r["g"]), int(r["b"]))
            assert float(plain.scores(image[None])[0]) == pytest.approx(
                float(r["attacked_score"]), abs=1e-5)
        assert json.loads((out / "config.json").read_text())["attack"]["labels_only"] is labels_only


@pytest.mark.slow
def test_scan_runs_through_run_campaign_without_its_executor(digits, tmp_path):
    """AttackConfig(method="scan") is a search like DE: run_campaign runs it on the default
    executor (and so on Ray), and its rows re-score with ONNX Runtime."""
    model, dataset = digits
    budget = 32 * 32 * 8 + 1100
    out = tmp_path / "scan"
    cfg = CampaignConfig(dataset=dataset, out=out, model=str(model), model_options=OPTIONS,
                         attack=AttackConfig(method="scan", max_queries=budget), progress=False,
                         limit=3)
    run_campaign(cfg)
    rows = _rows(out)
    assert len(rows) == 3
    _check_rows(model, dataset, rows, budget)


def test_evaluate_combines_methods_never_robust_when_broken():
    """The combination rule on hand-made rows: broken by the first method that succeeded (its
    queries added to the earlier methods'), robust only when every method failed."""
    from onepixel.evaluation.config import EvaluateConfig
    from onepixel.evaluation.runner import _combine

    def row(success, nfev, score, status="attacked"):
        return {"label": "3", "status": status, "goal": "untargeted", "success": success,
                "nfev": nfev, "score": score, "original": 0.99, "pixel": [1, 2, 3, 4, 5],
                "pixels": "1,2,3,4,5"}

    tables = {"rs": {"a": row(True, 40, 0.2), "b": row(False, 300, 0.6), "c": row(False, 300, 0.7),
                     "d": row(False, 0, float("nan"), status="skipped")},
              "de": {"b": row(False, 300, 0.5), "c": row(True, 200, 0.3)},
              "scan": {"b": row(False, 9000, 0.55), "a": row(False, 9000, 0.9)}}
    cfg = EvaluateConfig(dataset=Path("x"), out=Path("y"), max_queries=300)
    summary, rows = _combine(cfg, tables, {"rs": True, "de": True, "scan": True})
    by = {r["image"]: r for r in rows}
    assert (by["a"]["status"], by["a"]["method"], by["a"]["queries"]) == ("broken", "rs", 40)
    assert (by["c"]["status"], by["c"]["method"], by["c"]["queries"]) == ("broken", "de", 500)
    assert (by["b"]["status"], by["b"]["method"], by["b"]["queries"]) == ("robust", "de", 9600)
    assert by["d"]["status"] == "skipped"
    assert (summary.broken, summary.robust, summary.robust_scanned, summary.skipped) == (2, 1, 1, 1)
    assert summary.robust_accuracy == 0.25


@pytest.mark.slow
def test_evaluate_on_digits(digits, tmp_path):
    """rs, DE and the corner scan on 4 digits: every image a method broke is broken in
    evaluation.csv, its pixel flips the class by ONNX Runtime, and the curves are the rows'."""
    import json

    import onepixel
    from onepixel.datasets.images import load_image

    model, dataset = digits
    out = tmp_path / "eval"
    summary = onepixel.evaluate(dataset, out, model=str(model), model_options=OPTIONS,
                                max_queries=300, scan_max_queries=32 * 32 * 8 + 1100, limit=4,
                                progress=False)
    with open(out / "evaluation.csv", newline="") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 4
    runs = {m: _rows(out / "runs" / m) for m in ("rs", "de", "scan") if (out / "runs" / m).exists()}
    classes = sorted(p.name for p in dataset.iterdir())
    for name, r in rows.items():
        broke = [m for m, t in runs.items() if t.get(name, {}).get("success") == "1"]
        assert (r["status"] == "broken") == bool(broke), name
        if r["status"] == "broken":
            assert r["method"] == broke[0]
            image = load_image(dataset / name, (32, 32, 3)).copy()
            image[int(r["y"]), int(r["x"])] = (int(r["r"]), int(r["g"]), int(r["b"]))
            assert classes[int(ort_probs(model, image[None])[0].argmax())] != r["label"]
    # Each method's curve ends at its successes over the images it attacked.
    with open(out / "curves.csv", newline="") as fh:
        curves = list(csv.DictReader(fh))
    for m, t in runs.items():
        attacked = [r for r in t.values() if r["status"] == "attacked"]
        wins = sorted(int(r["nfev"]) for r in attacked if r["success"] == "1")
        mine = [c for c in curves if c["method"] == m]
        assert [int(c["queries"]) for c in mine] == sorted(set(wins))
        if wins:
            assert int(mine[-1]["broken"]) == len(wins) and int(mine[-1]["attacked"]) == len(attacked)
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["robust"] == summary.robust == sum(r["status"] == "robust" for r in rows.values())
    assert "robust accuracy under one-pixel attack" in saved["headline"]
    assert (out / "curves.png").stat().st_size > 1000
    # The CLI resumes it (every method's RUN is complete): the same rows; the report of the rs
    # RUN (read as a DE RUN is) gets the evaluation's section.
    from onepixel.cli.main import main

    before = (out / "evaluation.csv").read_text()
    assert main(["-q", "evaluate", str(dataset), "-o", str(out), "--model", str(model),
                 "--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit",
                 "--max-queries", "300", "--scan-max-queries", str(32 * 32 * 8 + 1100),
                 "--limit", "4", "--no-progress"]) == 0
    assert (out / "evaluation.csv").read_text() == before
    assert main(["-q", "report", str(out / "runs" / "rs"), "--evaluation", str(out)]) == 0
    html = (out / "runs" / "rs" / "report.html").read_text()
    assert "Robust accuracy under one-pixel attack" in html and saved["headline"] in html


@pytest.mark.slow
def test_rs_runs_on_ray_as_locally(patches, tmp_path):
    """rs through the executor seam: on Ray actors (prior off) it gives the local rows."""
    ray = pytest.importorskip("ray")
    from onepixel.optimize.rs import RSConfig as R
    from onepixel.scaleout import RayExecutor
    from onepixel.scaleout.config import ExecutorConfig

    keys = ("x", "y", "r", "g", "b", "nfev", "nit", "success", "pixels")
    attacks = [AttackConfig(method="rs", max_queries=300, rs=R(prior=False))]
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        for i, attack in enumerate(attacks):
            runs = {}
            for kind in ("local", "ray"):
                out = tmp_path / f"{i}-{kind}"
                executor = RayExecutor(ExecutorConfig(kind="ray", workers=2)) if kind == "ray" \
                    else None
                run_campaign(CampaignConfig(dataset=patches, out=out, attack=attack,
                                            model_options=ModelOptions(device="cpu"),
                                            progress=False, batch_images=1), executor=executor)
                runs[kind] = {n: [r[k] for k in keys] for n, r in _rows(out).items()}
            assert runs["ray"] == runs["local"], attack.method
    finally:
        ray.shutdown()
