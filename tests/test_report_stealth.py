"""The report's colour budget (chromatic section) and "How visible must the pixel be?" (from a
real ``onepixel pareto`` folder): numbers recomputed here from attacks.csv, the images,
front.csv, budget_curve.csv and summary.json with csv/json and a few lines of numpy."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pymoo")

from independent import csv_dicts, own_h, report_section, table_cells
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.cli.main import main
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image
from onepixel.detection.calibration import image_statistic
from onepixel.errors import RunError
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.pareto import runner as stealth_runner
from onepixel.pareto.config import ParetoConfig
from onepixel.report import write_report

BUDGET = 0.2
DETECTOR_THRESHOLD = 0.45
GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d")
BUDGET_LINE = (0xE3, 0xA8, 0x00)  # the chromatic figure's budget line colour


@pytest.fixture(scope="module")
def stealth_run(tmp_path_factory, true_png, false_png, max_model_path):
    """A real budget campaign RUN with a real pareto folder in RUN/pareto, seeded from a real
    unconstrained campaign that flips the mitosis patch (so the front has flipping points)."""
    base = tmp_path_factory.mktemp("report-stealth")
    data = base / "data"
    (data / "mitosis").mkdir(parents=True)
    (data / "normal").mkdir()
    # The most vulnerable of true.png's rotations/flips; DE (40 x 10) flips it strongly.
    Image.fromarray(dihedral_variants(load_image(true_png))["flip-rot270"]).save(
        data / "mitosis" / "flip-rot270.png")
    shutil.copy(false_png, data / "normal" / "false.png")
    free, run = base / "free", base / "run"
    for out, attack in ((free, AttackConfig(de=DEConfig(population=40, maxiter=10))),
                        (run, AttackConfig(de=DEConfig(population=20, maxiter=4),
                                           max_colour_diff=BUDGET))):
        run_campaign(CampaignConfig(dataset=data, out=out, model_options=ModelOptions(device="cpu"),
                                    attack=attack, progress=False))
    detector = stealth_runner.Detector(
        lambda images: image_statistic(images, "h") > DETECTOR_THRESHOLD,
        {"statistic": "h", "threshold": DETECTOR_THRESHOLD})
    stealth_runner.run_pareto(run / "pareto", dataset=data,
                              config=ParetoConfig(population=12, generations=4),
                              model=str(max_model_path), detector=detector, progress=False,
                              campaign=free, campaign_seed=True)
    return data, run


def _text(section: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", section))


def _g(value, spec: str) -> str:
    """A cell as the report writes it: a dash for null."""
    return "–" if value is None else format(float(value), spec)


def _budget_line_pixels(png: bytes) -> int:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(rgb - BUDGET_LINE).sum(axis=2) < 30).sum())


def _chromatic_png(text: str) -> bytes:
    block = text[text.index('id="figure-chromatic"'):]
    return base64.b64decode(re.search(r'data:image/png;base64,([^"]+)', block).group(1))


def _flips(goal: str, score: float) -> bool:
    return score < 0.5 if goal == "decrease" else score > 0.5


@pytest.mark.slow
def test_stealth_section_numbers_recomputed_from_files(stealth_run):
    _, run = stealth_run
    folder = run / "pareto"
    text = write_report(run).read_text(encoding="utf-8")  # RUN/pareto found without --pareto
    section = report_section(text, "stealth")
    assert "How visible must the pixel be?" in section and 'href="#stealth"' in text
    summary = json.loads((folder / "summary.json").read_text())

    curve = csv_dicts(folder / "budget_curve.csv")
    assert len(curve) == 20
    assert table_cells(section, "stealth_budget_curve") == [
        [f"{float(r['budget']):.2f}", r["images"], r["success"],
         f"{100 * float(r['success_rate']):.1f}", r["strong"], f"{100 * float(r['strong_rate']):.1f}"]
        for r in curve]

    rows = table_cells(section, "stealth_images")
    assert [r[0] for r in rows] == [im["image"] for im in summary["images"]]
    for cells, im in zip(rows, summary["images"], strict=True):
        assert cells == [im["image"], im["goal"], _g(im["original_score"], ".4g"),
                         _g(im["best_score"], ".4g"), _g(im["best_h"], ".3f"),
                         _g(im["lowest_flip_h"], ".3f"), _g(im["lowest_strong_flip_h"], ".3f"),
                         str(im["front_size"])]

    # The lowest flipping h over all images, recomputed from front.csv: the seeded campaign
    # pixel flips the mitosis patch, so there is one.
    goals = {im["image"]: im["goal"] for im in summary["images"]}
    flipping = [(float(r["h"]), r["image"]) for r in csv_dicts(folder / "front.csv")
                if _flips(goals[r["image"]], float(r["score"]))]
    assert flipping, "the campaign's pixel (score about 0.03) is on the seeded front"
    low, name = min(flipping)
    assert f"Lowest h at which a pixel flips an image: {low:.3f} ({name})" in _text(section)

    det = summary["detector"]
    assert table_cells(section, "stealth_detector") == [
        ["Successful front points", str(det["successful_points"]),
         _g(None if det["successful_points_flagged"] is None else
            100 * det["successful_points_flagged"], ".1f")],
        ["Stealthiest successful point per image", str(det["images_with_success"]),
         _g(None if det["stealthiest_success_flagged"] is None else
            100 * det["stealthiest_success_flagged"], ".1f")],
        ["Original images", str(len(summary["images"])), f"{100 * det['originals_flagged']:.1f}"]]

    entries = summary["campaign"]["images"]
    assert entries
    cells = {r[0]: r for r in table_cells(section, "stealth_campaign")}
    for e in entries:
        goal = goals[e["image"]]
        further = (e["campaign_score"] - e["front_best_score"] if goal == "decrease"
                   else e["front_best_score"] - e["campaign_score"])
        assert cells[e["image"]] == [e["image"], goal, f"{e['campaign_score']:.4g}",
                                     f"{e['campaign_h']:.3f}", f"{e['front_best_score']:.4g}",
                                     f"{e['front_best_h']:.3f}", f"{further:.4f}"]
        assert further >= -1e-6  # seeded: the front holds the campaign's pixel
    assert 'id="figure-stealth_budget_curve"' in section
    for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', section):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_chromatic_section_states_the_budget(stealth_run):
    data, run = stealth_run
    text = write_report(run, run / "budget.html").read_text(encoding="utf-8")
    chromatic = _text(report_section(text, "chromatic"))
    hs = []
    for r in csv_dicts(run / "attacks.csv"):
        image = np.asarray(Image.open(data / r["image"]).convert("RGB"))
        for group in r["pixels"].split(";"):
            x, y, *rgb = (int(v) for v in group.split(","))
            hs.append(own_h(image, x, y, rgb))
    assert 0 < max(hs) <= BUDGET
    near = sum(h >= BUDGET - 0.01 for h in hs)
    assert f"--max-colour-diff {BUDGET:g}" in chromatic
    assert f"every attack pixel has h <= {BUDGET:g} by construction" in chromatic
    assert (f"Largest h observed among the {len(hs)} attack pixels: {max(hs):.4f}; {near} "
            f"({100 * near / len(hs):.1f}%) sit at the budget") in chromatic
    assert f"colour budget H = {BUDGET:g}" in chromatic  # the figure's caption
    assert _budget_line_pixels(_chromatic_png(text)) > 100


@pytest.mark.slow
def test_without_budget_only_the_note_and_line_go(stealth_run, tmp_path):
    """The same RUN without a budget in config.json: no note, no line, the rest identical."""
    _, run = stealth_run
    with_budget, without = tmp_path / "with" / "run", tmp_path / "without" / "run"
    for out in (with_budget, without):
        shutil.copytree(run, out, ignore=shutil.ignore_patterns("pareto", "analysis", "*.html"))
    config = json.loads((without / "config.json").read_text())
    config["attack"]["max_colour_diff"] = None
    (without / "config.json").write_text(json.dumps(config, indent=1))
    a = write_report(with_budget).read_text(encoding="utf-8")
    b = write_report(without).read_text(encoding="utf-8")
    assert 'id="stealth"' not in a + b and "Colour budget" not in b and "colour budget" not in b
    assert _budget_line_pixels(_chromatic_png(b)) == 0

    def strip(text: str, folder) -> str:
        text = GENERATED.sub("Generated X", text).replace(str(folder.parent), "BASE")
        text = re.sub(r'<p class="note">Colour budget:.*?</p>\n', "", text)
        return re.sub(r'<div class="block" id="figure-chromatic">.*?</div>', "", text, flags=re.S)

    assert "Colour budget:" in a
    assert strip(a, with_budget) == strip(b, without)


@pytest.mark.slow
def test_pareto_flag_fallbacks_and_errors(stealth_run, tmp_path, capsys):
    _, run = stealth_run
    plain = tmp_path / "plain"
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("pareto", "*.html"))
    assert 'id="stealth"' not in write_report(plain).read_text(encoding="utf-8")
    # Without budget_curve.csv (one image writes none) the curve comes from summary.json.
    folder = tmp_path / "pareto"
    shutil.copytree(run / "pareto", folder)
    (folder / "budget_curve.csv").unlink()
    out = tmp_path / "r.html"
    assert main(["report", str(plain), "--out", str(out), "--pareto", str(folder)]) == 0
    section = report_section(out.read_text(encoding="utf-8"), "stealth")
    summary = json.loads((folder / "summary.json").read_text())
    assert table_cells(section, "stealth_budget_curve") == [
        [f"{float(r['budget']):.2f}", str(r["images"]), str(r["success"]),
         f"{100 * float(r['success_rate']):.1f}", str(r["strong"]),
         f"{100 * float(r['strong_rate']):.1f}"] for r in summary["budget_curve"]]
    assert f"{folder / 'summary.json'}" in _text(section)

    capsys.readouterr()
    assert main(["report", str(plain), "--out", str(out), "--pareto", str(tmp_path)]) != 0
    assert f"{tmp_path / 'summary.json'}" in capsys.readouterr().err
    (folder / "front.csv").write_text("image,x,y\nfoo,1,2\n")
    with pytest.raises(RunError, match="front.csv"):
        write_report(plain, out, pareto=folder)
    (folder / "summary.json").write_text('{"images": [{"image": "a"}]}')
    with pytest.raises(RunError, match="summary.json"):
        write_report(plain, out, pareto=folder)
