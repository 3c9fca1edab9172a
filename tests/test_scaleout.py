"""Scale-out on a real local Ray runtime (2 CPUs): campaigns and confidence maps on actors equal
the local ones; a killed actor and a killed driver lose and duplicate nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.confmap.config import ConfmapConfig
from onepixel.confmap.engine import compute_confmap
from onepixel.datasets.images import load_image
from onepixel.errors import OnepixelError, ScaleOutError
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.scaleout.config import ExecutorConfig
from onepixel.scoring.policy import load_confmap_classifier
from run_files import attack_rows, history_rows, write_patch_dataset

ray = pytest.importorskip("ray")

from onepixel.scaleout import RayExecutor, RayMapper  # noqa: E402

FAST = AttackConfig(de=DEConfig(population=20, maxiter=6))
CLI_DE = ["--popsize", "20", "--maxiter", "6", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime of 2 CPUs for the module (the executors join it, not stop it)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, true_png, false_png):
    return write_patch_dataset(tmp_path_factory.mktemp("scaleout") / "train", true_png, false_png,
                               ambiguous=True)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory, max_model_path):
    """The local campaign every Ray campaign must equal, row for row."""
    out = tmp_path_factory.mktemp("local") / "run"
    run_campaign(_config(dataset, out))
    return out


def _config(dataset, out, **kw):
    return CampaignConfig(dataset=dataset, out=out, model_options=ModelOptions(device="cpu"),
                          attack=FAST, progress=False, **kw)


def _no_duplicates(run: Path) -> None:
    names = [r["image"] for r in attack_rows(run)]
    assert len(names) == len(set(names)) == 11


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_campaign_equals_local_row_for_row(ray_runtime, dataset, reference, tmp_path, workers):
    executor = RayExecutor(ExecutorConfig(kind="ray", workers=workers))
    summary = run_campaign(_config(dataset, tmp_path / "run"), executor=executor)
    # Pixels, scores, nit, nfev, success... every column but the wall time, and every history row.
    assert attack_rows(tmp_path / "run") == attack_rows(reference)
    assert history_rows(tmp_path / "run") == history_rows(reference)
    _no_duplicates(tmp_path / "run")
    assert len(executor.worker_pids) == workers and os.getpid() not in executor.worker_pids
    # Model evaluations summed over the workers: the local run's (memoized repeats not counted).
    local = json.loads((reference / "summary.json").read_text())
    assert summary["evaluations_this_session"] == local["evaluations_this_session"] > 0


@pytest.mark.slow
def test_actor_killed_mid_campaign_reruns_its_batch(ray_runtime, dataset, reference, tmp_path):
    """Every actor is SIGKILLed when the first row comes back: the other actor is then mid-batch
    (batches of one image, two workers). Ray restarts the actors and re-runs the batch."""
    executor = RayExecutor(ExecutorConfig(kind="ray", workers=2, max_retries=2))
    killed: list[int] = []

    def kill_workers(_row) -> None:
        if not killed:
            for pid in executor.worker_pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    run_campaign(_config(dataset, tmp_path / "run", batch_images=1), on_result=kill_workers,
                 executor=executor)
    assert len(killed) == 2
    assert attack_rows(tmp_path / "run") == attack_rows(reference)
    assert history_rows(tmp_path / "run") == history_rows(reference)
    _no_duplicates(tmp_path / "run")


@pytest.mark.slow
def test_driver_killed_and_resumed_equals_local(dataset, reference, tmp_path):
    """`onepixel attack --executor ray` SIGKILLed mid-campaign, then run again: same rows."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "onepixel.cli", "-q", "attack", str(dataset), "--out", str(run),
           *CLI_DE, "--executor", "ray", "--workers", "2", "--batch-images", "1"]
    killed_mid = False
    for _attempt in range(3):
        subprocess.run(["rm", "-rf", str(run)], check=True)
        # Its own session: the local Ray runtime it starts dies with it (killpg below).
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            path = run / "attacks.csv"
            if path.exists() and path.read_text().count("\n") >= 4:  # header + 3 rows
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the runtime's processes the driver left
        done = attack_rows(run) if (run / "attacks.csv").exists() else []
        if 3 <= len(done) < 11:
            killed_mid = True
            break
    assert killed_mid, "the kill should land mid-campaign"
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert attack_rows(run) == attack_rows(reference)
    assert history_rows(run) == history_rows(reference)
    _no_duplicates(run)


ROWS = (0, 31, 63)


@pytest.fixture(scope="module")
def local_map(true_png, max_model_path):
    """A local map of three pixel rows of true.png at step 255 (8 colours)."""
    options = ModelOptions(device="cpu")
    classifier = load_confmap_classifier("max-mitosis", options, "auto")
    image = load_image(true_png, classifier.input_shape)
    pixels = tuple((x, y) for y in ROWS for x in range(64))
    config = ConfmapConfig(step=255, progress=False, pixels=pixels)
    return classifier, image, config, options, compute_confmap(image, classifier, config)


@pytest.mark.slow
def test_ray_confmap_equals_local_and_resumes_from_ranges(ray_runtime, local_map, tmp_path,
                                                          monkeypatch):
    classifier, image, config, options, local = local_map
    pixels = config.pixels
    mapper = RayMapper(ExecutorConfig(kind="ray", workers=2))

    # A driver that dies after the ranges finished (before merging) leaves their checkpoints...
    import onepixel.scaleout.confmap as ray_confmap

    real_merge = ray_confmap.merge_maps
    monkeypatch.setattr(ray_confmap, "merge_maps", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        mapper(image, classifier, config, tmp_path, "max-mitosis", options)
    saved = sorted((tmp_path / ray_confmap.RANGES).glob("range-*.npz"))
    assert len(saved) == 8  # 2 workers x 4 ranges
    monkeypatch.setattr(ray_confmap, "merge_maps", real_merge)
    # ...which the next run merges without mapping them again.
    monkeypatch.setattr(ray_confmap, "ConfmapWorker", None)  # no actor may be started now
    merged = mapper(image, classifier, config, tmp_path, "max-mitosis", options)
    for name in ("min", "max", "mean", "argmin_rgb", "argmax_rgb"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(local, name), err_msg=name)
    assert merged.original_score == local.original_score
    assert merged.evaluations == local.evaluations == len(pixels) * 8
    assert not (tmp_path / ray_confmap.RANGES).exists()


@pytest.mark.slow
def test_ray_confmap_from_the_cli(tmp_path):
    """`onepixel confmap IMAGE --executor ray` maps every pixel as the local engine does (on a
    tiny 8x8 Keras model: the CLI's wiring is under test, the engines are tested above)."""
    from keras_files import tiny_classifier_file

    model = tiny_classifier_file(tmp_path / "tiny.h5", units=1)
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    options = ModelOptions(device="cpu", model_output="logit")
    classifier = load_confmap_classifier(str(model), options, "auto")
    local = compute_confmap(load_image(tmp_path / "x.png", classifier.input_shape), classifier,
                            ConfmapConfig(step=255, progress=False))
    out = subprocess.run([sys.executable, "-m", "onepixel.cli", "-q", "confmap",
                          str(tmp_path / "x.png"), "--model", str(model), "--output", "logit",
                          "--step", "255", "--device", "cpu", "--no-progress", "--out",
                          str(tmp_path / "map"), "--executor", "ray", "--workers", "2"],
                         capture_output=True, text=True, timeout=600, start_new_session=True)
    assert out.returncode == 0, out.stderr[-2000:]
    remote = np.load(tmp_path / "map" / "confmap.npz")
    assert int(remote["evaluations"]) == 8 * 8 * 8
    assert float(remote["original_score"]) == local.original_score
    for name in ("min", "max", "mean", "argmin_rgb", "argmax_rgb"):
        np.testing.assert_array_equal(remote[name], getattr(local, name), err_msg=name)
    assert not np.isnan(remote["min"]).any()


def test_executor_settings_are_checked():
    with pytest.raises(OnepixelError, match="ExecutorConfig.kind"):
        ExecutorConfig(kind="spark")
    with pytest.raises(OnepixelError, match="ExecutorConfig.workers"):
        ExecutorConfig(kind="ray", workers=0)
    with pytest.raises(OnepixelError, match="need kind='ray'"):
        ExecutorConfig(workers=2)
    with pytest.raises(OnepixelError, match="ExecutorConfig.address"):
        ExecutorConfig(kind="ray", address="somewhere")
    with pytest.raises(OnepixelError, match="ExecutorConfig.gpus_per_worker"):
        ExecutorConfig(kind="ray", gpus_per_worker=-1)


def test_missing_ray_is_a_clear_error(monkeypatch):
    # Ray cannot be uninstalled on demand here: hide it from the import system instead.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ScaleOutError, match=r"pip install 'onepixel\[ray\]'"):
        RayExecutor(ExecutorConfig(kind="ray"))


def test_cli_rejects_ray_options_without_ray_executor(tmp_path):
    out = subprocess.run([sys.executable, "-m", "onepixel.cli", "attack", str(tmp_path), "--out",
                          str(tmp_path / "run"), "--workers", "2"], capture_output=True, text=True)
    assert out.returncode != 0 and "need kind='ray'" in out.stderr


@pytest.mark.slow
def test_ray_campaign_through_a_defence_equals_local(ray_runtime, dataset, tmp_path):
    """The workers query the driver's defended pipeline (same defence, same fingerprint)."""
    from onepixel.scoring.policy import load_attack_evaluator

    defended = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"),
                                     defence="median3").classifier
    run_campaign(_config(dataset, tmp_path / "local", limit=4), classifier=defended)
    run_campaign(_config(dataset, tmp_path / "ray", limit=4), classifier=defended,
                 executor=RayExecutor(ExecutorConfig(kind="ray", workers=2)))
    assert attack_rows(tmp_path / "ray") == attack_rows(tmp_path / "local")
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert config["defence"] == "median3" and config["executor"]["kind"] == "ray"


@pytest.mark.slow
def test_ray_confmap_through_a_defence_equals_local(ray_runtime, true_png, tmp_path):
    """A map through --defence on Ray: the workers map the driver's defended pipeline (brute
    force, as locally), and the merged map equals the local one."""
    options = ModelOptions(device="cpu")
    defended = load_confmap_classifier("max-mitosis", options, "auto", "median3")
    image = load_image(true_png, defended.input_shape)
    config = ConfmapConfig(step=255, progress=False, pixels=tuple((x, 31) for x in range(64)))
    local = compute_confmap(image, defended, config)
    remote = RayMapper(ExecutorConfig(kind="ray", workers=2))(image, defended, config, tmp_path,
                                                              "max-mitosis", options)
    for name in ("min", "max", "mean", "argmin_rgb", "argmax_rgb"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
    assert remote.evaluations == local.evaluations == 64 * 8
    # Not the undefended model's map: the median filter changes what one pixel can do.
    plain = compute_confmap(image, load_confmap_classifier("max-mitosis", options), config)
    assert not np.array_equal(plain.min, remote.min, equal_nan=True)


def test_shipped_model_folder_is_removed_once_loaded(true_png):
    """A worker writes the shipped bytes to a private folder, loads the model, and removes the
    folder: a worker restarted many times leaves no copies of the model behind."""
    from onepixel.models.options import BUILTIN
    from onepixel.models.registry import load_classifier
    from onepixel.scaleout.runtime import ModelPayload

    options = ModelOptions(device="cpu")
    payload = ModelPayload.of(BUILTIN, options)
    assert payload.data and payload.asset_relpath
    with payload.materialised(options) as (spec, shipped):
        folder = Path(shipped.assets_dir)
        assert (folder / payload.asset_relpath).read_bytes() == payload.data
        classifier = load_classifier(spec, shipped)
    assert not folder.exists()
    image = load_image(true_png, classifier.input_shape)[None]
    # Loaded before the folder went: it still scores, as the model loaded from the assets does.
    assert classifier.scores(image)[0] == load_classifier(BUILTIN, options).scores(image)[0]
