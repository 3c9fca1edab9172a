"""`--method scan` on a real local Ray runtime (2 CPUs): the workers build the scan search as
they build DE and rs (on the model loaded for the exact confidence-map engine), and the rows
equal the local scan's: pixels, statuses and nfev exactly, scores within float32 tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.audit.method import ScanExecutor, ScanOptions
from onepixel.errors import ConfigError
from onepixel.models import ModelOptions
from onepixel.scaleout.config import ExecutorConfig
from run_files import attack_rows, history_rows, write_pair_dataset

ray = pytest.importorskip("ray")

from onepixel.scaleout import RayExecutor  # noqa: E402

#: The centre 8x8 block of the patches (where the cells are): 64 pixels x 27 colours (step 128)
#: + refinement within 3,000 queries per image.
BLOCK = tuple((x, y) for y in range(28, 36) for x in range(28, 36))
SCAN = AttackConfig(method="scan", max_queries=3000)
#: Exact columns: what the scan chose and what it spent. Scores: float32 tolerance (the actors
#: run torch on 1 thread, the driver on the machine's; sums may round differently).
EXACT = ("image", "label", "direction", "goal", "status", "skip_reason", "x", "y", "r", "g", "b",
         "nit", "nfev", "early_converged", "success", "strong_success", "original_class",
         "attacked_class", "pixels")
SCORES = ("original_score", "attacked_score")


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["image"] for r in got] == [r["image"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in EXACT} == {k: w[k] for k in EXACT}
        for k in SCORES:
            assert float(g[k]) == pytest.approx(float(w[k]), abs=1e-5), (g["image"], k)


@pytest.mark.slow
def test_scan_campaign_on_ray_equals_the_local_scan(tmp_path, true_png, false_png, max_model_path):
    data = write_pair_dataset(tmp_path / "data", true_png, false_png)
    cfg = CampaignConfig(dataset=data, out=tmp_path / "local", attack=SCAN, progress=False,
                         model_options=ModelOptions(device="cpu"))
    run_campaign(cfg, executor=ScanExecutor(pixels=BLOCK))
    executor = RayExecutor(ExecutorConfig(kind="ray", workers=2), scan=ScanOptions(pixels=BLOCK))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        summary = run_campaign(replace(cfg, out=tmp_path / "ray"), executor=executor)
        # An executor made for the scan refuses another method, before any RUN exists.
        with pytest.raises(ConfigError, match="this executor runs 'scan'"):
            run_campaign(CampaignConfig(dataset=data, out=tmp_path / "de", progress=False),
                         executor=executor)
    finally:
        ray.shutdown()
    assert not (tmp_path / "de").exists()
    local, remote = attack_rows(tmp_path / "local"), attack_rows(tmp_path / "ray")
    assert [r["status"] for r in local] == ["attacked", "attacked"]
    assert local[0]["success"] == "1"  # true.png flips inside the block
    _same_rows(remote, local)
    hist = {kind: history_rows(tmp_path / kind) for kind in ("local", "ray")}
    assert [h[:2] for h in hist["ray"]] == [h[:2] for h in hist["local"]]  # image, generation
    np.testing.assert_allclose([float(h[2]) for h in hist["ray"] if h[0] != "image"],
                               [float(h[2]) for h in hist["local"] if h[0] != "image"], atol=1e-5)
    # Batches of one image on actors that are not this process; every query counted.
    assert len(executor.worker_pids) == 2 and os.getpid() not in executor.worker_pids
    assert summary["evaluations_this_session"] == sum(int(r["nfev"]) for r in remote)
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert config["executor"]["kind"] == "ray" and config["executor"]["method"] == "scan"
    assert config["executor"]["pixels"] == [list(p) for p in BLOCK]
    assert config["batch_images"] == 1 and config["attack"]["method"] == "scan"


@pytest.mark.slow
def test_cli_scan_on_ray_equals_the_local_cli(tmp_path):
    """`onepixel attack --method scan --executor ray` (no longer refused) writes the local
    command's rows (a tiny 8x8 Keras model, so the whole image is scanned in a test)."""
    from keras_files import tiny_classifier_file

    model = tiny_classifier_file(tmp_path / "tiny.h5", units=1)
    rng = np.random.default_rng(7)
    for label in ("mitosis", "normal"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "data" / label / f"{i}.png")
    runs = {}
    for kind, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        out = tmp_path / kind
        proc = subprocess.run(
            [sys.executable, "-m", "onepixel.cli", "-q", "attack", str(tmp_path / "data"),
             "--out", str(out), "--model", str(model), "--output", "logit", "--device", "cpu",
             "--no-progress", "--method", "scan", "--max-queries", "1600",
             "--skip-positive-below", "0", "--skip-negative-above", "1", *extra],
            capture_output=True, text=True, timeout=600, start_new_session=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[kind] = attack_rows(out)
    assert len(runs["local"]) == 4
    assert {r["status"] for r in runs["local"]} == {"attacked"}
    _same_rows(runs["ray"], runs["local"])
    assert 512 < int(runs["local"][0]["nfev"]) <= 1600  # 8x8 pixels x 8 corners + refinement
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert config["executor"] == {**config["executor"], "kind": "ray", "method": "scan",
                                  "top": 8, "rounds": 4, "pixels": None}
