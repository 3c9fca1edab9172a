"""The report's "How strong was the attack?" (from a real audit) and "Defences" (from a real
robustness run) sections: numbers recomputed here from audit.csv, attacks.csv, robustness.csv."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil

import numpy as np
import pytest

from independent import csv_dicts, report_section, table_cells
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.audit import AuditConfig, audit_run
from onepixel.cli.main import main
from onepixel.errors import RunError
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.report import audit_section as report_extra
from onepixel.report import robustness_section as report_robustness
from onepixel.report import write_report
from onepixel.robustness import RobustnessConfig
from onepixel.robustness import runner as robustness_runner
from onepixel.scoring.policy import load_confmap_classifier, load_scoring_classifier
from run_files import write_patch_dataset

TINY = AttackConfig(de=DEConfig(population=20, maxiter=4))
# The pure yellow pixel that flips true.png in the demo audit, (26, 28), under the 8 rotations and
# flips of the 64x64 patch: the coarse scan looks only here (keeps the test short).
FLIP_PIXELS = tuple(sorted({(a, b) for a, b in ((26, 28), (28, 26), (37, 28), (28, 37), (26, 35),
                                                (35, 26), (37, 35), (35, 37))}))


@pytest.fixture(scope="module")
def audited(tmp_path_factory, true_png, false_png, max_model_path):
    """A real RUN (10 patches, tiny DE) and a real coarse audit of it in RUN/audit."""
    base = tmp_path_factory.mktemp("report-audit")
    data = write_patch_dataset(base / "data", true_png, false_png)
    run = base / "run"
    run_campaign(CampaignConfig(dataset=data, out=run, model_options=ModelOptions(device="cpu"),
                                attack=TINY, progress=False))
    classifier = load_confmap_classifier("max-mitosis", ModelOptions(device="cpu"))
    audit_run(run, run / "audit", AuditConfig(step=255, top=1, rounds=1, pixels=FLIP_PIXELS,
                                              progress=False), classifier=classifier)
    return data, run


def _energy_gap(goal: str, de: float, audit: float) -> float:
    return de - audit if goal == "decrease" else audit - de


@pytest.mark.slow
def test_audit_section_numbers_recomputed_from_files(audited):
    _, run = audited
    path = write_report(run)  # RUN/audit is found without --audit
    text = path.read_text(encoding="utf-8")
    section = report_section(text, "audit")
    assert "How strong was the attack?" in section and 'href="#audit"' in text
    audit = csv_dicts(run / "audit" / "audit.csv")
    attacks = {r["image"]: r for r in csv_dicts(run / "attacks.csv")}
    assert audit and {r["image"] for r in audit} <= set(attacks)
    rows = {r[0]: r for r in table_cells(section, "audit_strength")}
    directions = sorted({attacks[r["image"]]["direction"] for r in audit})
    assert sorted(rows) == directions
    for direction in directions:
        group = [r for r in audit if attacks[r["image"]]["direction"] == direction]
        n = len(group)
        de_ok = sum(r["de_success"] == "1" for r in group)
        vul = sum(r["status"] == "vulnerable" for r in group)
        beyond = sum(r["status"] == "vulnerable" and r["de_success"] == "0" for r in group)
        early = [r for r in group if r["de_early_converged"] == "1"]
        gaps = [_energy_gap(r["goal"], float(r["de_score"]), float(r["best_score"])) for r in group]
        de_q = np.median([int(attacks[r["image"]]["nfev"]) for r in group])
        au_q = np.median([int(r["queries"]) for r in group])
        expected = [direction, str(n), str(de_ok), f"{100 * de_ok / n:.1f}", str(vul), f"{100 * vul / n:.1f}",
                    str(beyond), str(len(early)), str(sum(r["status"] == "vulnerable" for r in early)),
                    f"{np.median([float(r['de_score']) for r in group]):.4f}",
                    f"{np.median([float(r['best_score']) for r in group]):.4f}",
                    f"{np.median(gaps):.4f}", f"{max(gaps):.4f}", f"{de_q:,.0f}", f"{au_q:,.0f}"]
        assert rows[direction] == expected
        # The audit re-scores DE's own pixel, so it is never behind DE.
        assert min(gaps) >= -1e-6
        assert f"{direction}: DE flipped {de_ok} of {n} audited images" in section

    early_rows = table_cells(section, "audit_early_converged")
    early = [r for r in audit if r["de_early_converged"] == "1"]
    assert sorted(r[0] for r in early_rows) == sorted(r["image"] for r in early)
    for cells in early_rows:
        r = next(a for a in audit if a["image"] == cells[0])
        assert cells[3] == f"{float(r['best_score']):.4f}" and cells[4] == r["status"]
        assert cells[5] == f"({r['x']}, {r['y']})"
    # The flipped early-converged images are drawn exactly when there are some.
    flips = [r for r in early if r["status"] == "vulnerable"]
    assert ('id="figure-audit_flips"' in section) == bool(flips)
    assert 'id="figure-audit_scores"' in section
    for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', section):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_flip_panels_draw_the_audits_pixel(audited):
    """The figure of early-converged vulnerable images, on a joined row whatever DE did."""
    data, run = audited
    rows = report_extra.read_audit_rows(run / "audit")
    vulnerable = [r for r in rows if r.status == "vulnerable"]
    assert vulnerable, "the yellow pixel at (26, 28) flips some rotation of true.png"
    joined = [report_extra._Audited(dataclasses.replace(r, de_early_converged=True), "d", 1)
              for r in vulnerable]
    fig = report_extra.flip_panels(joined, data)
    assert fig is not None and fig.png[:8] == b"\x89PNG\r\n\x1a\n"
    first = max(vulnerable, key=lambda r: report_extra.gap(r.goal, r.de_score, r.best_score))
    assert f"RGB {first.rgb} at (x={first.x}, y={first.y})" in fig.reading
    assert report_extra.flip_panels(joined, None) is None  # no dataset: not drawn


@pytest.mark.slow
def test_report_without_audit_is_unchanged_and_defences_section(audited, tmp_path, max_model_path,
                                                                capsys):
    data, run = audited
    plain = tmp_path / "plain"
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("audit", "analysis", "report.html"))
    text = write_report(plain).read_text(encoding="utf-8")
    assert 'id="audit"' not in text and 'id="defences"' not in text

    # A real tiny robustness run on the same patches.
    rob = tmp_path / "rob"
    robustness_runner.run_robustness(
        RobustnessConfig(dataset=data, out=rob, defences=("none", "median3"),
                         model_options=ModelOptions(device="cpu"), attack=TINY, progress=False),
        classifier=load_scoring_classifier("max-mitosis", ModelOptions(device="cpu")))
    assert report_robustness.ROBUSTNESS_CSV == robustness_runner.ROBUSTNESS_CSV
    assert report_robustness.ROBUSTNESS_PNG == robustness_runner.ROBUSTNESS_PNG
    out = tmp_path / "r.html"
    assert main(["report", str(plain), "--out", str(out), "--audit", str(run / "audit"),
                 "--robustness", str(rob)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.index('id="audit"') < text.index('id="defences"')
    section = report_section(text, "defences")
    cells = {r[0]: r for r in table_cells(section, "robustness")}
    for r in csv_dicts(rob / "robustness.csv"):
        row = cells[r["defence"]]
        assert row[1] == r["images"]
        assert row[2] == f"{float(r['clean_mean_abs_change']):.4f}"
        assert row[4] == f"{100 * float(r['label_agreement']):.1f}"
        assert row[7] == f"{100 * float(r['success_rate']):.1f}"
    png = base64.b64encode((rob / "robustness.png").read_bytes()).decode()
    assert png in section
    assert "Lowest attack success:" in section

    (rob / "robustness.csv").unlink()
    with pytest.raises(RunError, match="robustness.csv"):
        write_report(plain, tmp_path / "x.html", robustness=rob)
