"""Behaviour pinned across refactors: the same seed and dataset give the same RUN files.

``tests/golden/`` holds attacks.csv and history.csv of two small campaigns on the real MAX model,
made with the code before the package layout changed (``tests/golden/make_golden.py`` says how).
Today's code must give the same images, pixels, nit and nfev (integers: exact on every machine)
and the same scores within what float32 justifies (see ``FLOAT32_ATOL``); only the wall time
``seconds`` may differ.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from onepixel.attack.campaign import run_campaign

GOLDEN = Path(__file__).parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

#: Scores are the float64 sigmoid of float32 logits. Another CPU (or oneDNN / ONNX Runtime kernel)
#: sums the network's ~10^5 products per output in another order, which moves a float32 logit by
#: some ulps (2^-24 relative each); the probability moves by p(1-p) <= 0.25 times that. 1e-7 was
#: seen across two x86-64 CPUs (AVX-512/AMX Xeon vs AMD EPYC); 1e-5 absolute keeps a wide margin
#: and still catches any real change of the model or the attack (those move scores by >> 1e-3).
FLOAT32_ATOL = 1e-5

EXACT = ("image", "label", "direction", "goal", "status", "skip_reason", "x", "y", "r", "g", "b",
         "nit", "nfev", "early_converged", "success", "strong_success")


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["image"]: row for row in csv.DictReader(fh)}


def _history(path: Path) -> dict[tuple[str, str], float]:
    with path.open(newline="") as fh:
        return {(r["image"], r["generation"]): float(r["best_score"]) for r in csv.DictReader(fh)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(make_golden.RUNS))
def test_same_seed_same_run_as_before_the_refactor(name, tmp_path, max_model_path, true_png):
    dataset = make_golden.build_dataset(tmp_path / "dataset")
    updating, evaluator, tol = make_golden.RUNS[name]
    run_campaign(make_golden.campaign(dataset, tmp_path / "run", updating, evaluator, tol))
    want, got = _rows(GOLDEN / f"{name}-attacks.csv"), _rows(tmp_path / "run" / "attacks.csv")
    assert sorted(got) == sorted(want)
    for image, row in want.items():
        assert {k: got[image][k] for k in EXACT} == {k: row[k] for k in EXACT}, image
        for key in ("original_score", "attacked_score"):
            assert float(got[image][key]) == pytest.approx(float(row[key]), rel=0, abs=FLOAT32_ATOL)
    want_h, got_h = _history(GOLDEN / f"{name}-history.csv"), _history(tmp_path / "run" / "history.csv")
    assert sorted(got_h) == sorted(want_h)
    for key, value in want_h.items():
        assert got_h[key] == pytest.approx(value, rel=0, abs=FLOAT32_ATOL), key
