"""Immediate updating's call shape: one candidate per image, B images per call. Evaluations/s of
the full network (ONNX Runtime) and the incremental evaluator at that shape, in one run.

This is the measurement behind issue 13's item 9: whether ``auto`` should switch immediate-mode
campaigns of many images to the incremental evaluator. Each evaluator prepares its base images
once (as an attack does) and then scores one random pixel on each of B images per call, for
``--seconds`` per row, twice interleaved; the better run counts.

Usage::

    ONEPIXEL_ASSETS=../shared/assets .venv/bin/python bench/bench_immediate_evaluators.py \
        [--images 64,256] [--seconds 4] [--out bench/results/immediate-evaluators-cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image

from benchutil import emit, machine
from onepixel import assets
from onepixel.datasets.demo import dihedral_variants
from onepixel.models import ModelOptions
from onepixel.scoring.policy import load_attack_evaluator


def rate(evaluator, images: np.ndarray, seconds: float, rng: np.random.Generator) -> float:
    """Evaluations/s of ``scores_prepared`` with one random pixel per image per call."""
    b = len(images)

    def candidates() -> np.ndarray:
        return np.stack([rng.integers(0, 64, b), rng.integers(0, 64, b), rng.integers(0, 256, b),
                         rng.integers(0, 256, b), rng.integers(0, 256, b)], 1)[:, None, :]

    prepared = evaluator.prepare(images)
    rows = np.arange(b)
    evaluator.scores_prepared(prepared, rows, candidates())
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        evaluator.scores_prepared(prepared, rows, candidates())
        n += b
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default="64,256")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    image = np.asarray(Image.open(assets.ensure("true.png")).convert("RGB"))
    variants = np.stack(list(dihedral_variants(image).values()))
    rng = np.random.default_rng(0)
    options = ModelOptions(device="cpu")
    evaluators = {kind: load_attack_evaluator("max-mitosis", options, kind, "immediate", 1)
                  for kind in ("full", "incremental")}
    lines = ["# Immediate updating's call shape: full network against the incremental evaluator", "",
             f"Machine: {machine()}.", "",
             "| images per call (1 candidate each) | full evals/s | incremental evals/s "
             "| incremental / full |",
             "|---:|---:|---:|---:|"]
    for b in [int(v) for v in args.images.split(",")]:
        images = variants[np.arange(b) % len(variants)]
        best = {k: max(rate(ev, images, args.seconds, rng) for _ in range(2))
                for k, ev in evaluators.items()}
        lines.append(f"| {b} | {best['full']:,.0f} | {best['incremental']:,.0f} | "
                     f"{best['incremental'] / best['full']:.2f}x |")
    lines += ["", "Command: `ONEPIXEL_ASSETS=../shared/assets .venv/bin/python "
              "bench/bench_immediate_evaluators.py " + " ".join(argv or sys.argv[1:]) + "`"]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
