"""The colour budget (``--max-colour-diff H``): every attack pixel keeps the chromatic h <= H.

h is recomputed here from the original image files with a few lines of plain numpy, independently
of :mod:`onepixel.attack.budget`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.attack import AttackConfig
from onepixel.attack.budget import neighbour_means, repair_candidates
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.errors import OnepixelError, RunError
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from run_files import attack_rows, write_patch_dataset

FAST = AttackConfig(de=DEConfig(population=20, maxiter=6))
BUDGET = 0.2


def _independent_h(image: np.ndarray, x: int, y: int, colour) -> float:
    """The chromatic paper's h: RMSE in [0, 1] against the mean of the neighbours that exist."""
    height, width = image.shape[:2]
    around = [image[y + dy, x + dx].astype(float) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if (dy, dx) != (0, 0) and 0 <= y + dy < height and 0 <= x + dx < width]
    mean = np.mean(around, axis=0)
    return float(np.sqrt(np.mean(((np.asarray(colour, float) - mean) / 255.0) ** 2)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, true_png, false_png):
    return write_patch_dataset(tmp_path_factory.mktemp("dataset") / "train", true_png, false_png)


def _config(dataset, out, attack=FAST, **kw):
    return CampaignConfig(dataset=dataset, out=out, model_options=ModelOptions(device="cpu"),
                          attack=attack, progress=False, **kw)


def _budget(h: float | None, pixels: int = 1) -> AttackConfig:
    return AttackConfig(de=FAST.de, max_colour_diff=h, pixels=pixels)


def test_repair_on_a_hand_made_image():
    img = np.zeros((1, 4, 5, 3), dtype=np.uint8)
    img[0, :, :] = (100, 50, 200)
    img[0, 0, 0] = (7, 7, 7)  # its neighbours' mean is still (100, 50, 200)
    img[0, 2, 3] = (101, 51, 201)  # makes the neighbour means of the pixels around it fractional
    means = neighbour_means(img)
    # A corner has 3 neighbours, an edge 5; the pixel itself never counts.
    np.testing.assert_allclose(means[0, 0, 0], (100, 50, 200))
    np.testing.assert_allclose(means[0, 1, 0], (100 * 4 + 7, 50 * 4 + 7, 200 * 4 + 7) / np.array(5.0))
    np.testing.assert_allclose(means[0, 2, 2], (100 + 1 / 8, 50 + 1 / 8, 200 + 1 / 8))
    cands = np.array([[[0, 0, 255, 255, 0],      # far outside the budget: repaired
                       [2, 2, 255, 0, 255],      # fractional mean, repaired
                       [1, 1, 110, 60, 190],     # inside the budget: unchanged
                       [4, 3, 0, 0, 0]]])         # a corner
    out = repair_candidates(np.array([0]), cands, means, 0.1)
    np.testing.assert_array_equal(out[0, 2], cands[0, 2])
    np.testing.assert_array_equal(out[..., :2], cands[..., :2])
    for p in range(4):
        x, y = out[0, p, :2]
        h = _independent_h(img[0], int(x), int(y), out[0, p, 2:])
        assert h <= 0.1
        if p != 2:
            # Moved along the line to the mean: close to the budget, not far inside it.
            assert h > 0.1 - 2 / 255
            before = np.asarray(cands[0, p, 2:], float) - means[0, y, x]
            after = out[0, p, 2:] - means[0, y, x]
            assert np.all(np.abs(after) <= np.abs(before) + 0.5)
            assert np.all((after * before) >= -0.25)  # never past the mean (up to rounding)


def test_repair_k_pixels_greyscale_and_tight_budgets():
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        img = rng.integers(0, 256, (2, 6, 7, channels), dtype=np.uint8)
        means = neighbour_means(img)
        k = 3
        width = 2 + channels
        cands = np.concatenate([rng.integers(0, 7, (2, 50, k, 1)), rng.integers(0, 6, (2, 50, k, 1)),
                                rng.integers(0, 256, (2, 50, k, channels))], axis=3)
        cands = cands.reshape(2, 50, k * width)
        for budget in (0.5 / 255, 0.004, 0.05, 0.3):
            out = repair_candidates(np.array([1, 0]), cands, means, budget)
            for r, b in enumerate((1, 0)):
                for p in range(50):
                    for g in range(k):
                        x, y, *colour = out[r, p, g * width:(g + 1) * width]
                        assert min(colour) >= 0 and max(colour) <= 255
                        assert _independent_h(img[b], x, y, colour) <= budget
    with pytest.raises(OnepixelError, match="budget"):
        repair_candidates(np.array([0]), cands[:1], means, 0.001)


def test_torch_repair_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    means = neighbour_means(img)
    cands = np.concatenate([rng.integers(0, 8, (3, 40, 2)), rng.integers(0, 256, (3, 40, 3))], axis=2)
    rows = np.array([2, 0, 1])
    want = repair_candidates(rows, cands, means, 0.15)
    got = repair_candidates(torch.as_tensor(rows), torch.as_tensor(cands, dtype=torch.float32),
                            torch.from_numpy(means), 0.15)
    np.testing.assert_array_equal(got.numpy(), want)


def test_config_validates_the_budget():
    assert AttackConfig().max_colour_diff is None
    assert AttackConfig(max_colour_diff=1).max_colour_diff == 1.0
    for bad in (-0.1, 1.5, 0.0, 0.001, float("nan"), "0.2", True):
        with pytest.raises(OnepixelError, match="AttackConfig.max_colour_diff"):
            AttackConfig(max_colour_diff=bad)


def _attack_pixels(run: Path) -> list[tuple[str, int, int, tuple[int, int, int]]]:
    """(image, x, y, colour) of every pixel of every attacked row, from attacks.csv's ``pixels``."""
    out = []
    with open(run / "attacks.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["status"] != "attacked":
                continue
            for group in row["pixels"].split(";"):
                x, y, r, g, b = (int(v) for v in group.split(","))
                out.append((row["image"], x, y, (r, g, b)))
            # The row's x, y, r, g, b are its first pixel.
            first = row["pixels"].split(";")[0].split(",")
            assert [row[c] for c in ("x", "y", "r", "g", "b")] == first
    return out


@pytest.mark.slow
def test_budget_campaign_keeps_every_pixel_within_budget(dataset, tmp_path, max_model_path):
    free = tmp_path / "free"
    run_campaign(_config(dataset, free))
    run = tmp_path / "budget"
    run_campaign(_config(dataset, run, attack=_budget(BUDGET)))
    pixels = _attack_pixels(run)
    assert len(pixels) == 10
    hs = [_independent_h(np.asarray(Image.open(dataset / name).convert("RGB")), x, y, colour)
          for name, x, y, colour in pixels]
    assert max(hs) <= BUDGET
    # The budget binds: the unconstrained attack picks more visible pixels.
    free_hs = [_independent_h(np.asarray(Image.open(dataset / name).convert("RGB")), x, y, colour)
               for name, x, y, colour in _attack_pixels(free)]
    assert max(free_hs) > BUDGET
    assert json.loads((run / "config.json").read_text())["attack"]["max_colour_diff"] == BUDGET
    assert json.loads((free / "config.json").read_text())["attack"]["max_colour_diff"] is None
    # Resuming with another budget (or none) is refused; the same budget resumes.
    for other in (_budget(0.3), FAST):
        with pytest.raises(RunError, match="attack"):
            run_campaign(_config(dataset, run, attack=other))
    run_campaign(_config(dataset, run, attack=_budget(BUDGET)))


@pytest.mark.slow
def test_a_budget_that_never_binds_changes_nothing(dataset, tmp_path, max_model_path):
    """h <= 1 always, so budget 1 repairs nothing: the rows equal the campaign without a budget."""
    run_campaign(_config(dataset, tmp_path / "free", limit=4))
    run_campaign(_config(dataset, tmp_path / "one", attack=_budget(1.0), limit=4))
    assert attack_rows(tmp_path / "one") == attack_rows(tmp_path / "free")


@pytest.mark.slow
def test_k_pixel_budget_campaign_and_cli(dataset, tmp_path, max_model_path):
    from onepixel.cli.main import main

    run = tmp_path / "cli"
    rc = main(["attack", str(dataset), "--out", str(run), "--device", "cpu", "--popsize", "20",
               "--maxiter", "3", "--pixels", "2", "--limit", "3", "--max-colour-diff", "0.1",
               "--no-progress"])
    assert rc == 0
    pixels = _attack_pixels(run)
    assert len(pixels) == 6
    for name, x, y, colour in pixels:
        image = np.asarray(Image.open(dataset / name).convert("RGB"))
        assert _independent_h(image, x, y, colour) <= 0.1
    assert json.loads((run / "config.json").read_text())["attack"]["max_colour_diff"] == 0.1


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "host"])
def test_attack_results_report_the_scored_feasible_pixel(engine, max_model_path, sample_images):
    """Both objective paths (on-device tensors, host arrays) repair; ``x`` is what was scored."""
    from onepixel.attack.objective import OnePixelAttack
    from onepixel.models.registry import load_classifier
    from onepixel.scoring.evaluators import HostEvaluator, TorchEvaluator, make_evaluator

    clf = load_classifier(str(max_model_path), ModelOptions(device="cpu", engine="torch"))
    ev = make_evaluator(clf) if engine == "torch" else HostEvaluator(clf)
    assert isinstance(ev, TorchEvaluator if engine == "torch" else HostEvaluator)
    config = AttackConfig(de=DEConfig(population=20, maxiter=4, tol=0.0), max_colour_diff=0.1,
                          stop_on_success=True)
    finished = {}
    results = OnePixelAttack(ev, config).run(sample_images, ["decrease", "increase"], [3, 4],
                                             on_finish=lambda b, r, _h: finished.update({b: r}))
    for b, res in enumerate(results):
        x, y, *colour = (int(v) for v in res.x)
        assert _independent_h(sample_images[b], x, y, colour) <= 0.1
        np.testing.assert_array_equal(finished[b].x, res.x)
        score = HostEvaluator(clf).scores(sample_images[b:b + 1], res.x[None, None].astype(int))[0, 0]
        assert res.fun == pytest.approx(score if b == 0 else 1 - score, abs=1e-9)
