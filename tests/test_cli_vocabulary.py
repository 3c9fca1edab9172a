"""One vocabulary for the command line (issue 24): every command's parser is walked; deprecated
spellings still work; library errors are shown with the command's flags; a RUN folder is read or
refused wherever images are accepted; an HTTP campaign's log has no per-request lines.

The commands run in this process through ``main([...])`` (a subprocess costs ~5 s of imports)."""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.cli import options as o
from onepixel.cli.main import COMMANDS, build_parser, command_parsers, main, user_message
from onepixel.errors import ConfigError, OnepixelError

#: Commands that write files: each takes -o/--out. analyze writes into its RUN (RUN/analysis,
#: which report reads) and serve writes nothing.
WRITES = {"predict", "attack", "confmap", "audit", "pareto", "detect", "robustness", "report",
          "export", "tiles", "preprocess-tupac", "demo", "evaluate"}
#: Commands that can run for more than a few seconds: each takes --no-progress.
LONG = {"predict", "attack", "confmap", "audit", "pareto", "detect", "robustness", "tiles",
        "preprocess-tupac", "demo", "evaluate"}
#: Commands with randomness (DE, NSGA-II, TUPAC sampling): each takes --seed, and no other does
#: (confmap and audit are exhaustive scans: a --seed there would change nothing).
RANDOM = {"attack", "robustness", "pareto", "preprocess-tupac", "demo", "evaluate"}


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return command_parsers(build_parser())


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _live(action: argparse.Action) -> bool:
    return not getattr(action, "deprecated", None)


def test_the_vocabulary_holds_in_every_command(parsers):
    assert set(parsers) == set(COMMANDS)
    has = {name: _options(p) for name, p in parsers.items()}
    assert {n for n, opts in has.items() if "--out" in opts} == WRITES
    for name in WRITES:
        assert has[name]["-o"] is has[name]["--out"], name
    assert {n for n, opts in has.items() if "--no-progress" in opts} == LONG
    assert {n for n, opts in has.items() if "--seed" in opts} == RANDOM
    assert not any("--output" in opts and _live(opts["--output"]) for opts in has.values())
    assert all("--pop" not in opts or not _live(opts["--pop"]) for opts in has.values())


def test_no_option_string_has_two_meanings(parsers):
    """The same option string has the same dest, type, choices and arity in every command; and
    an option of the shared vocabulary always comes from its one declaration."""
    seen: dict[str, dict[tuple, list[str]]] = {}
    for name, parser in parsers.items():
        for flag, action in _options(parser).items():
            if flag in ("-h", "--help") or not _live(action):
                continue
            kind = (action.dest, getattr(action.type, "__name__", action.type),
                    tuple(action.choices or ()), action.nargs, type(action).__name__)
            seen.setdefault(flag, {}).setdefault(kind, []).append(name)
            if flag in o.SHARED:
                assert getattr(action, "shared", None), f"{name} {flag} is not the shared one"
    twice = {flag: kinds for flag, kinds in seen.items() if len(kinds) > 1}
    assert not twice


def test_help_groups_say_what_they_hold(parsers):
    for name, parser in parsers.items():
        for group in parser._action_groups:
            flags = {s for a in group._group_actions for s in a.option_strings}
            if {"--out", "--no-progress"} & flags:
                assert group.title == "output", (name, group.title)
            if group.title.startswith("model"):
                assert flags <= {"--model", "--device", "--engine", "--dtype", "--batch-size",
                                 "--model-output", "--output", "--preprocess", "--layout",
                                 "--positive-index", "--input-shape", "--defence"}, (name, flags)


def test_no_cli_module_is_over_400_lines():
    folder = Path(o.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= len(COMMANDS) and max(sizes.values()) <= 400, sizes


def test_help_imports_no_heavy_module():
    code = ("import sys; from onepixel.cli.main import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'fastapi', 'uvicorn', "
            "'onnxruntime', 'matplotlib', 'httpx'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------- deprecated spellings


@pytest.mark.parametrize(("args", "dest", "value", "new"), [
    (["pareto", "x.png", "-o", "d", "--pop", "12"], "popsize", 12, "--popsize"),
    (["pareto", "x.png", "-o", "d", "--gens", "3"], "maxiter", 3, "--maxiter"),
    (["confmap", "x.png", "--method", "fast"], "evaluator", "incremental", "--evaluator incremental"),
    (["confmap", "x.png", "--method", "brute"], "evaluator", "full", "--evaluator full"),
    (["predict", "x.png", "--output", "logit"], "model_output", "logit", "--model-output"),
    (["robustness", "ds", "-o", "d", "--defences", "none,bits:4"], "compare", "none,bits:4",
     "--compare"),
])
def test_deprecated_spellings_parse_and_warn(args, dest, value, new, capsys):
    parsed = build_parser().parse_args(args)
    assert getattr(parsed, dest) == value
    err = capsys.readouterr().err
    assert f"{args[-2]} is deprecated" in err and f"use {new}" in err


def test_a_deprecated_spelling_still_runs(tmp_path, capsys):
    """predict through a tiny Keras model with --output and with --model-output: same table."""
    from keras_files import tiny_classifier_file

    model = tiny_classifier_file(tmp_path / "tiny.h5", units=1)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "x.png")
    common = ["-q", "predict", str(tmp_path / "x.png"), "--model", str(model), "--device", "cpu"]
    assert main([*common, "--model-output", "logit"]) == 0
    new = capsys.readouterr()
    assert main([*common, "--output", "logit"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and old.out.startswith("image,score\n")
    assert "--output is deprecated" in old.err and "deprecated" not in new.err


# --------------------------------------------------------------------------- errors in CLI words


def test_a_library_field_is_shown_as_the_flag(tmp_path, capsys):
    code = main(["attack", str(tmp_path), "-o", str(tmp_path / "run"), "--seed", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "--seed must be a non-negative integer" in err and "DEConfig" not in err
    code = main(["pareto", str(tmp_path / "x.png"), "-o", str(tmp_path / "p"), "--popsize", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--popsize" in err and "ParetoConfig.population" not in err
    # A library parameter that two commands spell differently.
    code = main(["detect", str(tmp_path), "-o", str(tmp_path / "d"), "--fpr", "2"])
    assert code == 2 and "--fpr (the target false-positive rate) must be in (0, 1)" in \
        capsys.readouterr().err
    message = user_message(ConfigError("fpr (the target false-positive rate) must be in (0, 1)"),
                           [command_parsers(build_parser())["pareto"]])
    assert message.startswith("--detector-fpr (the target")


def test_user_message_rewrites_fields_and_old_spellings():
    parsers = command_parsers(build_parser())
    attack, confmap = [parsers["attack"]], [parsers["confmap"]]
    err = ConfigError("must be an integer within 1..1024, got 0")
    err.field = "AttackConfig.pixels"  # what ConfigError(..., field=...) sets
    assert user_message(err, attack) == "--pixels: must be an integer within 1..1024, got 0"
    err = ConfigError("AttackConfig.pixels must be within 1..1024; DEConfig.maxiter too")
    assert user_message(err, attack) == "--pixels must be within 1..1024; --maxiter too"
    # A field the command has no option for stays a field; never a flag it lacks.
    assert user_message(err, confmap) == str(err).replace("DEConfig.maxiter", "DEConfig.maxiter")
    assert user_message(OnepixelError("--method fast bypasses --defence; use --output logit"),
                        confmap) == "--evaluator incremental bypasses --defence; use --model-output logit"


# --------------------------------------------------------------------------- RUN folders


def test_detect_run_positionally_equals_detect_dash_run(tmp_path, capsys):
    from test_analysis_runs import small_run

    run, _ = small_run(tmp_path)
    # The trap of issue 24: a RUN's figures must not be scored as if they were the images.
    (run / "analysis").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(run / "analysis" / "figure.png")
    settings = ["--threshold", "0.25", "--no-progress"]
    assert main(["-q", "detect", str(run), "-o", str(tmp_path / "a"), *settings]) == 0
    assert main(["-q", "detect", "--run", str(run), "-o", str(tmp_path / "b"), *settings]) == 0
    a = (tmp_path / "a" / "detections.csv").read_text()
    assert a == (tmp_path / "b" / "detections.csv").read_text()
    assert a.count(",adversarial,") == 7 and "figure.png" not in a
    capsys.readouterr()
    assert main(["detect", str(run), str(run / "analysis"), "-o", str(tmp_path / "c")]) == 2
    assert "give one RUN alone" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "needle"), [
    (["predict", "{run}"], "use the dataset the RUN was made from: {dataset}"),
    (["attack", "{run}", "-o", "{tmp}/r2"], "use the dataset the RUN was made from: {dataset}"),
    (["tiles", "{run}", "-o", "{tmp}/t"], "use the dataset the RUN was made from: {dataset}"),
    (["pareto", "--dataset", "{run}", "-o", "{tmp}/p"], "the RUN was made from: {dataset}"),
    (["confmap", "{run}", "-o", "{tmp}/m"], "onepixel confmap --run {run}"),
])
def test_a_run_folder_is_refused_where_images_are_expected(tmp_path, capsys, command, needle):
    from test_analysis_runs import small_run

    run, dataset = small_run(tmp_path)
    fill = {"run": run, "dataset": dataset, "tmp": tmp_path}
    code = main([a.format(**fill) for a in command])
    err = capsys.readouterr().err
    assert code == 2 and needle.format(**fill) in err and "a RUN folder" in err, err
    assert not (tmp_path / "r2").exists() and not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- quiet HTTP logs


@pytest.fixture()
def http_model():
    """A real MAX-API server on a loopback port (uvicorn in a thread) serving a toy binary
    model of 8x8 images: the mean brightness."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    from onepixel.models.callable_backend import CallableClassifier
    from onepixel.serving.app import create_app

    model = CallableClassifier(lambda x: x.reshape(len(x), -1).mean(axis=1) / 255.0, (8, 8, 3),
                               name="brightness", fingerprint="brightness-v1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model), log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_an_http_campaign_logs_no_request_lines_unless_verbose(tmp_path, http_model, caplog, capsys):
    for label, value in (("mitosis", 250), ("normal", 5)):
        (tmp_path / "ds" / label).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / "ds" / label / "a.png")
    caplog.set_level(logging.INFO)
    attack = ["attack", str(tmp_path / "ds"), "--model", http_model, "--popsize", "10",
              "--maxiter", "2", "--device", "cpu"]
    assert main([*attack, "-o", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "it/s" in err or "s/it" in err or "100%" in err  # the progress bar is there
    assert not [r for r in caplog.records if "HTTP Request" in r.getMessage()]
    caplog.clear()
    assert main(["-v", *attack, "-o", str(tmp_path / "run-v"), "--no-progress"]) == 0
    assert [r for r in caplog.records if r.name == "httpx" and "HTTP Request" in r.getMessage()]
    logging.getLogger("httpx").setLevel(logging.NOTSET)
