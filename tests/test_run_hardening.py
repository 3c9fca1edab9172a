"""Hostile-tester cases for RUN folders: odd file names, empty and torn CSV files, file modes.

Real files on disk and real campaigns on the MAX model; the CLI runs as a real process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onepixel.attack import AttackConfig
from onepixel.attack.campaign import run_campaign
from onepixel.attack.config import CampaignConfig
from onepixel.fileio import atomic_output_dir, save_npz_atomic, write_csv_atomic, write_json_atomic
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.runs.schema import record_text, text_of_record
from run_files import attack_rows, history_rows, write_patch_dataset

FAST = AttackConfig(de=DEConfig(population=20, maxiter=4))
ODD = os.fsdecode(b"odd\xff\xfe.png")  # not UTF-8: the name reaches Python with surrogates


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, true_png, false_png):
    return write_patch_dataset(tmp_path_factory.mktemp("dataset") / "train", true_png, false_png)


def _config(dataset, out, **kw):
    return CampaignConfig(dataset=dataset, out=out, model_options=ModelOptions(device="cpu"),
                          attack=FAST, progress=False, **kw)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onepixel.cli", "-q", *map(str, args)],
                          capture_output=True, cwd=cwd, timeout=300)


def test_record_names_round_trip():
    for name in ("mitosis/a.png", "café/ü.png", ODD, os.fsdecode(b"d\xe9j\xe0/x.png"), "a\\x41.png"):
        text = record_text(name)
        text.encode("utf-8")  # always valid UTF-8
        assert text_of_record(text) == name
    assert record_text(ODD) == "odd\\xff\\xfe.png"


@pytest.mark.slow
def test_a_name_that_is_not_utf8_is_attacked_and_resumed(tmp_path, true_png, false_png):
    data = tmp_path / "ds"
    (data / "mitosis").mkdir(parents=True)
    (data / "normal").mkdir()
    shutil.copy(true_png, os.fsencode(data / "mitosis") + b"/odd\xff\xfe.png")
    shutil.copy(true_png, data / "mitosis" / "a.png")
    shutil.copy(false_png, data / "normal" / "false.png")
    (data / "normal" / ODD.replace(".png", "-broken.png")).write_bytes(b"not a png")
    run = tmp_path / "run"
    args = ["attack", data, "--out", run, "--popsize", "20", "--maxiter", "3", "--device", "cpu",
            "--no-progress"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    text = (run / "attacks.csv").read_bytes().decode("utf-8")  # still valid UTF-8
    rows = {r["image"]: r for r in attack_rows(run)}
    assert set(rows) == {"mitosis/a.png", "mitosis/odd\\xff\\xfe.png", "normal/false.png",
                         "normal/odd\\xff\\xfe-broken.png"}
    assert rows["mitosis/odd\\xff\\xfe.png"]["status"] == "attacked"
    broken = rows["normal/odd\\xff\\xfe-broken.png"]
    assert broken["status"] == "skipped" and "unreadable" in broken["skip_reason"]
    # the odd name runs the same attack as the same image under a plain name would: it is
    # the same pixels, scored the same, only its random stream (seeded by the name) differs
    assert rows["mitosis/odd\\xff\\xfe.png"]["original_score"] == rows["mitosis/a.png"]["original_score"]
    again = _cli(*args)  # resume: nothing to do, nothing duplicated
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert (run / "attacks.csv").read_bytes().decode("utf-8") == text
    analyzed = _cli("analyze", run, "--no-figures")
    assert analyzed.returncode == 0, analyzed.stderr.decode(errors="replace")
    predicted = _cli("predict", data / "mitosis", "--device", "cpu")
    assert predicted.returncode == 0 and b"odd\\xff\\xfe.png" in predicted.stdout


@pytest.mark.slow
def test_empty_csv_files_resume_cleanly(dataset, tmp_path, max_model_path):
    reference = tmp_path / "reference"
    run_campaign(_config(dataset, reference, limit=4))
    run = tmp_path / "run"
    run_campaign(_config(dataset, run, limit=4))
    # A crash right after the files were created: config.json there, CSV files empty.
    for name in ("attacks.csv", "history.csv"):
        (run / name).write_bytes(b"")
    run_campaign(_config(dataset, run, limit=4))
    assert attack_rows(run) == attack_rows(reference)
    assert history_rows(run) == history_rows(reference)
    # A header cut short counts as no header.
    (run / "attacks.csv").write_bytes(b"image,lab")
    (run / "history.csv").write_bytes(b"")
    run_campaign(_config(dataset, run, limit=4))
    assert attack_rows(run) == attack_rows(reference)


@pytest.mark.slow
def test_a_torn_history_line_of_a_finished_image_is_redone(dataset, tmp_path, max_model_path, caplog):
    reference = tmp_path / "reference"
    run_campaign(_config(dataset, reference, limit=4))
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    data = (run / "history.csv").read_bytes()
    lines = data.splitlines(keepends=True)
    victim = lines[3].split(b",")[0]  # an image whose rows come before others'
    # Cut its last history row in half, and drop every row after it (a damaged file).
    last = max(i for i, line in enumerate(lines) if line.split(b",")[0] == victim)
    (run / "history.csv").write_bytes(b"".join(lines[:last]) + lines[last][:5])
    with caplog.at_level(logging.WARNING, logger="onepixel.runs.store"):
        run_campaign(_config(dataset, run, limit=4))
    assert any("incomplete" in r.getMessage() for r in caplog.records)
    assert attack_rows(run) == attack_rows(reference)
    assert history_rows(run) == history_rows(reference)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_umask_permissions(umask, dataset, tmp_path, max_model_path):
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        run_campaign(_config(dataset, run, limit=2))
        write_csv_atomic(tmp_path / "scores.csv", ("image", "score"), [("a", "0.5")])
        write_json_atomic(tmp_path / "x.json", {"a": 1})
        save_npz_atomic(tmp_path / "x.npz", a=np.zeros(2))
        with atomic_output_dir(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("x")
        pytest.importorskip("onnx")
        from onepixel.models.export import export_onnx

        export_onnx("max-mitosis", tmp_path / "model.onnx", ModelOptions(device="cpu"))
    finally:
        os.umask(old)
    files = [run / n for n in ("config.json", "summary.json", "attacks.csv", "history.csv")]
    files += [tmp_path / n for n in ("scores.csv", "x.json", "x.npz", "model.onnx")]
    for path in files:
        assert _mode(path) == 0o666 & ~umask, (path.name, oct(_mode(path)))
    assert _mode(tmp_path / "folder") == 0o777 & ~umask
    config = json.loads((run / "config.json").read_text())
    assert config["attack"]["population"] == 20


@pytest.mark.slow
def test_predict_output_file_gets_the_umask_permissions(tmp_path, true_png):
    proc = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o022); from onepixel.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "-q", "predict", str(true_png), "-o",
         str(tmp_path / "s.csv"), "--device", "cpu"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "s.csv") == 0o644
