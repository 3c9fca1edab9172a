"""Any classifier, any image, any goal: a 10-class digits CNN (not the MAX model), ImageFolder
datasets, untargeted and targeted campaigns, k pixels, a greyscale non-square model.

Every reported pixel is re-applied to the image and re-scored with ONNX Runtime directly (the
model's own runtime, not onepixel's scoring path), and must give the reported class.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from digits_models import model_and_folder, model_options, ort_probs  # noqa: E402
from onepixel.attack import AttackConfig  # noqa: E402
from onepixel.attack.campaign import run_campaign  # noqa: E402
from onepixel.attack.config import CampaignConfig  # noqa: E402
from onepixel.datasets.images import load_image, scan_image_folder  # noqa: E402
from onepixel.errors import DatasetError, OnepixelError  # noqa: E402
from onepixel.models import ModelOptions, load_classifier  # noqa: E402
from onepixel.optimize.de import DEConfig  # noqa: E402

OPTIONS = model_options()
FAST = DEConfig(population=60, maxiter=25, seed=3)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-rgb")
    return model_and_folder(root, "digits.onnx", (32, 32, 3), per_class=2)


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-grey")
    return model_and_folder(root, "grey.onnx", (24, 32, 1), per_class=1)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "attacks.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ort_classes(model: Path, images: np.ndarray) -> np.ndarray:
    return ort_probs(model, images).argmax(axis=1)


def _apply(image: np.ndarray, pixels: str) -> np.ndarray:
    out = image.copy()
    for group in pixels.split(";"):
        x, y, r, g, b = (int(v) for v in group.split(","))
        out[y, x] = (r, g, b)[: out.shape[2]]
    return out


def _check_reported_classes(model: Path, dataset: Path, rows: list[dict[str, str]],
                            target: str | None = None):
    """Re-apply each attack's pixels, re-score with ONNX Runtime: the reported class and the
    reported probability (of the true class, or of the target) are what the model gives."""
    attacked = [r for r in rows if r["status"] == "attacked"]
    assert attacked
    shape = load_classifier(str(model), OPTIONS).input_shape
    images = np.stack([_apply(load_image(dataset / r["image"], shape), r["pixels"]) for r in attacked])
    probs = ort_probs(model, images)
    for row, p in zip(attacked, probs, strict=True):
        assert str(int(p.argmax())) == row["attacked_class"], row
        about = int(target if target is not None else row["label"])
        assert float(row["attacked_score"]) == pytest.approx(p[about], rel=1e-5, abs=1e-9), row
    return attacked


def test_ten_class_model_loads_with_class_probabilities(rgb):
    model, dataset = rgb
    clf = load_classifier(str(model), OPTIONS)
    assert clf.capabilities.n_classes == 10 and clf.input_shape == (32, 32, 3)
    ds = scan_image_folder(dataset)
    assert ds.classes == tuple(str(d) for d in range(10))
    images = np.stack([load_image(it.path, clf.input_shape) for it in ds.items])
    probs = clf.scores(images)
    assert probs.shape == (len(images), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(probs.argmax(axis=1), _ort_classes(model, images))
    # --positive-index still reduces a K-output model to one score
    one = load_classifier(str(model), ModelOptions(device="cpu", preprocess="unit", layout="nchw",
                                                   model_output="logit", positive_index=3))
    assert one.capabilities.n_classes == 1
    np.testing.assert_allclose(one.scores(images), probs[:, 3], atol=1e-12)


@pytest.mark.slow
def test_untargeted_campaign_reports_classes_the_model_gives(rgb, tmp_path):
    # Five pixels: this small CNN resists most one-pixel attacks on its 4x-upscaled digits
    # (0 of 20 at this budget, seed 3), and the test wants successes to check too.
    model, dataset = rgb
    run = tmp_path / "run"
    summary = run_campaign(CampaignConfig(dataset=dataset, out=run, model=str(model),
                                          model_options=OPTIONS,
                                          attack=AttackConfig(de=FAST, pixels=5), progress=False))
    rows = _rows(run)
    assert len(rows) == 20
    for row in rows:
        assert row["goal"] == "untargeted" and row["direction"] == f"{row['label']}-to-other"
        if row["status"] == "skipped":
            assert row["skip_reason"].startswith("misclassified") and row["original_class"] != row["label"]
        else:
            assert row["original_class"] == row["label"]
    attacked = _check_reported_classes(model, dataset, rows)
    for row in attacked:
        assert row["success"] == ("1" if row["attacked_class"] != row["label"] else "0")
    assert all(len(r["pixels"].split(";")) == 5 for r in attacked)
    n = sum(d["success"]["count"] for d in summary["directions"].values())
    assert n == sum(r["success"] == "1" for r in attacked)


@pytest.mark.slow
def test_targeted_campaign_reaches_the_target_or_says_it_did_not(rgb, tmp_path):
    model, dataset = rgb
    run = tmp_path / "run"
    run_campaign(CampaignConfig(dataset=dataset, out=run, model=str(model), model_options=OPTIONS,
                                attack=AttackConfig(de=FAST), progress=False, target="8"))
    rows = _rows(run)
    for row in rows:
        assert row["goal"] == "targeted"
        if row["label"] == "8" and row["status"] == "skipped":
            assert "target" in row["skip_reason"] or "misclassified" in row["skip_reason"]
    attacked = _check_reported_classes(model, dataset, rows, target="8")
    for row in attacked:
        assert row["success"] == ("1" if row["attacked_class"] == "8" else "0")


@pytest.mark.slow
def test_three_pixels_succeed_at_least_as_often_as_one(rgb, tmp_path):
    """The same images, seed and budget: k = 3 is a superset of k = 1's search space."""
    model, dataset = rgb
    wins = {}
    for k in (1, 3):
        run = tmp_path / f"k{k}"
        run_campaign(CampaignConfig(dataset=dataset, out=run, model=str(model), model_options=OPTIONS,
                                    attack=AttackConfig(de=FAST, pixels=k), progress=False))
        rows = _rows(run)
        attacked = _check_reported_classes(model, dataset, rows)
        if k == 3:
            assert all(len(r["pixels"].split(";")) == 3 for r in attacked)
        wins[k] = sum(r["success"] == "1" for r in attacked)
    assert wins[3] >= wins[1], wins


def test_dataset_and_model_must_agree(rgb, tmp_path):
    model, dataset = rgb
    with pytest.raises(DatasetError, match="10 class probabilities"):
        run_campaign(CampaignConfig(dataset=dataset, out=tmp_path / "r", model=str(model),
                                    model_options=OPTIONS, classes=("0", "1", "2"), progress=False))
    with pytest.raises(OnepixelError, match="CampaignConfig.target"):
        run_campaign(CampaignConfig(dataset=dataset, out=tmp_path / "r2", model=str(model),
                                    model_options=OPTIONS, target="cat", progress=False))


@pytest.mark.slow
def test_greyscale_non_square_model_end_to_end(grey, tmp_path):
    """attack, analyze, report and confmap through the CLI on a 24x32 greyscale model."""
    model, dataset = grey
    common = ["--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit"]

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "onepixel.cli", "-q", *map(str, args)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc

    run = tmp_path / "run"
    cli("attack", dataset, "--out", run, "--model", model, "--popsize", "40", "--maxiter", "10",
        "--no-progress", *common)
    rows = _rows(run)
    attacked = [r for r in rows if r["status"] == "attacked"]
    assert attacked
    for row in attacked:
        assert 0 <= int(row["x"]) < 32 and 0 <= int(row["y"]) < 24
        assert row["r"] == row["g"] == row["b"]  # a grey value
    _check_reported_classes(model, dataset, rows)
    cli("analyze", run)
    with open(run / "analysis" / "tables" / "class_matrix.csv", encoding="utf-8") as fh:
        matrix = list(csv.reader(fh))
    assert matrix[0][:4] == ["True class", "Attacked", "Success", "Success %"]
    assert sum(int(r[1]) for r in matrix[1:]) == len(attacked)
    cli("report", run)
    assert (run / "report.html").stat().st_size > 10_000
    image = dataset / attacked[0]["image"]
    cli("confmap", image, "--out", tmp_path / "map", "--model", model, "--step", "255", *common)
    with np.load(tmp_path / "map" / "confmap.npz") as npz:
        assert npz["min"].shape == (24, 32)
