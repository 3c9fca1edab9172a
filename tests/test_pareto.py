"""`onepixel pareto`: (score, h) fronts on the real MAX model, the budget curve, the detector."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pymoo")

import onepixel.pareto.runner as runner_module
from independent import csv_dicts, dominated, own_h
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.cli.main import main
from onepixel.datasets.images import load_image
from onepixel.errors import OnepixelError
from onepixel.models import ModelOptions
from onepixel.models.registry import load_classifier
from onepixel.optimize.de import DEConfig
from onepixel.pareto.config import ParetoConfig
from onepixel.pareto.curve import BUDGET_GRID, budget_curve
from onepixel.pareto.pareto import ImageFront, non_dominated
from onepixel.pareto.reference import campaign_pixels
from onepixel.pareto.runner import Detector, run_pareto
from run_files import write_pair_dataset

TINY = ParetoConfig(population=12, generations=4, seed=3)


def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 6, size=(60, 2)).astype(float)  # many ties and duplicates
    keep = non_dominated(pts)
    assert dominated(pts[keep]) == []
    # Every dropped point is dominated by, or equal to, a kept one.
    for i in set(range(len(pts))) - set(keep.tolist()):
        assert any(np.all(pts[k] <= pts[i]) for k in keep)


def _front(name, goal, scores, hs):
    scores, hs = np.asarray(scores, float), np.asarray(hs, float)
    return ImageFront(name, goal, 0.9, np.zeros((len(scores), 5), np.int64), scores, hs,
                      scores, hs, 0.0)


def test_budget_curve_counts_and_monotone():
    fronts = [_front("a", "decrease", [0.9, 0.4, 0.01], [0.05, 0.2, 0.6]),    # flips at 0.2
              _front("b", "increase", [0.3, 0.97], [0.1, 0.33]),              # flips at 0.33
              _front("c", "decrease", [0.8, 0.6], [0.1, 0.9])]                # never
    curve = budget_curve(fronts, ParetoConfig())
    assert curve.lowest_h == {"a": 0.2, "b": 0.33, "c": None}
    assert curve.lowest_h_strong == {"a": 0.6, "b": 0.33, "c": None}
    grid = dict(zip(BUDGET_GRID, curve.success, strict=True))
    assert grid[0.15] == 0 and grid[0.2] == 1 and grid[0.3] == 1 and grid[0.35] == 2 and grid[1.0] == 2
    assert np.all(np.diff(curve.success) >= 0) and np.all(np.diff(curve.strong) >= 0)
    assert np.all(curve.strong <= curve.success)


def test_cli_needs_images_or_dataset(tmp_path, capsys):
    assert main(["pareto", "--out", str(tmp_path / "o"), "--no-detector"]) == 2
    assert "IMAGE... or --dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_front_points_rescore_and_h(tmp_path, true_png, max_model_path):
    out = tmp_path / "p"
    flag_all = Detector(lambda images: np.ones(len(images), bool), {"threshold": "test: flag all"})
    summary = run_pareto(out, images=[true_png], config=TINY, model=str(max_model_path),
                         detector=flag_all, progress=False)
    rows = csv_dicts(out / "front.csv")
    assert len(rows) >= 2 and {r["image"] for r in rows} == {str(true_png)}
    image = load_image(true_png, (64, 64, 3))
    classifier = load_classifier(str(max_model_path))
    pix = np.array([[int(r[k]) for k in "xyrgb"] for r in rows])
    adv = np.repeat(image[None], len(pix), axis=0)
    adv[np.arange(len(pix)), pix[:, 1], pix[:, 0]] = pix[:, 2:]
    rescored = classifier.scores(adv)
    reported = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(reported, rescored, atol=1e-6)
    h = np.array([float(r["h"]) for r in rows])
    np.testing.assert_allclose(h, [own_h(image, *p[:2], p[2:]) for p in pix], atol=1e-9)
    # true.png scores above 0.5: the goal is to decrease it; the front is non-dominated.
    assert summary["images"][0]["goal"] == "decrease"
    assert dominated(np.column_stack([reported, h])) == []
    assert (out / "figures" / f"{Path(true_png).stem}.png").stat().st_size > 1000
    det = summary["detector"]
    n_success = int((reported < 0.5).sum())
    assert det["successful_points"] == n_success
    if n_success:
        assert det["successful_points_flagged"] == 1.0


@pytest.mark.slow
def test_dataset_budget_curve(tmp_path, true_png, false_png, max_model_path):
    root = tmp_path / "ds"
    (root / "mitosis").mkdir(parents=True)
    (root / "normal").mkdir()
    image = load_image(true_png, (64, 64, 3))
    Image.fromarray(image).save(root / "mitosis" / "rot0.png")
    Image.fromarray(np.ascontiguousarray(np.rot90(image))).save(root / "mitosis" / "rot90.png")
    Image.fromarray(load_image(false_png, (64, 64, 3))).save(root / "normal" / "false.png")
    out = tmp_path / "p"
    summary = run_pareto(out, dataset=root, config=TINY, model=str(max_model_path), progress=False)
    goals = {im["image"]: im["goal"] for im in summary["images"]}
    skipped = {s["image"] for s in summary["skipped"]}
    assert set(goals) | skipped == {"mitosis/rot0.png", "mitosis/rot90.png", "normal/false.png"}
    assert all(goals[n] == "decrease" for n in goals if n.startswith("mitosis/"))
    with open(out / "budget_curve.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [float(r["budget"]) for r in curve] == list(BUDGET_GRID)
    success = np.array([int(r["success"]) for r in curve])
    strong = np.array([int(r["strong"]) for r in curve])
    assert np.all(np.diff(success) >= 0) and np.all(np.diff(strong) >= 0)
    assert np.all(strong <= success)
    # The curve agrees with each image's lowest flipping h and with front.csv.
    lowest = json.loads((out / "summary.json").read_text())["lowest_flip_h"]
    for r in curve:
        assert int(r["success"]) == sum(v is not None and v <= float(r["budget"]) + 1e-12
                                        for v in lowest.values())
    rows = csv_dicts(out / "front.csv")
    for name, low in lowest.items():
        mine = [float(r["h"]) for r in rows if r["image"] == name and
                ((float(r["score"]) < 0.5) if goals[name] == "decrease" else (float(r["score"]) > 0.5))]
        assert (min(mine) if mine else None) == (None if low is None else pytest.approx(low))
    assert (out / "budget_curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_resumed_run_loses_and_duplicates_nothing(tmp_path, true_png, false_png, max_model_path,
                                                   monkeypatch):
    """A run killed after its first image, run again, writes the front.csv of an uninterrupted
    run and searches only the image it had not finished; other settings are refused."""
    model = str(max_model_path)
    whole = tmp_path / "whole"
    run_pareto(whole, images=[true_png, false_png], config=TINY, model=model, progress=False)

    real, searched = runner_module.pareto_front, []

    def crash_on_second(*args, **kwargs):
        if searched:
            raise KeyboardInterrupt("simulated kill")  # a fault a real run cannot make on demand
        searched.append(args[2])
        return real(*args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(runner_module, "pareto_front", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_pareto(out, images=[true_png, false_png], config=TINY, model=model, progress=False)
    assert not (out / "front.csv").exists() and len(list((out / "images").iterdir())) == 1

    searched.clear()

    def count(*args, **kwargs):
        searched.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "pareto_front", count)
    summary = run_pareto(out, images=[true_png, false_png], config=TINY, model=model,
                         progress=False)
    assert searched == [str(false_png)] and summary["resumed_images"] == 1
    assert (out / "front.csv").read_bytes() == (whole / "front.csv").read_bytes()
    with pytest.raises(OnepixelError, match="other settings.*search"):
        run_pareto(out, images=[true_png], config=ParetoConfig(population=12, generations=5),
                   model=model, progress=False)


@pytest.mark.slow
def test_front_against_the_campaign(tmp_path, true_png, false_png, max_model_path):
    """Seeded with an unconstrained campaign's pixel, every front's lowest-score end is at
    least as good as that pixel (re-scored here, independently of the code under test)."""
    dataset = write_pair_dataset(tmp_path / "ds", true_png, false_png)
    run = tmp_path / "run"
    run_campaign(CampaignConfig(dataset=dataset, out=run, model_options=ModelOptions(device="cpu"),
                                attack=AttackConfig(de=DEConfig(population=20, maxiter=6)),
                                progress=False))
    pixels = campaign_pixels(run)
    assert pixels, "the campaign attacked nothing"
    classifier = load_classifier(str(max_model_path))
    for seeded in (False, True):
        out = tmp_path / f"p-{seeded}"
        summary = run_pareto(out, dataset=dataset, config=TINY, model=str(max_model_path),
                             progress=False, campaign=run, campaign_seed=seeded)
        ref = summary["campaign"]
        assert ref["seeded"] is seeded and ref["compared"] == len(pixels)
        rows = csv_dicts(out / "front.csv")
        for entry in ref["images"]:
            name = entry["image"]
            p = pixels[name].pixel
            image = load_image(dataset / name, (64, 64, 3))
            adv = image.copy()
            adv[p[1], p[0]] = p[2:]
            mine = float(classifier.scores(adv[None])[0])
            assert entry["campaign_score"] == pytest.approx(mine, abs=1e-6)
            assert entry["campaign_h"] == pytest.approx(own_h(image, p[0], p[1], p[2:]), abs=1e-9)
            scores = [float(r["score"]) for r in rows if r["image"] == name]
            goal = pixels[name].goal
            best = min(scores) if goal == "decrease" else max(scores)
            assert entry["front_best_score"] == pytest.approx(best)
            gap = (mine - best) if goal == "decrease" else (best - mine)
            assert entry["gap"] == pytest.approx(gap, abs=1e-6)
            if seeded:
                assert gap >= -1e-6 and entry["front_at_least_as_good"]
        if seeded:
            assert ref["front_at_least_as_good"] == ref["compared"]
    # A k-pixel or multi-class RUN is no reference for a one-pixel binary front.
    config = json.loads((run / "config.json").read_text())
    config["attack"]["pixels"] = 3
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(OnepixelError, match="3 pixel"):
        campaign_pixels(run)


def test_campaign_seed_needs_a_campaign(tmp_path, capsys):
    assert main(["pareto", str(tmp_path), "--out", str(tmp_path / "o"), "--no-detector",
                 "--campaign-seed"]) == 2
    assert "--campaign-seed needs --campaign (the RUN" in capsys.readouterr().err


def test_stealth_exports_load():
    import onepixel.pareto as stealth

    for name in stealth.__all__:
        assert getattr(stealth, name) is not None, name
