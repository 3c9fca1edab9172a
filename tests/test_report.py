"""Figures and the self-contained HTML report (the browser checks are in test_report_browser.py)."""

from __future__ import annotations

import base64
import re
import sys

import pytest
from PIL import Image

from onepixel.analysis import compute_analysis, load_run
from onepixel.errors import OnepixelError
from onepixel.report import analyze_run, is_stale, load_analysis, write_report
from onepixel.report import html as report_html
from onepixel.report.figures import chromatic_scatter, pick_extremes
from test_analysis_runs import M2N, N2M, attack_row, small_run, write_confmap, write_run


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run_dir, _ = small_run(tmp_path_factory.mktemp("report"))
    write_confmap(run_dir, "m0", image="mitosis/m0.png", original_score=0.99)
    path = write_report(run_dir)
    return run_dir, path, path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_every_figure_is_a_readable_png(reported):
    run_dir, _, _ = reported
    result = load_analysis(run_dir)
    names = {f.name for f in result.figures}
    assert names == {"scores_boxplot", "convergence", "nit_histogram", f"examples_{M2N}", f"examples_{N2M}",
                     "colours", "chromatic", "heatmaps", "confmap_m0"}
    for fig in result.figures:
        with Image.open(result.figure_path(fig)) as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 200
        assert fig.title and fig.caption and fig.reading, fig.name


def test_report_is_one_self_contained_file(reported):
    _, path, text = reported
    assert path.name == "report.html"
    assert "<script" not in text.lower()
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if
                                                                      not r.startswith(("data:", "#"))]
    assert "url(" not in text and "@import" not in text
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 9
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "@media print" in text and "@page" in text


def test_report_summary_and_readings(reported):
    _, _, text = reported
    top = text[:text.index('id="scores"')]
    for needle in ("max-mitosis", "50.0% success", "33.3% success", "2 skipped", "Run settings",
                   "population 200"):
        assert needle in top
    for needle in ("expected under uniform placement", "pure yellow (255, 255, 0)", "moved the median score",
                   "stopped after the first generation", "Spearman", "the min map averages"):
        assert needle in text
    # Every table and figure block carries its reading.
    assert text.count('class="reading"') == text.count('class="block"')


@pytest.mark.slow
def test_report_reuses_a_fresh_analysis_and_redoes_a_stale_one(tmp_path, monkeypatch):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    assert is_stale(run_dir)
    write_report(run_dir)  # analyses first
    assert not is_stale(run_dir)

    def fail(*args, **kwargs):
        raise AssertionError("analysis should not run again")

    monkeypatch.setattr(report_html, "analyze_run", fail)
    text = write_report(run_dir).read_text()
    assert "not reachable" in text  # the dataset note of the analysis, shown in the report
    monkeypatch.undo()
    (run_dir / "history.csv").write_text((run_dir / "history.csv").read_text() + "mitosis/m0.png,41,0.01\n")
    assert is_stale(run_dir)
    write_report(run_dir)
    assert not is_stale(run_dir)


def test_report_redraws_an_analysis_made_without_figures(tmp_path):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    analyze_run(run_dir, figures=False)
    assert not is_stale(run_dir) and is_stale(run_dir, need_figures=True)
    text = write_report(run_dir).read_text()
    assert "<img" in text and "Figures were not drawn" not in text


def test_edge_case_reports_explain_what_is_missing(tmp_path):
    one = write_run(tmp_path / "one", [attack_row("mitosis/a.png", "decrease", 0.99, 0.2, 10, 12,
                                                  (255, 255, 0), 30)], dataset=None)
    text = write_report(one).read_text()
    assert N2M not in text and M2N in text
    assert "No adversarial-example figures" in text and "No confidence maps in this RUN" in text
    (one / "history.csv").unlink()
    text = write_report(one).read_text()
    assert "history.csv is missing" in text


def test_plots_subsample_but_say_so(tmp_path):
    run_dir, _ = small_run(tmp_path)
    analysis = compute_analysis(load_run(run_dir))
    info = chromatic_scatter(analysis, tmp_path / "figs", max_points=3)
    assert "3 of the 4 mitosis-to-normal attacks" in info.caption and "statistics use all" in info.caption
    most, least = pick_extremes(analysis.direction(M2N), k=3)
    assert most == [0, 1] and least == [3, 2]  # m0 best, m3 worst; split in halves when few


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    run_dir, _ = small_run(tmp_path, with_dataset=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(OnepixelError, match=r"pip install 'onepixel\[analysis\]'"):
        analyze_run(run_dir)
    assert not (run_dir / "analysis").exists()  # nothing half-written
    assert analyze_run(run_dir, figures=False).figures == ()
