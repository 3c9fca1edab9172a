"""Evaluations/s of the confidence-map paths on the MAX model, all in one run on one sub-grid.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_confmap.py [--device auto|cpu|cuda]
        [--step 85] [--pixels 48] [--full-step 85] [--paper] [--out bench/results/confmap-cpu.md]

Rows (each maps the same ``--pixels`` pixels, a fixed sample covering every coordinate parity,
at ``--step``, with :func:`onepixel.confmap.compute_confmap`):

- brute fp32 with the default classifier (ONNX Runtime on CPU, torch on CUDA): the reference;
- brute fp32 / bf16 through the torch classifier (on-device batches on CUDA);
- fast fp32 / bf16: the exact incremental path;
- on CUDA also fast fp16, and brute / fast with TF32 convolutions (the fp32 rows run with TF32
  off).

For each row: evaluations/s, the projected time of the papers' full map (64x64 pixels x 52^3
colours = 575,930,368 evaluations) at that rate, and the max abs difference of its min / max /
mean maps from the reference. ``--full-step K`` also times one complete 64x64 map at step K with
the default method (the CPU target: step 85 under 3 minutes); ``--paper`` runs the papers' full
map (step 5) with the fast path (the H100 target: at most 5 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from onepixel import assets
from onepixel.confmap import ConfmapConfig, compute_confmap, load_confmap_classifier
from onepixel.datasets.images import load_image
from onepixel.models import ModelOptions, load_classifier

PAPER_EVALUATIONS = 64 * 64 * 52**3


def machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (f"{platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, CPU: {platform.processor() or platform.machine()}, "
            f"GPU: {gpu}")


def sample_pixels(n: int, seed: int = 0) -> tuple[tuple[int, int], ...]:
    """``n`` distinct pixels, a quarter of each (x, y) parity, spread over the image."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int]] = []
    for i in range(n):
        px, py = i % 2, (i // 2) % 2
        while True:
            x, y = 2 * int(rng.integers(0, 32)) + px, 2 * int(rng.integers(0, 32)) + py
            if (x, y) not in out:
                out.append((x, y))
                break
    return tuple(out)


@contextlib.contextmanager
def tf32(enabled: bool):
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--step", type=int, default=None,
                        help="colour step of the timed sub-grid (default: 85 on CPU, 5 on CUDA)")
    parser.add_argument("--pixels", type=int, default=None,
                        help="pixels in the sub-grid (default: 48 on CPU, 32 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--full-step", type=int, default=None,
                        help="also time a complete 64x64 map at this step with the default method")
    parser.add_argument("--paper", action="store_true",
                        help="also run the papers' full map (step 5, 575,930,368 evaluations), fast path")
    parser.add_argument("--paper-dtype", default="float32", help="dtype of the --paper run")
    parser.add_argument("--full-brute", action="store_true",
                        help="with --full-step, also time that map by brute force (default classifier)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per row; the best counts")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()

    model = str(assets.ensure("max-mitosis"))
    image = load_image(assets.ensure("true.png"), (64, 64))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    step = args.step or (5 if cuda else 85)
    pixels = sample_pixels(args.pixels or (32 if cuda else 48))
    dev = str(device)

    def config(method: str, subset=pixels, s=step) -> ConfmapConfig:
        return ConfmapConfig(step=s, evaluator=method, pixels=subset, batch_size=args.batch_size,
                             progress=False)

    paths = [("full fp32, default classifier (reference)", "full",
              lambda: load_classifier(model, ModelOptions(device=dev)), False),
             ("full fp32, torch classifier", "full",
              lambda: load_classifier(model, ModelOptions(device=dev, engine="torch")), False)]
    if not args.skip_bf16:
        paths.append(("full bf16, torch classifier", "full",
                      lambda: load_classifier(model, ModelOptions(device=dev, engine="torch",
                                                                  dtype="bfloat16")), False))
    paths.append(("incremental fp32", "incremental",
                  lambda: load_confmap_classifier(model, ModelOptions(device=dev)), False))
    if not args.skip_bf16:
        paths.append(("incremental bf16", "incremental",
                      lambda: load_confmap_classifier(model, ModelOptions(device=dev, dtype="bfloat16")),
                      False))
    if cuda:
        paths += [("incremental fp16", "incremental",
                   lambda: load_confmap_classifier(model, ModelOptions(device=dev, dtype="float16")), False),
                  ("full tf32, torch classifier", "full",
                   lambda: load_classifier(model, ModelOptions(device=dev, engine="torch")), True),
                  ("incremental tf32", "incremental",
                   lambda: load_confmap_classifier(model, ModelOptions(device=dev)), True)]

    rows = []
    reference = None
    for name, method, load, use_tf32 in paths:
        with tf32(use_tf32):
            clf = load()
            compute_confmap(image, clf, config(method, pixels[:2], 255))  # warm-up
            if cuda:
                torch.cuda.synchronize(device)
            rate = 0.0
            for _ in range(max(1, args.repeat)):
                result = compute_confmap(image, clf, config(method))
                rate = max(rate, result.evaluations / result.seconds)
        if reference is None:
            reference = result
        mapped = ~np.isnan(reference.min)
        diff = max(float(np.abs(getattr(result, k)[mapped] - getattr(reference, k)[mapped]).max())
                   for k in ("min", "max", "mean"))
        rows.append((name, result.method, rate, PAPER_EVALUATIONS / rate, diff,
                     rate / rows[0][2] if rows else 1.0))
        print(f"{name:<46} {rate:>12,.0f} eval/s  paper map {PAPER_EVALUATIONS / rate / 3600:8.2f} h  "
              f"max|diff| {diff:.2e}", flush=True)
        del clf

    extra = []
    progress = sys.stderr.isatty()
    if args.full_step:
        clf = load_confmap_classifier(model, ModelOptions(device=dev))
        t0 = time.perf_counter()
        full = compute_confmap(image, clf, ConfmapConfig(step=args.full_step, progress=progress))
        wall = time.perf_counter() - t0
        extra.append(f"Complete 64x64 map, step {args.full_step} ({full.evaluations:,} evaluations), "
                     f"default method ({full.method}): **{wall:.1f} s** wall "
                     f"({full.evaluations / full.seconds:,.0f} eval/s); lowest score "
                     f"{np.nanmin(full.min):.4f}, original {full.original_score:.4f}.")
        print(extra[-1])
        if args.full_brute:
            ref = load_classifier(model, ModelOptions(device=dev))
            t0 = time.perf_counter()
            brute = compute_confmap(image, ref, ConfmapConfig(step=args.full_step, evaluator="full",
                                                              progress=progress))
            wall = time.perf_counter() - t0
            diff = max(float(np.abs(getattr(brute, k) - getattr(full, k)).max())
                       for k in ("min", "max", "mean"))
            extra.append(f"Same map by brute force with the default classifier: **{wall:.1f} s** wall "
                         f"({brute.evaluations / brute.seconds:,.0f} eval/s); max abs difference of "
                         f"the min / max / mean maps from the default method's: {diff:.1e}.")
            print(extra[-1])
    if args.paper:
        clf = load_confmap_classifier(model, ModelOptions(device=dev, dtype=args.paper_dtype))
        t0 = time.perf_counter()
        full = compute_confmap(image, clf, ConfmapConfig(step=5, evaluator="incremental", progress=progress,
                                                         batch_size=args.batch_size))
        wall = time.perf_counter() - t0
        extra.append(f"Papers' full map (step 5, {full.evaluations:,} evaluations), fast path, "
                     f"{args.paper_dtype} (cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}): "
                     f"**{wall:.1f} s** wall; lowest score {np.nanmin(full.min):.4f}.")
        print(extra[-1])

    lines = [f"Machine: {machine(device)}",
             f"Command: python bench/bench_confmap.py {' '.join(sys.argv[1:])}",
             f"Image true.png, sub-grid of {len(pixels)} pixels (every x/y parity) x step {step} "
             f"({len(np.unique(np.r_[np.arange(0, 256, step), 255])) ** 3:,} colours), device {dev}, "
             f"best of {args.repeat} runs per row; "
             "reference = brute fp32 with the default classifier; diff = max abs difference of the "
             "min / max / mean maps from it.", "",
             "| path | method | evaluations/s | vs reference | papers' full map at this rate "
             "| max abs diff vs reference |",
             "|---|---|---:|---:|---:|---:|"]
    for name, method, rate, secs, diff, speedup in rows:
        lines.append(f"| {name} | {method} | {rate:,.0f} | {speedup:.2f}x | {secs / 3600:,.2f} h "
                     f"| {diff:.1e} |")
    if extra:
        lines += ["", *extra]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
