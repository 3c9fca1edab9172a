"""The demo: dataset building and the whole pipeline on real assets (small DE settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onepixel.attack import AttackConfig
from onepixel.datasets.demo import build_demo_dataset
from onepixel.datasets.images import load_image, scan_dataset
from onepixel.demo import DemoConfig, run_demo
from onepixel.errors import AssetError
from onepixel.models import ModelOptions, load_classifier
from onepixel.optimize.de import DEConfig
from onepixel.runs.reader import AttackTable
from onepixel.runs.schema import ATTACK_COLUMNS, AttackResult
from onepixel.runs.summary import headlines, summarize


@pytest.fixture(scope="module")
def classifier(max_model_path):
    return load_classifier("max-mitosis", ModelOptions(device="cpu"))


@pytest.mark.slow
def test_demo_dataset_is_real_deterministic_and_unambiguous(tmp_path, classifier):
    try:
        from onepixel import assets

        for name in assets.HE_IMAGES:
            assets.ensure(name, download=False)
    except AssetError:
        pytest.skip("needs the shared H&E images (ONEPIXEL_ASSETS)")
    a = build_demo_dataset(tmp_path / "a", classifier, n_normal=12)
    b = build_demo_dataset(tmp_path / "b", classifier, n_normal=12)
    assert (a.n_mitosis, a.n_normal) == (8, 12)
    ds, ds_b = scan_dataset(a.root), scan_dataset(b.root)
    names = [ds.relative_name(i) for i in ds.items]
    assert names == [ds_b.relative_name(i) for i in ds_b.items]
    images = np.stack([load_image(i.path) for i in ds.items])
    scores = classifier.scores(images)
    positive = np.array([i.positive for i in ds.items])
    assert positive.sum() == 8 and np.all(scores[positive] > 0.96)
    assert np.all(scores[~positive] <= 0.1)
    meta = json.loads((a.root / "dataset.json").read_text())
    assert len(meta["tiles"]) == 11 and "false.png" in meta["normal"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, max_model_path):
    cfg = DemoConfig(out=tmp_path / "demo", model_options=ModelOptions(device="cpu"), n_normal=4,
                     confmap_step=255, progress=False,
                     attack=AttackConfig(de=DEConfig(population=20, maxiter=8)))
    result = run_demo(cfg)
    assert result.report.exists() and result.report.stat().st_size > 10_000
    assert (result.run / "analysis" / "tables.md").exists()
    maps = list((result.run / "confmaps").glob("*/confmap.npz"))
    assert 1 <= len(maps) <= 2
    assert result.summary["directions"]["mitosis-to-normal"]["attacked"] == 8
    assert any("crossed 0.5" in h for h in result.headlines)
    stamps = [p.stat().st_mtime_ns for p in maps]
    again = run_demo(cfg)  # reuses the dataset, the finished run and its maps
    assert again.summary["directions"] == result.summary["directions"]
    assert again.summary["evaluations_this_session"] == 0
    assert [p.stat().st_mtime_ns for p in maps] == stamps


def test_headlines_from_rows():
    def row(image, direction, goal, status, before, after=None, xy=(0, 0), rgb=(0, 0, 0), early=False):
        attacked = status == "attacked"
        return AttackResult(image=image, label="x", direction=direction, goal=goal, status=status,
                            skip_reason="" if attacked else "ambiguous", original_score=before,
                            attacked_score=after, x=xy[0] if attacked else None,
                            y=xy[1] if attacked else None, r=rgb[0] if attacked else None,
                            g=rgb[1] if attacked else None, b=rgb[2] if attacked else None,
                            nit=1 if early else 5, nfev=200, early_converged=early,
                            success=attacked and after < 0.5)
    rows = [row("a", "m-to-n", "decrease", "attacked", 0.99, 0.1, (2, 4), (255, 255, 0)),
            row("b", "m-to-n", "decrease", "attacked", 0.98, 0.9, (3, 4), (1, 2, 3), early=True),
            row("c", "n-to-m", "increase", "skipped", 0.5)]
    table = AttackTable.from_rows(dict(zip(ATTACK_COLUMNS, r.csv_row(), strict=True)) for r in rows)
    lines = headlines(summarize(table), table)
    assert lines[0] == "m-to-n: 1 of 2 attacks crossed 0.5 (50%), 1 converged early"
    assert "1 of 1" in lines[1] and "(100%" in lines[1]
    assert "(255, 255, 0)" in lines[2]
