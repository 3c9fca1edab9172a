"""`onepixel pareto` on K-class models: untargeted and targeted fronts, ImageFolder datasets, a
greyscale non-square model, the CLI and its errors.

The models are the 10-class digits CNNs of ``digits_models`` (32x32 RGB, 24x32 greyscale),
trained here. Every front point is re-applied to its image and re-scored with ONNX Runtime
directly, and h is recomputed here, independently of the code under test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pymoo")
pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from digits_models import model_options, ort_probs, train_and_export, write_image_folder  # noqa: E402
from independent import csv_dicts, dominated, own_h  # noqa: E402
from onepixel.cli.main import main  # noqa: E402
from onepixel.errors import OnepixelError  # noqa: E402
from onepixel.pareto.config import FRONT_COLUMNS, ParetoConfig  # noqa: E402
from onepixel.pareto.curve import BUDGET_GRID  # noqa: E402
from onepixel.pareto.pareto import ImageFront, front_flags  # noqa: E402
from onepixel.pareto.runner import run_pareto  # noqa: E402
from onepixel.pareto.store import load_front, save_front  # noqa: E402

OPTIONS = model_options()
CLI_MODEL = ["--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit"]
TINY = ParetoConfig(population=12, generations=4, seed=3)
EPOCHS = 5



def _save(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(path)
    return path


def _pick(model: Path, images: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n images the model is least sure of (top-2 margin): a one-pixel flip is
    likeliest there, so the success flags are exercised both ways."""
    probs = np.sort(ort_probs(model, images), axis=1)
    return np.argsort(probs[:, -1] - probs[:, -2], kind="stable")[:n]


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    root = tmp_path_factory.mktemp("pareto-rgb")
    images, labels = train_and_export(root / "digits.onnx", (32, 32, 3), epochs=EPOCHS)
    files = [_save(images[i], root / f"img{i:04d}.png")
             for i in _pick(root / "digits.onnx", images, 3)]
    dataset = write_image_folder(root / "ds", images, labels, per_class=1)
    return root / "digits.onnx", files, dataset


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    root = tmp_path_factory.mktemp("pareto-grey")
    images, _ = train_and_export(root / "grey.onnx", (24, 32, 1), epochs=EPOCHS)
    files = [_save(images[i], root / f"img{i:04d}.png")
             for i in _pick(root / "grey.onnx", images, 2)]
    return root / "grey.onnx", files


def _check_fronts(model: Path, out: Path, summary: dict, shape: tuple[int, int, int]) -> int:
    """Each front point re-scored and judged here; returns the successful points."""
    rows = csv_dicts(out / "front.csv")
    classes = summary["classes"]
    assert tuple(rows[0]) == (*FRONT_COLUMNS, "attacked_class")
    height, width, channels = shape
    n_success = 0
    for entry in summary["images"]:
        name, goal = entry["image"], entry["goal"]
        mine = [r for r in rows if r["image"] == name]
        assert len(mine) == entry["front_size"] >= 1
        image = np.asarray(Image.open(name).convert("L" if channels == 1 else "RGB"))
        image = image.reshape(height, width, channels)
        pix = np.array([[int(r[k]) for k in "xyrgb"] for r in mine])
        assert np.all((pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0)
                      & (pix[:, 1] < height))
        if channels == 1:  # a greyscale value is written as r = g = b, as attacks.csv does
            assert np.all(pix[:, 2] == pix[:, 3]) and np.all(pix[:, 3] == pix[:, 4])
        colour = pix[:, 2:2 + channels]
        adv = np.repeat(image[None], len(pix), axis=0)
        adv[np.arange(len(pix)), pix[:, 1], pix[:, 0]] = colour
        probs = ort_probs(model, adv)
        original = ort_probs(model, image[None])[0]
        k = classes.index(entry["goal_class"])
        if goal == "untargeted":
            assert k == int(original.argmax())  # away from the class it predicts
            energy, success = probs[:, k], probs.argmax(axis=1) != k
            strong = probs[:, k] < 0.05
        else:
            assert goal == "targeted" and classes[k] == summary["target"]
            energy, success = 1.0 - probs[:, k], probs.argmax(axis=1) == k
            strong = probs[:, k] > 0.95
        score = np.array([float(r["score"]) for r in mine])
        h = np.array([float(r["h"]) for r in mine])
        np.testing.assert_allclose(score, probs[:, k], atol=1e-6)
        assert entry["original_score"] == pytest.approx(original[k], abs=1e-6)
        np.testing.assert_allclose(
            h, [own_h(image, p[0], p[1], c) for p, c in zip(pix, colour, strict=True)], atol=1e-9)
        assert [r["attacked_class"] for r in mine] == [classes[c] for c in probs.argmax(axis=1)]
        # Non-dominated in (energy, h), the numbers reported, and sorted by h.
        reported = score if goal == "untargeted" else 1.0 - score
        np.testing.assert_allclose(reported, energy, atol=1e-6)
        assert dominated(np.column_stack([reported, h])) == [] and np.all(np.diff(h) >= 0)
        # The stored flags are the argmax checks made here.
        front = load_front(next((out / "images").glob(f"{Path(name).stem}.npz")), name, goal, k)
        assert front is not None
        np.testing.assert_array_equal(front.success, success)
        np.testing.assert_array_equal(front.strong, strong)
        assert entry["successful_points"] == int(success.sum())
        assert entry["lowest_flip_h"] == (pytest.approx(h[success].min()) if success.any()
                                          else None)
        n_success += int(success.sum())
    # The budget curve counts what front.csv says, per budget.
    lowest = {}
    for entry in summary["images"]:
        k = classes.index(entry["goal_class"])
        ok = [float(r["h"]) for r in rows if r["image"] == entry["image"] and
              ((r["attacked_class"] != classes[k]) if entry["goal"] == "untargeted"
               else (r["attacked_class"] == classes[k]))]
        lowest[entry["image"]] = min(ok) if ok else None
    for budget, row in zip(BUDGET_GRID, summary["budget_curve"], strict=True):
        assert float(row["budget"]) == pytest.approx(budget)
        assert row["success"] == sum(v is not None and v <= budget for v in lowest.values())
    return n_success


@pytest.mark.slow  # the module's two CNNs train once, about 5 s
def test_untargeted_and_targeted_fronts(rgb, tmp_path):
    model, files, _ = rgb
    out = tmp_path / "untargeted"
    summary = run_pareto(out, images=files, config=TINY, model=str(model), model_options=OPTIONS,
                         progress=False)
    assert {e["goal"] for e in summary["images"]} == {"untargeted"}
    assert summary["classes"] == [str(k) for k in range(10)] and summary["target"] is None
    assert "detector" not in summary
    found = _check_fronts(model, out, summary, (32, 32, 3))
    # Targeted, towards the runner-up class of the least sure image (index given).
    runner_up = int(np.argsort(ort_probs(model, np.asarray(Image.open(files[0]))[None])[0])[-2])
    out_t = tmp_path / "targeted"
    summary_t = run_pareto(out_t, images=files, config=TINY, model=str(model),
                           model_options=OPTIONS, progress=False, target=str(runner_up),
                           classes=[f"d{k}" for k in range(10)])
    assert summary_t["target"] == f"d{runner_up}"
    assert {e["goal"] for e in summary_t["images"]} == {"targeted"}
    skipped = {s["image"] for s in summary_t["skipped"]}
    assert len(summary_t["images"]) + len(skipped) == len(files)
    found += _check_fronts(model, out_t, summary_t, (32, 32, 3))
    assert found > 0, "no front point succeeded: the flags were only checked one way"
    # Rerun: everything loads from images/, the same front.csv; another target is refused.
    before = (out_t / "front.csv").read_bytes()
    again = run_pareto(out_t, images=files, config=TINY, model=str(model), model_options=OPTIONS,
                       progress=False, target=str(runner_up),
                       classes=[f"d{k}" for k in range(10)])
    assert again["resumed_images"] == len(summary_t["images"])
    assert (out_t / "front.csv").read_bytes() == before
    with pytest.raises(OnepixelError, match="other settings.*target"):
        run_pareto(out_t, images=files, config=TINY, model=str(model), model_options=OPTIONS,
                   progress=False, target=str((runner_up + 1) % 10),
                   classes=[f"d{k}" for k in range(10)])


@pytest.mark.slow  # the module's two CNNs train once, about 5 s
def test_dataset_planned_as_a_campaign(rgb, tmp_path):
    model, _, dataset = rgb
    images = sorted(dataset.rglob("*.png"))
    truth = {p.relative_to(dataset).as_posix(): int(p.parent.name) for p in images}
    predicted = dict(zip(truth, ort_probs(model, np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in images])).argmax(axis=1), strict=True))
    for target in (None, "3"):
        out = tmp_path / f"ds-{target}"
        summary = run_pareto(out, dataset=dataset, config=TINY, model=str(model),
                             model_options=OPTIONS, progress=False, target=target)
        attacked = {e["image"]: e for e in summary["images"]}
        skipped = {s["image"]: s["reason"] for s in summary["skipped"]}
        assert set(attacked) | set(skipped) == set(truth) and not set(attacked) & set(skipped)
        for name, true in truth.items():
            wrong = predicted[name] != true
            if wrong:
                assert skipped[name].startswith("misclassified")
            elif target is not None and true == int(target):
                assert skipped[name].startswith("already of the target class")
            else:
                e = attacked[name]
                assert e["goal"] == ("untargeted" if target is None else "targeted")
                assert e["goal_class"] == (str(true) if target is None else target)
                assert e["original_class"] == str(true)
        rows = csv_dicts(out / "front.csv")
        assert {r["image"] for r in rows} == set(attacked)
        with open(out / "budget_curve.csv", newline="") as fh:
            curve = list(csv.DictReader(fh))
        assert [int(r["success"]) for r in curve] == [r["success"] for r in summary["budget_curve"]]
    # The report's stealth section reads a K-class folder.
    from onepixel.report.pareto_section import pareto_section

    section = pareto_section(out, figures=False)
    goals = {row[1] for t in section.tables if t.name == "stealth_images" for row in t.rows}
    assert goals == {"targeted"}
    assert "predicts another class" in section.tables[0].caption


@pytest.mark.slow  # the module's two CNNs train once, about 5 s
def test_greyscale_non_square(grey, tmp_path):
    model, files = grey
    out = tmp_path / "grey"

    def no_detector():
        raise AssertionError("the detector must not be built for a greyscale model")

    summary = run_pareto(out, images=files, config=TINY, model=str(model), model_options=OPTIONS,
                         progress=False, detector=no_detector)
    assert "RGB" in summary["detector_skipped"] and "detector" not in summary
    assert summary["search"]["algorithm"].endswith("(x, y, v)")
    _check_fronts(model, out, summary, (24, 32, 1))
    front = np.load(next((out / "images").iterdir()))
    assert front["pixels"].shape[1] == 3  # (x, y, v)


@pytest.mark.slow  # the module's two CNNs train once, about 5 s
def test_cli_on_a_k_class_model(rgb, grey, tmp_path, capsys):
    model, files, _ = rgb
    out = tmp_path / "cli"
    # A target the image is not predicted as (an image of the target class is skipped).
    target = str(int(ort_probs(model, np.asarray(Image.open(files[0]))[None])[0].argmin()))
    assert main(["pareto", str(files[0]), "--out", str(out), "--model", str(model), *CLI_MODEL,
                 "--pop", "12", "--gens", "4", "--no-detector", "--no-progress",
                 "--target", target]) == 0
    rows = csv_dicts(out / "front.csv")
    assert rows and tuple(rows[0]) == (*FRONT_COLUMNS, "attacked_class")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == target and summary["images"][0]["goal"] == "targeted"
    # Greyscale without --no-detector: the detector is skipped with a note, not calibrated.
    gmodel, gfiles = grey
    assert main(["pareto", str(gfiles[0]), "--out", str(tmp_path / "g"), "--model", str(gmodel),
                 *CLI_MODEL, "--pop", "12", "--gens", "4", "--no-progress"]) == 0
    assert "detector was not run" in capsys.readouterr().out


@pytest.mark.slow  # the module's two CNNs train once, about 5 s
def test_cli_errors(rgb, tmp_path, capsys):
    model, files, dataset = rgb
    common = ["--out", str(tmp_path / "o"), "--model", str(model), *CLI_MODEL, "--pop", "12",
              "--gens", "4", "--no-detector", "--no-progress"]

    def fails(*args: str) -> str:
        assert main(["pareto", *args, *common]) == 2
        return capsys.readouterr().err

    assert "--target 'seven' is not a class" in fails(str(files[0]), "--target", "seven")
    assert "--target '12' is not a class" in fails(str(files[0]), "--target", "12")
    assert "--target 'cat' is not a class" in fails("--dataset", str(dataset), "--target", "cat")
    assert "--classes must name the model's 10 classes" in fails(str(files[0]), "--classes", "a,b")
    # A binary dataset for a 10-class model.
    binary = tmp_path / "binary"
    for label in ("mitosis", "normal"):
        (binary / label).mkdir(parents=True)
        Image.open(files[0]).save(binary / label / "a.png")
    err = fails("--dataset", str(binary))
    assert "--dataset" in err and "10 class probabilities" in err and "2 class folders" in err
    # The same network read as binary (--positive-index): --target is refused, and so is a
    # class-folder dataset.
    common += ["--positive-index", "3"]
    assert "--target and --classes are for K-class models" in fails(str(files[0]), "--target", "3")
    err = fails("--dataset", str(dataset))
    assert "--dataset" in err and "binary dataset" in err


def test_binary_front_saved_without_flags_still_loads(tmp_path):
    """Fronts saved before K-class support lack the flags: they load, and the threshold rule
    gives them, as the budget curve always judged binary fronts."""
    path = tmp_path / "old.npz"
    score = np.array([0.9, 0.45, 0.02])
    old = {"name": np.array("a.png"), "goal": np.array("decrease"),
           "original_score": np.array(0.97), "seconds": np.array(1.0),
           "pixels": np.zeros((3, 5), np.int64), "score": score, "h": np.array([0.1, 0.2, 0.3]),
           "evaluated_score": score, "evaluated_h": np.array([0.1, 0.2, 0.3])}
    np.savez(path, **old)
    front = load_front(path, "a.png", "decrease")
    assert front is not None and front.success is None and front.goal_class == -1
    success, strong = front_flags(front, ParetoConfig())
    assert success.tolist() == [False, True, True] and strong.tolist() == [False, False, True]
    # Saved again, the flags travel with it; a front of another goal class is searched again.
    flagged = ImageFront("a.png", "untargeted", 0.6, np.zeros((1, 5), np.int64), np.array([0.4]),
                         np.array([0.1]), np.array([0.4]), np.array([0.1]), 0.0,
                         np.array([True]), np.array([False]), np.array([2]), 7)
    save_front(tmp_path / "new.npz", flagged)
    back = load_front(tmp_path / "new.npz", "a.png", "untargeted", 7)
    assert back.success.tolist() == [True] and back.predicted.tolist() == [2]
    assert load_front(tmp_path / "new.npz", "a.png", "untargeted", 3) is None
