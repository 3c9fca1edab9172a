"""Search methods as strategies: ``rs`` (random search) and ``scan`` through ``run_campaign``
on a small real 10-class digits CNN (ONNX), checked against ONNX Runtime itself.

rs flips easy images, keeps its query budget, is reproducible per (seed, image) and resumable
(resumed == uninterrupted), works with labels only, and with the campaign prior on or off.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from digits_models import train_and_export, write_image_folder  # noqa: E402
from onepixel.attack import AttackConfig  # noqa: E402
from onepixel.attack.campaign import run_campaign  # noqa: E402
from onepixel.attack.config import CampaignConfig  # noqa: E402
from onepixel.attack.goals import Decrease, Increase, Targeted, Untargeted  # noqa: E402
from onepixel.models import ModelOptions  # noqa: E402
from onepixel.optimize.rs import BatchRandomSearch, CampaignPrior, RSConfig  # noqa: E402

OPTIONS = ModelOptions(device="cpu", preprocess="unit", layout="nchw", output="logit")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-rs")
    images, labels = train_and_export(root / "digits.onnx", (32, 32, 3))
    dataset = write_image_folder(root / "ds", images, labels, per_class=1)
    return root / "digits.onnx", dataset


def _rows(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "attacks.csv", newline="", encoding="utf-8") as fh:
        return {r["image"]: r for r in csv.DictReader(fh)}


def _ort_probs(model: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / np.float32(255.0)).transpose(0, 3, 1, 2)
    logits = session.run(None, {"x": np.ascontiguousarray(x)})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_rows(model: Path, dataset: Path, rows: dict[str, dict[str, str]], budget: int) -> None:
    """Every attacked row: nfev within the budget, and its pixels re-applied and re-scored by
    ONNX Runtime give the reported class and success."""
    from onepixel.datasets.images import load_image

    classes = sorted(p.name for p in dataset.iterdir())
    for name, r in rows.items():
        if r["status"] != "attacked":
            continue
        assert 0 < int(r["nfev"]) <= budget, name
        image = load_image(dataset / name, (32, 32, 3)).copy()
        for group in r["pixels"].split(";"):
            x, y, red, green, blue = (int(v) for v in group.split(","))
            image[y, x] = (red, green, blue)
        probs = _ort_probs(model, image[None])[0]
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


def test_prior_mixture_never_the_prior_alone():
    prior = CampaignPrior((32, 32, 3), weight=0.9)
    assert prior.share() == 0.0
    for _ in range(1000):
        prior.add(np.array([3, 4, 255, 0, 200]))
    assert 0.89 < prior.share() < 0.9
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
    flipped = [r for r in rows.values() if r["success"] == "1"]
    assert len(flipped) >= 5, "rs flips most of these easy digits"
    assert all(int(r["nfev"]) < budget for r in flipped)  # stopped on success
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


def test_rs_prior_labels_only_and_k_pixels(digits, tmp_path):
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
    # Labels only: stops at the first flip; the row is the model's own score of that pixel.
    lab = tmp_path / "labels"
    run_campaign(_campaign(model, dataset, lab, method="rs", max_queries=budget, labels_only=True))
    rows = _rows(lab)
    _check_rows(model, dataset, rows, budget)
    assert any(r["success"] == "1" for r in rows.values())
    import json

    assert json.loads((lab / "config.json").read_text())["attack"]["labels_only"] is True
    # Three pixels, targeted.
    k3 = tmp_path / "k3"
    cfg = _campaign(model, dataset, k3, method="rs", max_queries=200, pixels=3)
    run_campaign(CampaignConfig(**{**cfg.__dict__, "target": "3"}))
    rows = _rows(k3)
    assert all(len(r["pixels"].split(";")) == 3 for r in rows.values() if r["status"] == "attacked")


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
