"""`onepixel evaluate` on an unlabelled (flat) folder of real patches with the real MAX model:
each image is attacked away from the model's prediction by every method, evaluation.csv's label
is that prediction, and the headline is the prediction stability, not an accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from independent import csv_dicts
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image
from onepixel.errors import ConfigError
from onepixel.evaluation.runner import evaluate
from onepixel.models import ModelOptions
from onepixel.scoring.policy import load_scoring_classifier
from run_files import write_pair_dataset

CPU = ModelOptions(device="cpu")


@pytest.fixture(scope="module")
def flat(tmp_path_factory, max_model_path, true_png, false_png):
    """No class folders: a rotation of the MAX sample that rs flips in about 300 queries
    (predicted mitosis) and false.png (predicted normal, which one pixel does not flip)."""
    root = tmp_path_factory.mktemp("flat")
    variant = dihedral_variants(load_image(true_png, (64, 64, 3)))["flip-rot270"]
    Image.fromarray(variant).save(root / "true_flip-rot270.png")
    Image.fromarray(load_image(false_png, (64, 64, 3))).save(root / "false.png")
    return root


@pytest.fixture(scope="module")
def plain(max_model_path):
    """The MAX model on whole images, loaded independently of the code under test."""
    return load_scoring_classifier("max-mitosis", CPU)


@pytest.mark.slow  # about 12 s on a busy 2-core machine: two campaigns of the real model
def test_evaluate_attacks_unlabelled_images_away_from_their_prediction(flat, plain, tmp_path):
    from onepixel.report.evaluate_section import evaluation_section

    out = tmp_path / "eval"
    summary = evaluate(flat, out, methods=("rs", "de"), max_queries=1000, model_options=CPU,
                       progress=False)
    names = sorted(p.name for p in flat.iterdir())
    scores = plain.scores(np.stack([load_image(flat / n, (64, 64, 3)) for n in names]))
    predicted = {n: "mitosis" if s > 0.5 else "normal" for n, s in zip(names, scores, strict=True)}
    assert predicted == {"false.png": "normal", "true_flip-rot270.png": "mitosis"}

    rows = {r["image"]: r for r in csv_dicts(out / "evaluation.csv")}
    assert {n: r["label"] for n, r in rows.items()} == predicted
    # Every method's RUN labels by prediction, and attacks away from that same class.
    for method in ("rs", "de"):
        run = out / "runs" / method
        assert json.loads((run / "config.json").read_text())["labels"] == "predicted"
        for r in csv_dicts(run / "attacks.csv"):
            assert r["label"] == predicted[r["image"]], (method, r["image"])
            assert r["goal"] == ("decrease" if r["label"] == "mitosis" else "increase")
    # rs flips the mitosis prediction (its pixel re-scores below 0.5 on the whole model); DE
    # then runs only on what is left (false.png).
    assert [r["image"] for r in csv_dicts(out / "runs" / "de" / "attacks.csv")] == ["false.png"]
    r = rows["true_flip-rot270.png"]
    assert (r["status"], r["method"]) == ("broken", "rs") and int(r["queries"]) <= 1000
    image = load_image(flat / r["image"], (64, 64, 3)).copy()
    image[int(r["y"]), int(r["x"])] = (int(r["r"]), int(r["g"]), int(r["b"]))
    flipped = float(plain.scores(image[None])[0])
    assert flipped < 0.5 and flipped == pytest.approx(float(r["score"]), abs=1e-5)
    assert rows["false.png"]["status"] == "robust"
    assert int(rows["false.png"]["queries"]) == 2000  # rs's budget and DE's, added

    # The headline is the prediction stability with its sample size, never an accuracy.
    assert summary.labels == "predicted" and np.isnan(summary.robust_accuracy)
    assert summary.prediction_stability == pytest.approx(1 / 2)
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["labels"] == "predicted" and saved["robust_accuracy"] is None
    assert saved["prediction_stability"] == pytest.approx(1 / 2)
    headline = saved["headline"]
    assert headline.startswith("prediction stability under one-pixel attack")
    assert "not an accuracy" in headline and "1 of 2 images" in headline
    assert "robust accuracy" not in headline
    section = evaluation_section(out)
    assert section.heading.startswith("Prediction stability")
    assert "not how accurate" in section.tables[0].reading


def test_pinned_labels_override_the_prediction(flat, plain, tmp_path, true_png, false_png):
    """run_campaign(labels=...) attacks away from the pinned label (evaluate pins every method to
    the first one's predictions); pins need an unlabelled dataset and one of its classes."""
    cfg = CampaignConfig(dataset=flat, out=tmp_path / "run", model_options=CPU, progress=False,
                         attack=AttackConfig(method="rs", max_queries=200, stop_on_success=True))
    # false.png scores about 0.003: pinned to mitosis it is an ambiguous positive (papers' rule).
    run_campaign(cfg, classifier=plain, only=["false.png"], labels={"false.png": "mitosis"})
    (row,) = csv_dicts(cfg.out / "attacks.csv")
    assert (row["image"], row["label"], row["status"]) == ("false.png", "mitosis", "skipped")
    with pytest.raises(ConfigError, match=r"run_campaign\(labels\).*got tumour"):
        run_campaign(cfg, classifier=plain, labels={"false.png": "tumour"})
    labelled = write_pair_dataset(tmp_path / "labelled", true_png, false_png)
    with pytest.raises(ConfigError, match="got labelled"):
        from dataclasses import replace

        run_campaign(replace(cfg, dataset=labelled, out=tmp_path / "run2"), classifier=plain,
                     labels={"normal/false.png": "normal"})
