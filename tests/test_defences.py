"""Defences (``--defence``) and the one-pixel attack detector (``onepixel detect``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.config import AttackConfig
from onepixel.cli.main import main
from onepixel.defences import filters
from onepixel.defences.ranks import select
from onepixel.defences.spec import DEFAULT_REPAIR_H, DefenceStep, parse_defence
from onepixel.defences.wrapper import DefendedClassifier, apply_defence, defend
from onepixel.detection.calibration import calibrate, image_statistic, threshold_at
from onepixel.errors import ConfigError, OnepixelError, RunError
from onepixel.models.base import capabilities_of
from onepixel.models.callable_backend import CallableClassifier
from onepixel.models.options import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.scoring.evaluators import HostEvaluator
from onepixel.scoring.policy import load_attack_evaluator, load_scoring_classifier
from run_files import write_patch_dataset

FAST = AttackConfig(de=DEConfig(population=20, maxiter=6))


def smooth(h: int = 12, w: int = 10) -> np.ndarray:
    """(1, h, w, 3) uint8: a gentle gradient (no pixel stands out from its neighbours)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([100 + 3 * yy, 80 + 2 * xx, 120 + yy + xx], axis=-1)
    return img.astype(np.uint8)[None]


def with_lone_pixel(base: np.ndarray, y: int = 5, x: int = 4, rgb=(255, 0, 255)) -> np.ndarray:
    out = base.copy()
    out[0, y, x] = rgb
    return out


# ----------------------------------------------------------------------------- spec


def test_parse_defence_chains_and_defaults():
    assert parse_defence("median3, blur:1.5,repair,jpeg:75,bits:4") == (
        DefenceStep("median3"), DefenceStep("blur", 1.5), DefenceStep("repair", DEFAULT_REPAIR_H),
        DefenceStep("jpeg", 75), DefenceStep("bits", 4))
    assert parse_defence(None) == parse_defence("none") == parse_defence("") == ()
    assert DefendedClassifier(CallableClassifier(lambda x: x[:, 0, 0, 0] / 255.0, (8, 8, 3)),
                              "median3,repair:0.2").defence == "median3,repair:0.2"


@pytest.mark.parametrize("spec, needle", [
    ("median4", "unknown defence 'median4'"), ("blur", "blur needs an argument"),
    ("median3:2", "median3 takes no argument"), ("jpeg:high", "must be an integer"),
    ("bits:8", "out of range"), ("blur:0", "out of range"), ("repair:1.5", "out of range"),
])
def test_parse_defence_errors_name_the_option(spec, needle):
    with pytest.raises(ConfigError, match="defence spec") as exc:
        parse_defence(spec)
    assert needle in str(exc.value) and exc.value.field == "defence"


# ----------------------------------------------------------------------------- filters


def test_rank_network_equals_sort():
    rng = np.random.default_rng(0)
    for n in (8, 9, 25):
        values = rng.integers(0, 256, (n, 500), dtype=np.uint8)
        ranks = (n // 2 - 1, n // 2)
        got = select(list(values), ranks)
        expected = np.sort(values, axis=0)
        for g, r in zip(got, ranks, strict=True):
            np.testing.assert_array_equal(g, expected[r])


@pytest.mark.parametrize("name", ["median3", "median5"])
def test_median_removes_a_lone_pixel(name):
    base = smooth()
    attacked = with_lone_pixel(base)
    out = apply_defence(attacked, name)
    # The lone magenta pixel becomes a colour of its surroundings.
    assert np.abs(out[0, 5, 4].astype(int) - base[0, 5, 4]).max() <= 6
    assert out.dtype == np.uint8 and out.shape == attacked.shape


def test_median3_matches_scipy():
    from scipy.ndimage import median_filter

    x = np.random.default_rng(1).integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    for size in (3, 5):
        np.testing.assert_array_equal(filters.median(x, size),
                                      median_filter(x, size=(1, size, size, 1), mode="mirror"))


def test_repair_keeps_a_smooth_image_and_fixes_a_lone_outlier():
    base = smooth()
    np.testing.assert_array_equal(apply_defence(base, "repair"), base)
    assert filters.h_map(base).max() < 0.05
    attacked = with_lone_pixel(base, rgb=(0, 255, 0))
    assert filters.h_map(attacked)[0, 5, 4] > DEFAULT_REPAIR_H
    out = apply_defence(attacked, "repair")
    # Only the outlier changed, to the median of its 8 neighbours.
    changed = np.argwhere((out != attacked).any(axis=-1))
    assert changed.tolist() == [[0, 5, 4]]
    neighbours = np.concatenate([base[0, 4:7, 3:6].reshape(-1, 3)[:4], base[0, 4:7, 3:6].reshape(-1, 3)[5:]])
    expected = np.floor((np.sort(neighbours, axis=0)[3:5].astype(int).sum(axis=0) + 1) / 2)
    np.testing.assert_array_equal(out[0, 5, 4], expected)


def test_h_is_the_chromatic_rmse():
    img = np.zeros((1, 3, 3, 3), np.uint8)
    img[0, 1, 1] = (255, 255, 255)
    assert filters.h_map(img)[0, 1, 1] == pytest.approx(1.0)
    img[0, 1, 1] = (255, 0, 0)
    assert filters.h_map(img)[0, 1, 1] == pytest.approx(np.sqrt(1 / 3))


def test_bits_quantises():
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    out = apply_defence(ramp, "bits:1")
    assert set(np.unique(out)) == {0, 255}
    assert out[0, 0, 0, 0] == 0 and out[0, -1, -1, 0] == 255
    assert len(np.unique(apply_defence(ramp, "bits:3"))) == 8
    np.testing.assert_array_equal(apply_defence(apply_defence(ramp, "bits:3"), "bits:3"),
                                  apply_defence(ramp, "bits:3"))


def test_jpeg_round_trip():
    base = np.repeat(np.repeat(smooth(16, 16), 1, axis=1), 1, axis=2)
    out = apply_defence(base, "jpeg:95")
    assert out.shape == base.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - base).mean() < 3  # high quality: close to the input
    attacked = with_lone_pixel(base, 8, 8)
    low = apply_defence(attacked, "jpeg:10")
    # Low quality smears the lone pixel: far less magenta than before.
    assert np.abs(low[0, 8, 8].astype(int) - attacked[0, 8, 8]).max() > 60
    grey = base[..., :1]
    assert apply_defence(grey, "jpeg:50").shape == grey.shape


def test_blur_smooths():
    attacked = with_lone_pixel(smooth())
    out = apply_defence(attacked, "blur:1")
    assert filters.h_map(out)[0, 5, 4] < filters.h_map(attacked)[0, 5, 4] / 3
    # A constant image is unchanged (the kernel sums to one, borders mirrored).
    flat = np.full((1, 6, 6, 3), 77, np.uint8)
    np.testing.assert_array_equal(apply_defence(flat, "blur:2"), flat)


# ----------------------------------------------------------------------------- wrapper


def test_wrapper_declares_no_layers_and_carries_the_defence(max_model_path, sample_images):
    plain = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"))
    defended = load_scoring_classifier("max-mitosis", ModelOptions(device="cpu"), "median3")
    caps = capabilities_of(defended)
    assert not caps.layers and not caps.tensor_scoring
    assert caps.fingerprint == capabilities_of(plain).fingerprint + "+defence:median3"
    assert defended.name.endswith("+median3")
    assert defend(plain, "none") is plain
    np.testing.assert_allclose(defended.scores(sample_images),
                               plain.scores(apply_defence(sample_images, "median3")), rtol=0, atol=0)
    # true.png stays a mitosis through the defence; false.png stays normal.
    s = defended.scores(sample_images)
    assert s[0] > 0.5 > s[1]
    # Attacks go through the whole defended pipeline, never the incremental engine.
    ev = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), "auto", "deferred",
                               defence="median3")
    assert isinstance(ev, HostEvaluator) and isinstance(ev.classifier, DefendedClassifier)
    with pytest.raises(OnepixelError, match="bypass the defence"):
        load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), "incremental",
                              defence="median3")


def test_campaign_through_median3_records_the_defence(tmp_path, true_png, false_png, max_model_path):
    dataset = write_patch_dataset(tmp_path / "ds", true_png, false_png)
    ev = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), defence="median3")
    cfg = CampaignConfig(dataset=dataset, out=tmp_path / "run", model_options=ModelOptions(device="cpu"),
                         attack=FAST, limit=3, progress=False)
    run_campaign(cfg, classifier=ev.classifier)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["defence"] == "median3"
    assert config["model"]["sha256"].endswith("+defence:median3")
    assert config["evaluator"] == "HostEvaluator"
    # The same RUN is not resumed through another defence.
    other = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), defence="median5")
    with pytest.raises(RunError, match="model.sha256"):
        run_campaign(cfg, classifier=other.classifier)


def test_cli_predict_through_a_defence(tmp_path, true_png, max_model_path, capsys):
    assert main(["predict", str(true_png), "--defence", "median3", "--device", "cpu"]) == 0
    defended = float(capsys.readouterr().out.splitlines()[1].split(",")[1])
    assert main(["predict", str(true_png), "--device", "cpu"]) == 0
    plain = float(capsys.readouterr().out.splitlines()[1].split(",")[1])
    assert defended != plain and defended > 0.5
    assert main(["predict", str(true_png), "--defence", "median9"]) == 2
    assert "defence spec: unknown defence 'median9'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- detector


def test_threshold_at_gives_the_rate():
    values = np.arange(100, dtype=float)
    t = threshold_at(values, 0.05)
    assert np.mean(values > t) == pytest.approx(0.05)


def test_detector_flags_a_one_pixel_image_and_holds_its_fpr(he_dir):
    cal = calibrate(0.05)
    assert cal.n_calibration > 300 and cal.n_heldout > 300
    # Held-out clean tiles (never used for the threshold): the rate asked for, up to sampling.
    assert cal.heldout_fpr <= 0.05 + 0.025
    from onepixel.detection.calibration import clean_tiles

    _, held, _ = clean_tiles()
    clean = held[:50]
    assert cal.flag(image_statistic(clean)).mean() <= 0.2
    # A saturated green pixel: far from every H&E colour (docs/defences.md: a red one in
    # tissue is flagged about half the time only).
    attacked = clean.copy()
    attacked[np.arange(50), 20 + np.arange(50) % 20, 30] = (5, 250, 5)
    assert cal.flag(image_statistic(attacked)).mean() >= 0.9


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_detect_images_and_run(tmp_path, true_png, false_png, max_model_path, he_dir, capsys):
    dataset = write_patch_dataset(tmp_path / "ds", true_png, false_png)
    run = tmp_path / "run"
    cfg = CampaignConfig(dataset=dataset, out=run, model_options=ModelOptions(device="cpu"),
                         attack=FAST, limit=3, progress=False)
    run_campaign(cfg)
    assert main(["detect", "--run", str(run), "--out", str(tmp_path / "det")]) == 0
    rows = _rows(tmp_path / "det" / "detections.csv")
    assert [r["version"] for r in rows].count("adversarial") == 3
    assert {r["version"] for r in rows} == {"original", "adversarial"}
    info = json.loads((tmp_path / "det" / "detection.json").read_text())
    assert info["calibration"]["target_fpr"] == 0.05 and info["n_originals"] == 3
    # A hand-made adversarial image: true.png with one saturated pixel.
    from PIL import Image

    from onepixel.datasets.images import load_image

    img = np.array(load_image(true_png))
    img[10, 10] = (5, 250, 5)
    Image.fromarray(img).save(tmp_path / "adv.png")
    assert main(["detect", str(tmp_path / "adv.png"), "--out", str(tmp_path / "det2")]) == 0
    rows = _rows(tmp_path / "det2" / "detections.csv")
    assert rows[0]["version"] == "original" and rows[0]["flagged"] == "1"
    assert main(["detect", "--out", str(tmp_path / "det3")]) == 2
    assert "give IMAGE... or --run RUN" in capsys.readouterr().err
