"""README.md's "A short tour" runs as printed, in order (as test_api_docs.py runs docs/api.md).

Each command of the tour's bash block is run in-process through ``onepixel.cli.main.main`` in a
fresh folder, with the tour's own shell variables, plus options that only make it small (fewer
DE generations, a coarser colour grid, fewer images): the command line as printed must parse
and work. ``serve ... &`` runs as a real server process on a free port (the next command's
URL follows it). Commands that need what a fresh clone cannot have (a slide, the TUPAC16
download, a K-class model and dataset, a Ray cluster) are skipped with their reason, and the
test checks that exactly those are skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from onepixel.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"

#: Options appended to a command (by its subcommand and a word of its line) to keep it small.
TINY = [
    ("demo", "", ["--n-normal", "1", "--no-confmaps", "--no-progress"]),
    ("attack", "--max-colour-diff", ["--maxiter", "2", "--popsize", "10", "--limit", "2", "--no-progress"]),
    ("attack", "--method rs", ["--limit", "2", "--no-progress"]),
    ("attack", "http://", ["--maxiter", "1", "--popsize", "10", "--limit", "2", "--no-progress"]),
    ("attack", "", ["--maxiter", "3", "--popsize", "10", "--limit", "4", "--no-progress"]),
    ("confmap", "--run", ["--step", "255", "--no-progress"]),
    ("confmap", "", ["--step", "255", "--no-progress"]),
    ("evaluate", "", ["--limit", "2", "--max-queries", "300", "--scan-max-queries", "1000",
                      "--no-progress"]),
    ("audit", "", ["--step", "255", "--top", "1", "--rounds", "1", "--no-progress"]),
    ("robustness", "", ["--popsize", "10", "--maxiter", "1", "--limit", "2", "--no-progress"]),
    ("pareto", "", ["--popsize", "8", "--maxiter", "1", "--limit", "2", "--no-detector", "--no-progress"]),
]

#: Commands a fresh clone cannot run, and why (matched by a word of the line).
NEEDS = {
    "SLIDE.svs": "needs a whole-slide image of your own",
    "preprocess-tupac": "needs the TUPAC16 download (not redistributable)",
    "DIGITS": "needs a K-class model and class-folder dataset of your own (tests/test_multiclass.py "
              "runs this path on a CNN it trains)",
    "--executor ray": "needs a Ray cluster (tests/test_scaleout.py runs a local one)",
    "PNGS": "needs a folder of your own images and model (tests/test_own_model.py runs this path "
            "on a CNN it trains)",
}


def tour_lines() -> list[str]:
    """The command lines of the README's tour block, comments stripped."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## A short tour\n.*?```bash\n(.*?)```", text, flags=re.S)
    assert block, "README.md has no bash block under '## A short tour'"
    lines = []
    for raw in block.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def test_tour_parses_and_skips_only_what_a_clone_cannot_have():
    lines = tour_lines()
    commands = [ln for ln in lines if ln.startswith("onepixel ")]
    assert len(commands) >= 15
    skipped = [ln for ln in commands if any(k in ln for k in NEEDS)]
    assert len(skipped) == len(NEEDS), skipped
    # Placeholders a user cannot run as printed are only in the skipped commands.
    for ln in commands:
        if ln not in skipped:
            assert not re.search(r"\b(IMAGE|DIR|SLIDE|SRC|DIGITS|PNGS)\b", ln), ln


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"onepixel serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/model/metadata", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"onepixel serve did not answer on port {port} within {seconds} s")


@pytest.mark.slow
def test_readme_tour_runs_as_printed(tmp_path, monkeypatch, max_model_path, he_dir, capsys):
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    port = str(_free_port())
    server: subprocess.Popen | None = None
    ran = []
    try:
        for line in tour_lines():
            if line.startswith(". "):
                continue  # activating the virtualenv: this test already runs in it
            assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
            if assignment:
                env[assignment[1]] = os.path.expandvars(assignment[2])
                continue
            if any(k in line for k in NEEDS):
                continue
            for name, value in env.items():
                line = line.replace(f"${name}", value)
            line = line.replace("127.0.0.1:5000", f"127.0.0.1:{port}").replace("--port 5000",
                                                                                f"--port {port}")
            argv = shlex.split(line)
            assert argv[0] == "onepixel", line
            if argv[-1] == "&":
                server = subprocess.Popen([sys.executable, "-m", "onepixel.cli", *argv[1:-1]],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                _wait_ready(int(port), server)
                ran.append(line)
                continue
            extra = next((opts for cmd, word, opts in TINY if argv[1] == cmd and word in line), [])
            code = main([*argv[1:], *extra])
            assert code == 0, f"`{line}` exited with {code}:\n{capsys.readouterr().err[-2000:]}"
            ran.append(line)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert len(ran) >= 14
    # What the tour promises is there.
    assert (tmp_path / "onepixel-demo" / "run" / "report.html").is_file()
    assert (tmp_path / "scores.csv").read_text().startswith("image,score")
    assert (tmp_path / "my-run" / "report.html").is_file()
    assert (tmp_path / "false-map" / "confmap.npz").is_file()
    assert (tmp_path / "my-run" / "audit").is_dir()
    assert (tmp_path / "max-mitosis.onnx").is_file()
    assert (tmp_path / "my-run-http" / "attacks.csv").is_file()
