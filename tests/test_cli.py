"""The command line: the main jobs run as a real subprocess (exit codes and messages as a user
sees them); checks of bad input run ``main()`` in this process, where each costs no interpreter
start (about 5 s of imports on 2 cores), and `run_cli` covers the process wrapper."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def main_exit(args, capsys) -> tuple[int, str]:
    """``onepixel ARGS`` in this process: (exit status, stderr); argparse's exits included."""
    from onepixel.cli.main import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse rejects the arguments
        code = exc.code
    return code, capsys.readouterr().err


def run_cli(*args, cwd=None):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "onepixel.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_predict_writes_csv(tmp_path, max_model_path, true_png, false_png):
    out = tmp_path / "scores.csv"
    proc = run_cli("predict", true_png, false_png, "--model", max_model_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == [str(true_png), str(false_png)]
    assert abs(float(rows[0]["score"]) - 0.9884441494941711) < 1e-5
    assert float(rows[1]["score"]) < 1e-4
    assert proc.stdout.splitlines()[0] == "image,score"


@pytest.mark.slow
def test_predict_builtin_model_and_folder(true_png):
    proc = run_cli("-q", "predict", true_png.parent)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "image,score" and len(lines) == 3


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["predict", d / "missing.png"], "image not found"),
        (lambda d: ["predict", d / "small.png"], "32x32"),
        (lambda d: ["predict", d / "corrupt.png"], "cannot read image"),
        (lambda d: ["predict", d / "small.png", "--model", "vgg16"], "unknown model spec"),
        (lambda d: ["predict", d / "small.png", "--model", d / "none.onnx"], "not found"),
        (lambda d: ["predict", d / "small.png", "--device", "tpu"], "unknown device"),
        (lambda d: ["predict", d / "emptydir"], "no images"),
        (lambda d: ["export", "vgg16.bin", "-o", d / "x.onnx"], "export supports"),
    ],
)
def test_bad_input_exits_nonzero_with_message(tmp_path, max_model_path, make_args, message, capsys):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "emptydir").mkdir()
    code, err = main_exit(make_args(tmp_path), capsys)
    assert code == 2
    assert message in err


@pytest.mark.slow
def test_checksum_mismatch_exits_nonzero(tmp_path):
    folder = tmp_path / "assets" / "max-mitosis"
    folder.mkdir(parents=True)
    (folder / "deep_histopath_model.hdf5").write_bytes(b"tampered")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    proc = run_cli("--assets", tmp_path / "assets", "predict", tmp_path / "x.png")
    assert proc.returncode == 2
    assert "checksum mismatch" in proc.stderr and "deep_histopath_model.hdf5" in proc.stderr


@pytest.mark.slow
def test_export_then_predict_with_onnx(tmp_path, max_model_path, true_png):
    onnx_path = tmp_path / "model.onnx"
    proc = run_cli("export", "max-mitosis", "-o", onnx_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("predict", true_png, "--model", onnx_path)
    assert proc.returncode == 0, proc.stderr
    assert abs(float(proc.stdout.splitlines()[1].split(",")[1]) - 0.9884441494941711) < 1e-5


@pytest.mark.slow
def test_tiles_command(tmp_path, capsys):
    from onepixel import assets
    from onepixel.errors import AssetError

    try:
        jpg = assets.ensure("he-images/stardist-histo.jpg", download=False)
    except AssetError:
        pytest.skip("needs the shared H&E images (ONEPIXEL_ASSETS)")
    proc = run_cli("-q", "tiles", jpg, "--out", tmp_path / "tiles", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "tiles").glob("*.png"))) == 28  # 7 x 4 full tiles of 500x300
    (tmp_path / "notes.txt").write_text("not an image")
    code, err = main_exit(["tiles", tmp_path / "notes.txt", "--out", tmp_path / "more"], capsys)
    assert code == 2 and "notes.txt" in err
    assert not (tmp_path / "more").exists()


@pytest.mark.slow
def test_attack_analyze_report_pipeline(tmp_path, true_png, false_png, capsys):
    """The main job end to end through the CLI on real patches (small DE settings)."""
    from onepixel.datasets.demo import dihedral_variants
    from onepixel.datasets.images import load_image

    for label in ("mitosis", "normal"):
        (tmp_path / "ds" / label).mkdir(parents=True)
    for key, img in list(dihedral_variants(load_image(true_png)).items())[:3]:
        Image.fromarray(img).save(tmp_path / "ds" / "mitosis" / f"{key}.png")
    Image.fromarray(load_image(false_png)).save(tmp_path / "ds" / "normal" / "false.png")
    run = tmp_path / "run"
    proc = run_cli("-q", "attack", tmp_path / "ds", "--out", run, "--popsize", "20",
                   "--maxiter", "5", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "mitosis-to-normal: 3 attacked" in proc.stdout
    proc = run_cli("-q", "analyze", run)
    assert proc.returncode == 0, proc.stderr
    assert "Periodicity" in proc.stdout and (run / "analysis" / "tables.md").exists()
    proc = run_cli("-q", "report", run)
    assert proc.returncode == 0, proc.stderr
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    proc = run_cli("report", tmp_path / "nothing")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # Deferred updating with the incremental evaluator; a plain model cannot run it.
    proc = run_cli("-q", "attack", tmp_path / "ds", "--out", tmp_path / "inc", "--popsize", "20",
                   "--maxiter", "5", "--updating", "deferred", "--evaluator", "incremental",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "inc" / "config.json").read_text())["evaluator"] == \
        "IncrementalEvaluator"
    code, err = main_exit(["attack", tmp_path / "ds", "--out", tmp_path / "bad", "--evaluator",
                           "fast"], capsys)
    assert code == 2 and "--evaluator" in err
    code, err = main_exit(["attack", tmp_path / "ds", "--out", tmp_path / "bad", "--engine",
                           "onnxruntime", "--evaluator", "incremental"], capsys)
    assert code == 2 and "--evaluator" in err and "'full'" in err and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_confmap_command(tmp_path, true_png, max_model_path, capsys):
    # A tiny 8x8 Keras model: the command's wiring is under test here; maps of the built-in
    # model are tested in test_confmap.py (the whole 64x64 map costs ~30 s on 2 cores).
    from keras_files import tiny_classifier_file

    model = tiny_classifier_file(tmp_path / "tiny.h5", units=1)
    image = tmp_path / "patch.png"
    Image.open(true_png).convert("RGB").crop((28, 28, 36, 36)).save(image)  # 8x8 of true.png
    proc = run_cli("-q", "confmap", image, "--out", tmp_path / "map", "--step", "255",
                   "--model", model, "--model-output", "logit", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "lowest" in proc.stdout
    with np.load(tmp_path / "map" / "confmap.npz") as saved:
        assert saved["min"].shape == (8, 8) and int(saved["evaluations"]) == 8 * 8 * 8
    for args, message in ((["--step", "0"], "step"), (["--step", "256"], "step")):
        code, err = main_exit(["confmap", true_png, "--out", tmp_path / "bad", *args], capsys)
        assert code == 2 and message in err
    code, err = main_exit(["confmap", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "give IMAGE" in err


def test_unsupported_keras_layer_exits_nonzero(tmp_path, capsys):
    from keras_files import tiny_classifier_file

    model = tiny_classifier_file(tmp_path / "odd.h5", extra_layer="Dropout")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    code, err = main_exit(["predict", tmp_path / "x.png", "--model", model], capsys)
    assert code == 2 and "'odd' is a Dropout" in err


@pytest.mark.parametrize("command", ["tiles", "confmap"])
def test_an_out_that_is_a_file_is_a_clear_error(tmp_path, true_png, capsys, command):
    """Any command whose --out cannot be a folder says which path and why, exit 2 (no
    traceback): here a file where the output folder should go."""
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    code, err = main_exit(["-q", command, true_png, "--out", taken, "--no-progress"], capsys)
    assert code == 2 and str(taken) in err and "onepixel: error" in err
    assert taken.read_text() == "a file, not a folder"
