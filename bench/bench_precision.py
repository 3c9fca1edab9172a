"""bfloat16 against float32 on the attack's call shapes: evaluations/s and score error.

Immediate updating scores one candidate on each of B images per call; deferred updating (scipy's
vectorised mode) a population of candidates of one image. Each row prepares its base images once
(as an attack does), scores the same random candidates for ``--seconds``, twice interleaved (the
better run counts), and compares its scores with float32's on the same candidates.

Usage::

    ONEPIXEL_ASSETS=../shared/assets .venv/bin/python bench/bench_precision.py \\
        [--images 64,256] [--population 200] [--seconds 3] [--out bench/results/precision-cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchutil import emit, machine
from onepixel import assets
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image
from onepixel.models import ModelOptions
from onepixel.scoring.policy import load_attack_evaluator


def cpu_flags() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ", ".join(f for f in wanted if f in flags) or "none"


def timed(evaluator, images: np.ndarray, rows: np.ndarray, cands: np.ndarray, seconds: float) -> float:
    prepared = evaluator.prepare(images)
    evaluator.scores_prepared(prepared, rows, cands)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        evaluator.scores_prepared(prepared, rows, cands)
        n += cands.shape[0] * cands.shape[1]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default="64,256", help="images per immediate call")
    p.add_argument("--population", type=int, default=200, help="candidates per deferred call")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    variants = np.stack(list(dihedral_variants(load_image(assets.ensure("true.png"))).values()))
    rng = np.random.default_rng(0)
    engines = {
        "full, ONNX Runtime fp32 (default)": ("full", ModelOptions(device="cpu")),
        "full, torch fp32": ("full", ModelOptions(device="cpu", engine="torch")),
        "full, torch bf16": ("full", ModelOptions(device="cpu", engine="torch", dtype="bfloat16")),
        "incremental fp32": ("incremental", ModelOptions(device="cpu")),
        "incremental bf16": ("incremental", ModelOptions(device="cpu", dtype="bfloat16")),
    }
    shapes = [(f"immediate, {b} images x 1", b, 1) for b in (int(v) for v in args.images.split(","))]
    shapes.append((f"deferred, 1 image x {args.population}", 1, args.population))
    lines = ["# bfloat16 against float32 on the attack's call shapes", "",
             f"Machine: {machine()}; CPU flags: {cpu_flags()}. Shared with other jobs while it ran.",
             "", "| call shape | evaluator | evals/s | vs default | vs same evaluator fp32 | "
             "max abs score diff vs fp32 |", "|---|---|---:|---:|---:|---:|"]
    evaluators = {}
    for name, (kind, options) in engines.items():
        try:
            evaluators[name] = load_attack_evaluator("max-mitosis", options, kind, "immediate", 1)
        except Exception as exc:
            lines.append(f"| - | {name} | not available: {exc} | | | |")
    for label, b, k in shapes:
        images = variants[np.arange(b) % len(variants)]
        cands = np.stack([rng.integers(0, 64, b * k), rng.integers(0, 64, b * k),
                          rng.integers(0, 256, b * k), rng.integers(0, 256, b * k),
                          rng.integers(0, 256, b * k)], 1)[:, None, :]
        rows = np.arange(b * k) % b if k == 1 else np.zeros(k, dtype=np.int64)
        scores = {n: ev.scores_prepared(ev.prepare(images), rows, cands) for n, ev in evaluators.items()}
        rates = {n: max(timed(ev, images, rows, cands, args.seconds) for _ in range(2))
                 for n, ev in evaluators.items()}
        base = rates["full, ONNX Runtime fp32 (default)"]
        for n in evaluators:
            ref = n.replace("bf16", "fp32")
            diff = float(np.max(np.abs(np.asarray(scores[n], np.float64)
                                       - np.asarray(scores[ref], np.float64))))
            lines.append(f"| {label} | {n} | {rates[n]:,.0f} | {rates[n] / base:.2f}x | "
                         f"{rates[n] / rates[ref]:.2f}x | {diff:.1e} |")
        print("\n".join(lines[-len(evaluators):]), flush=True)
    lines += ["", "Command: `ONEPIXEL_ASSETS=../shared/assets .venv/bin/python bench/bench_precision.py "
              + " ".join(argv or sys.argv[1:]) + "`"]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
