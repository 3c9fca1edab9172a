"""Issue 26: the report and the terminal say only what the numbers say.

An unfinished RUN is named as such; narrative comparisons state their sample size and test and
say "too few to tell" below what it supports; every map states how it was made; skips are
counted by reason; a refused resume names each setting with both values; progress is plain
lines off a terminal; bad files are skipped by ``predict`` as by ``attack``; ``--limit`` takes
images across labels.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from onepixel.cli.main import main
from onepixel.confmap.result import ConfidenceMap, write_confmap_npz
from onepixel.datasets.images import LabeledImage, limit_items, load_readable_images
from onepixel.errors import ImageError, RunError
from onepixel.progress import progress_bar
from onepixel.report import analyze_run, format_main_tables, write_report
from onepixel.report.html import render_report
from onepixel.runs.evidence import TOO_FEW, compare_groups, compare_rate
from onepixel.runs.store import RunStore
from onepixel.runs.summary import format_summary, summarize
from test_analysis_runs import M2N, attack_row, he_like_image, skipped_row, small_run, write_png, write_run


def _interrupted(tmp_path: Path) -> Path:
    rows = [attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 30),
            attack_row("mitosis/b.png", "decrease", 0.97, 0.8, 20, 22, (255, 255, 0), 1),
            attack_row("normal/c.png", "increase", 0.02, 0.3, 30, 32, (255, 255, 0), 12)]
    return write_run(tmp_path / "run", rows, None, config={"planned": 4})


def test_an_interrupted_run_says_unfinished_in_the_report_headline_and_in_analyze(tmp_path, capsys):
    run = _interrupted(tmp_path)
    assert main(["analyze", str(run), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "UNFINISHED: 3 of 4 planned images done" in out
    assert f"onepixel attack /nonexistent/dataset --out {run}" in out
    text = render_report(analyze_run(run, figures=False))
    header = text[text.index("<header>"):text.index("</header>")]
    assert "(unfinished)" in header and "UNFINISHED: 3 of 4 planned images done" in header
    summary = summarize([], planned=4)
    assert summary["unfinished"] and format_summary(summary).startswith("UNFINISHED: 0 of 4")


def test_a_finished_or_unplanned_run_claims_nothing(tmp_path):
    run, _ = small_run(tmp_path, with_dataset=False)
    assert "UNFINISHED" not in format_main_tables(analyze_run(run, figures=False))
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "planned": 9}))
    assert "UNFINISHED" not in format_main_tables(analyze_run(run, figures=False))


def test_near_identical_attacks_are_too_few_to_tell(tmp_path):
    """The demo's case: 5 pure-yellow attacks whose h barely differ cannot show that larger
    colour differences work better or worse."""
    dataset = tmp_path / "dataset"
    rows = []
    for i, (after, x) in enumerate([(0.2, 30), (0.25, 32), (0.3, 34), (0.22, 36), (0.28, 38)]):
        name = f"mitosis/m{i}.png"
        write_png(dataset / name, he_like_image(7))  # one image: h differs only by position
        rows.append(attack_row(name, "decrease", 0.98, after, x, 31, (255, 255, 0), 20))
    result = analyze_run(write_run(tmp_path / "run", rows, dataset), figures=False)
    reading = result.table("chromatic").reading
    assert TOO_FEW in reading and "N = " in reading and "Mann-Whitney U p" in reading
    assert "were less effective" not in reading and "were more effective" not in reading
    assert "lowered the score" in reading
    # The same guard says what a large clear sample supports.
    apart = compare_groups(np.arange(30.0), np.arange(30.0) + 100)
    assert apart.claim("differ").startswith("differ (N = 30 vs 30")
    assert compare_rate(60, 100, 0.25).supported and not compare_rate(3, 4, 0.25).supported


@pytest.mark.slow
def test_every_map_in_the_report_states_its_step_and_engine(tmp_path):
    run, _ = small_run(tmp_path, with_dataset=False)
    lo = np.full((64, 64), 0.9)
    lo[::2, ::2] = 0.4
    for name, method, step in (("fastmap", "fast", 85), ("brutemap", "brute", 51)):
        cm = ConfidenceMap(lo, np.full((64, 64), 0.99), (lo + 0.99) / 2, original_score=0.98, step=step,
                           evaluations=4096 * 64, model="max-mitosis", method=method)
        folder = run / "confmaps" / name
        folder.mkdir(parents=True)
        write_confmap_npz(cm, folder / "confmap.npz", metadata={"defence": "none", "image": "mitosis/m0.png"})
    text = write_report(run).read_text(encoding="utf-8")
    section = text[text.index('<section id="confmaps">'):]
    section = section[:section.index("</section>")]
    assert "Brute-force maps" not in section
    # Each map twice: in the table's reading and in its figure's caption.
    assert section.count("step 85: 4 levels per channel, 64 colours; exact incremental") == 2
    assert section.count("step 51: 6 levels per channel, 216 colours; brute force") == 2
    assert "model max-mitosis; defence none" in section


def test_skip_reasons_are_counted_separately():
    rows = [attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 30),
            skipped_row("mitosis/b.png", "decrease", 0.85)]
    for name, error in (("mitosis/big.png", "mitosis/big.png: image is 128x128 (WxH) but the model takes "
                         "64x64; crop or tile it first (images are never resized)"),
                        ("mitosis/cut.png", "cannot read image mitosis/cut.png: image file is truncated")):
        row = skipped_row(name, "decrease", 0.5)
        row.update(skip_reason=f"unreadable image: {error}", original_score="")
        rows.append(row)
    summary = summarize(rows)
    assert summary["directions"][M2N]["skip_reasons"] == {"ambiguous": 1, "wrong size": 1, "unreadable": 1}
    assert "1 attacked, 3 skipped (1 ambiguous, 1 wrong size, 1 unreadable)" in format_summary(summary)


def test_a_refused_resume_names_each_setting_with_both_values(tmp_path):
    config = {"dataset": "/d", "positive_label": "mitosis", "negative_label": "normal",
              "model": {"sha256": "abc"}, "attack": {"maxiter": 20, "population": 200}, "planned": 4}
    RunStore(tmp_path / "run").open(config)
    other = {**config, "attack": {"maxiter": 10, "population": 200}, "negative_label": "benign"}
    with pytest.raises(RunError) as info:
        RunStore(tmp_path / "run").open(other)
    assert "attack.maxiter: 10 here, 20 in RUN" in str(info.value)
    assert 'negative_label: "benign" here, "normal" in RUN' in str(info.value)
    assert "population" not in str(info.value)


def test_limit_takes_images_across_labels():
    items = [LabeledImage(Path(f"mitosis/{i}.png"), "mitosis", True) for i in range(5)] + \
            [LabeledImage(Path(f"normal/{i}.png"), "normal", False) for i in range(2)]
    assert [it.label for it in limit_items(items, 2)] == ["mitosis", "normal"]
    five = limit_items(items, 5)
    assert sum(it.label == "normal" for it in five) == 2 and five == sorted(five, key=items.index)
    assert limit_items(items, None) == items and len(limit_items(items, 100)) == 7


def test_progress_is_plain_lines_off_a_terminal():
    out = io.StringIO()
    bar = progress_bar(total=50, desc="attacking", unit="img", file=out)
    time.sleep(0.05)
    bar.update(10)  # the first batch: the rate counts from here
    for _ in range(40):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) <= 3 and "50/50" in lines[-1]


def test_predict_skips_bad_files_with_a_reason(tmp_path, caplog):
    good = tmp_path / "good.png"
    write_png(good, he_like_image(1))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:100])
    write_png(tmp_path / "big.png", np.zeros((128, 128, 3), np.uint8))
    kept, images, skipped = load_readable_images([good, tmp_path / "cut.png", tmp_path / "big.png",
                                                  tmp_path / "missing.png"], (64, 64, 3))
    assert kept == [good] and images.shape == (1, 64, 64, 3)
    assert [p.name for p, _ in skipped] == ["cut.png", "big.png", "missing.png"]
    assert "but the model takes 64x64" in skipped[1][1] and "not found" in skipped[2][1]
    with pytest.raises(ImageError, match="no readable image"):
        load_readable_images([tmp_path / "missing.png"], (64, 64, 3))


@pytest.mark.slow
def test_confmap_of_a_missing_image_leaves_no_output_folder(tmp_path, max_model_path, capsys):
    out = tmp_path / "DIR"
    assert main(["confmap", str(tmp_path / "missing.png"), "--out", str(out)]) != 0
    assert not out.exists()
    assert "missing.png" in capsys.readouterr().err


def test_figures_count_in_integers_keep_whole_names_and_frame_images(tmp_path, monkeypatch):
    from onepixel.analysis import compute_analysis, load_run
    from onepixel.report import figures

    drawn = {}

    def keep(fig, folder, name):
        drawn[name] = [(ax, [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]],
                        [s.get_visible() for s in ax.spines.values()]) for ax in fig.axes]
        return f"figures/{name}.png"

    monkeypatch.setattr(figures, "_save", keep)
    rows = [attack_row("mitosis/m0.png", "decrease", 0.99, 0.2, 10, 12, (255, 255, 0), 2),
            attack_row("mitosis/m1.png", "decrease", 0.97, 0.9, 20, 22, (255, 255, 0), 1)]
    dataset = tmp_path / "dataset"
    for r in rows:
        write_png(dataset / r["image"], he_like_image(3))
    analysis = compute_analysis(load_run(write_run(tmp_path / "run", rows, dataset)))
    figures.convergence_plot(analysis, tmp_path)
    figures.example_panels(analysis, analysis.direction(M2N), tmp_path)
    ticks = drawn["convergence"][0][1]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks  # 2 generations: no 0.2 ticks
    example = next(name for name in drawn if name.startswith("examples"))
    assert all(all(spines) for _, _, spines in drawn[example])  # every image panel has 4 edges
    name = "train/mitosis/patient-0042/tile_000123.png"
    assert figures.short_name(name, 32) == "…/patient-0042/tile_000123.png"  # cut at a "/"
    assert figures.short_name(name, 28) == "…/tile_000123.png"
