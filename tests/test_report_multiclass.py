"""The analysis and report of multi-class RUNs: per-class success, the source x adversarial class
matrix, captions that name the goal, location heatmaps at the images' H x W, k pixels.

Real RUNs: a 10-class digits CNN (tests/digits_models.py, trained for one epoch so that a few
attacks succeed on a tiny budget), exported to ONNX and attacked untargeted and targeted with
``--pixels 3``; a 24x32 greyscale model through the CLI. Every count the report shows is
recomputed here from attacks.csv with the csv module, independently of onepixel's reader.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.analysis import attack_pixels, class_success
from onepixel.report import write_report
from test_analysis_runs import small_run

OPTIONS_ARGS = ["--device", "cpu", "--preprocess", "unit", "--layout", "nchw", "--output", "logit"]


# --------------------------------------------------------------------------- helpers


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "attacks.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _html_table(text: str, name: str) -> list[list[str]]:
    """Header and body cells of the report's table ``name``, as text."""
    m = re.search(rf'<div class="block" id="table-{re.escape(name)}">(.*?)</table>', text, re.S)
    assert m, f"no table {name} in the report"
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    cell = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in cell.findall(r)] for r in rows]


def _html_figure(text: str, name: str) -> tuple[Image.Image, str, tuple[int, int]]:
    """The report's figure ``name``: the decoded PNG, the block's text and its width/height attributes."""
    m = re.search(rf'<div class="block" id="figure-{re.escape(name)}">(.*?)</div>', text, re.S)
    assert m, f"no figure {name} in the report"
    block = m.group(1)
    data = re.search(r'src="data:image/png;base64,([^"]+)"', block).group(1)
    size = re.search(r'width="(\d+)" height="(\d+)"', block)
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    return image, html.unescape(re.sub(r"<[^>]+>", " ", block)), (int(size.group(1)), int(size.group(2)))


def _positions(pixels: str) -> set[tuple[int, int]]:
    return {(int(g.split(",")[0]), int(g.split(",")[1])) for g in pixels.split(";")}


def _expected_per_class(rows: list[dict[str, str]]) -> dict[str, tuple[int, int]]:
    """True class -> (attacked, succeeded), straight from attacks.csv."""
    out: dict[str, list[int]] = {}
    for r in rows:
        if r["status"] == "attacked":
            counts = out.setdefault(r["label"], [0, 0])
            counts[0] += 1
            counts[1] += r["success"] == "1"
    return {k: (a, s) for k, (a, s) in out.items()}


# --------------------------------------------------------------------------- pure functions


def test_attack_pixels_takes_every_pixel_and_the_last_at_a_shared_position():
    pixels = np.array(["1,2,10,20,30;3,4,0,0,0;1,2,255,255,0", "", "5,6,7,7,7"], dtype=object)
    x, y = np.array([1, 9, 5]), np.array([2, 8, 6])
    r, g, b = np.array([10, 1, 7]), np.array([20, 2, 7]), np.array([30, 3, 7])
    vectors, owner = attack_pixels(pixels, x, y, r, g, b)
    # (1, 2) was set twice in the first attack: the later colour is what the image got.
    assert vectors.tolist() == [[3, 4, 0, 0, 0], [1, 2, 255, 255, 0], [9, 8, 1, 2, 3], [5, 6, 7, 7, 7]]
    assert owner.tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="not x,y,r,g,b"):
        attack_pixels(np.array(["1,2,a,4,5"], dtype=object), x[:1], y[:1], r[:1], g[:1], b[:1])


def test_class_success_counts_per_source_and_target_in_model_order():
    src = np.array(["b", "a", "b", "b", "a", "c"])
    tgt = np.array(["other"] * 6)
    success = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    strong = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    before = np.array([0.9, 0.8, 0.7, 0.6, 1.0, 0.5])
    after = np.array([0.1, 0.7, 0.3, 0.5, 0.9, 0.2])
    out = class_success(src, tgt, success, strong, before, after, order=("c", "b"))
    assert [(c.source, c.attacked, c.success, c.strong) for c in out] == [
        ("c", 1, 1, 0), ("b", 3, 2, 1), ("a", 2, 0, 0)]  # "a" is not in the order: last
    assert out[1].success_percent == pytest.approx(200 / 3)
    # b: before 0.9, 0.7, 0.6; after 0.1, 0.3, 0.5
    assert out[1].mean_before == pytest.approx(2.2 / 3) and out[1].mean_after == pytest.approx(0.3)


@pytest.mark.slow
def test_binary_report_has_no_classes_section(tmp_path):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert 'id="classes"' not in text and "class_success" not in text
    assert '<span class="num">2.</span>Confidence scores' in text  # sections numbered as before


# --------------------------------------------------------------------------- real RUNs


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    from digits_models import train_and_export, write_image_folder

    root = tmp_path_factory.mktemp("digits-report")
    images, labels = train_and_export(root / "digits.onnx", (32, 32, 3), epochs=1)
    return root / "digits.onnx", write_image_folder(root / "ds", images, labels, per_class=3)


def _campaign(model: Path, dataset: Path, out: Path, pixels: int, target: str | None = None) -> Path:
    from onepixel.attack import AttackConfig
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import CampaignConfig
    from onepixel.models import ModelOptions
    from onepixel.optimize.de import DEConfig

    options = ModelOptions(device="cpu", preprocess="unit", layout="nchw", model_output="logit")
    run_campaign(CampaignConfig(dataset=dataset, out=out, model=str(model), model_options=options,
                                attack=AttackConfig(de=DEConfig(population=30, maxiter=10, seed=3),
                                                    pixels=pixels),
                                progress=False, target=target))
    return out


def _cli(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "onepixel.cli", "-q", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def untargeted(digits, tmp_path_factory):
    model, dataset = digits
    run = _campaign(model, dataset, tmp_path_factory.mktemp("unt") / "run", pixels=3)
    printed = _cli("analyze", run).stdout
    _cli("report", run)
    return run, printed, (run / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def targeted(digits, tmp_path_factory):
    model, dataset = digits
    run = _campaign(model, dataset, tmp_path_factory.mktemp("tgt") / "run", pixels=3, target="9")
    return run, write_report(run).read_text(encoding="utf-8")


@pytest.mark.slow
def test_untargeted_report_shows_per_class_success_recomputed_from_attacks_csv(untargeted):
    run, printed, text = untargeted
    rows = _rows(run)
    want = _expected_per_class(rows)
    table = _html_table(text, "class_success")
    assert table[0][:5] == ["True class", "Attacked", "Fooled", "Success %", "Strong"]
    got = {r[0]: (int(r[1]), int(r[2]), r[3]) for r in table[1:] if r[0] != "all classes"}
    assert set(got) == set(want)
    for cls, (attacked, won) in want.items():
        assert got[cls][:2] == (attacked, won), cls
        assert got[cls][2] == f"{100 * won / attacked:.1f}"
    total = next(r for r in table[1:] if r[0] == "all classes")
    assert (int(total[1]), int(total[2])) == (sum(a for a, _ in want.values()),
                                              sum(s for _, s in want.values()))
    # the goal is named, and the section sits right after the summary
    assert "probability of the true class" in text
    assert text.index('id="summary"') < text.index('id="classes"') < text.index('id="scores"')
    assert "Success per class" in printed and "Classes before and after the attack" in printed
    # cards: one overall success card, not one per class
    won, n = sum(s for _, s in want.values()), sum(a for a, _ in want.values())
    assert f"{won:,} of {n:,} attacked images fooled" in text
    assert text.count('class="card"') <= 4


@pytest.mark.slow
def test_untargeted_matrix_table_and_heatmap(untargeted):
    run, _, text = untargeted
    attacked = [r for r in _rows(run) if r["status"] == "attacked"]
    cells = Counter((r["label"], r["attacked_class"]) for r in attacked)
    table = _html_table(text, "class_matrix")
    header = table[0]
    assert header[:4] == ["True class", "Attacked", "Success", "Success %"]
    targets = [h[3:] for h in header[4:]]
    for row in table[1:]:
        for tgt, value in zip(targets, row[4:], strict=True):
            assert int(value) == cells.get((row[0], tgt), 0), (row[0], tgt)
    assert sum(int(r[1]) for r in table[1:]) == len(attacked)
    # the CSV behind it says the same, at full precision
    matrix = _csv(run / "analysis" / "tables" / "class_matrix.csv")
    assert [r[:3] for r in matrix[1:]] == [r[:3] for r in table[1:]]
    image, block, attrs = _html_figure(text, "class_matrix")
    assert image.format == "PNG" and image.size == attrs
    assert 400 <= image.width <= 1500 and 300 <= image.height <= 1500
    off = sum(n for (src, dst), n in cells.items() if src != dst)
    assert f"{off:,} of {len(attacked):,} attacked images" in block
    assert "off the diagonal: success" in block and "probability of the true class" in block


@pytest.mark.slow
def test_three_pixel_statistics_count_every_pixel(untargeted):
    run, _, text = untargeted
    attacked = [r for r in _rows(run) if r["status"] == "attacked"]
    assert all(len(r["pixels"].split(";")) == 3 for r in attacked)
    grid = np.zeros((32, 32), dtype=int)
    for r in attacked:
        for x, y in _positions(r["pixels"]):
            grid[y, x] += 1
    locations = _csv(run / "analysis" / "tables" / "locations_all-classes.csv")
    assert len(locations) == 1 + 32 and len(locations[0]) == 1 + 32  # H rows, W columns
    np.testing.assert_array_equal(np.array([[int(v) for v in r[1:]] for r in locations[1:]]), grid)
    both_even = sum(int(v) for y, r in enumerate(grid) for x, v in enumerate(r) if x % 2 == 0 == y % 2)
    periodicity = _html_table(text, "periodicity")
    row = next(r for r in periodicity[1:] if r[1] == "all attacks" and r[2] == "both coordinates even")
    assert row[0] == "all classes" and int(row[3]) == both_even
    assert "every pixel counts here" in text and "Pixels per attack" in text
    image, block, attrs = _html_figure(text, "heatmaps")
    assert image.size == attrs and "Drawn at the images' 32x32 pixels" in block
    # no per-class panels: one figure of examples, pooled over the classes
    assert text.count('id="figure-examples_') == 1


@pytest.mark.slow
def test_targeted_report_names_the_target(targeted):
    run, text = targeted
    rows = _rows(run)
    assert all(r["goal"] == "targeted" for r in rows)
    want = _expected_per_class(rows)
    assert "9" not in want  # images of the target class are not attacked
    table = _html_table(text, "class_success")
    assert table[0][:4] == ["True class", "Target", "Attacked", "Reached target"]
    got = {r[0]: (r[1], int(r[2]), int(r[3])) for r in table[1:] if r[0] != "all classes"}
    assert got == {cls: ("9", a, s) for cls, (a, s) in want.items()}
    for needle in ("probability of class 9", "Mean p(class 9) before", "outlined: column 9",
                   "Targeted success"):
        assert needle in text, needle
    reached = sum(r["attacked_class"] == "9" for r in rows if r["status"] == "attacked")
    assert reached == sum(s for _, s in want.values())  # success is reaching the target


@pytest.mark.slow
def test_greyscale_non_square_report(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    from digits_models import train_and_export, write_image_folder

    images, labels = train_and_export(tmp_path / "grey.onnx", (24, 32, 1), epochs=1)
    dataset = write_image_folder(tmp_path / "ds", images, labels, per_class=1)
    run = tmp_path / "run"
    _cli("attack", dataset, "--out", run, "--model", tmp_path / "grey.onnx", "--popsize", "30",
         "--maxiter", "10", "--pixels", "3", "--no-progress", *OPTIONS_ARGS)
    _cli("report", run)
    text = (run / "report.html").read_text(encoding="utf-8")
    attacked = [r for r in _rows(run) if r["status"] == "attacked"]
    locations = _csv(run / "analysis" / "tables" / "locations_all-classes.csv")
    assert len(locations) == 1 + 24 and len(locations[0]) == 1 + 32
    assert sum(int(v) for r in locations[1:] for v in r[1:]) == sum(len(_positions(r["pixels"]))
                                                                     for r in attacked)
    table = _html_table(text, "class_success")
    assert sum(int(r[1]) for r in table[1:] if r[0] != "all classes") == len(attacked)
    assert "32x24 pixels" in text
    for name in ("class_matrix", "heatmaps", "chromatic", "examples_all-classes"):
        image, _, attrs = _html_figure(text, name)
        assert image.size == attrs, name
    assert "Drawn at the images' 32x24 pixels" in _html_figure(text, "heatmaps")[1]
