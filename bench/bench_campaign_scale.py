"""Whole campaigns at scale: the default ``onepixel attack`` on N patches vs scipy, and peak memory.

Usage::

    # throughput: the default attack on 256, 1,024 and 4,096 patches, scipy's fastest mode on 8
    ONEPIXEL_ASSETS=../shared/assets python bench/bench_campaign_scale.py \
        --sizes 256,1024,4096 --scipy-images 8 --out bench/results/campaign-scale-cpu.md
    # memory: synthetic tiles streamed from disk (--maxiter 1 --popsize 10), then analysis + report
    ONEPIXEL_ASSETS=../shared/assets python bench/bench_campaign_scale.py --memory 10000,100000 \
        --out bench/results/campaign-memory-cpu.md

Each campaign runs in a child process (``--child``), so its peak RSS (``ru_maxrss``) is its own.
The default path is ``run_campaign`` with every default: the papers' settings (population 200,
maxiter 100, immediate updating), ``evaluator="auto"`` (which times the engines on the
campaign's calls: the choice is reported), images attacked ``batch_images`` at a time. The
scipy reference is ``scipy.optimize.differential_evolution(..., vectorized=True)`` (deferred
updating, its fastest mode) on one image at a time through the full network on ONNX Runtime,
measured in the same run. Patches: the 8 rotations/flips of the MAX sample ``true.png`` under
distinct names (each gets its own DE stream). Memory tiles: ``false.png``-like normal tiles made
distinct by a seeded +-2 noise, written as PNG files.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchutil import emit, machine


def write_patches(folder: Path, n: int) -> None:
    """``n`` mitosis patches (true.png's 8 rotations/flips, repeated under distinct names)."""
    from onepixel import assets
    from onepixel.datasets.demo import dihedral_variants
    from onepixel.datasets.images import load_image

    variants = list(dihedral_variants(load_image(assets.ensure("true.png"))).values())
    (folder / "mitosis").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(variants[i % 8]).save(folder / "mitosis" / f"p{i:06d}.png")


def write_tiles(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` distinct normal tiles: false.png plus seeded +-2 noise (scores stay <= 0.1)."""
    from onepixel import assets
    from onepixel.datasets.images import load_image

    base = load_image(assets.ensure("false.png")).astype(np.int16)
    rng = np.random.default_rng(seed)
    (folder / "normal").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        noisy = np.clip(base + rng.integers(-2, 3, size=base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / "normal" / f"t{i:07d}.png", compress_level=1)


def child(args: argparse.Namespace) -> None:
    """One campaign (and, in memory mode, its analysis and report); prints a JSON line."""
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.optimize.de import DEConfig

    attack = AttackConfig() if not args.memory_child else AttackConfig(
        de=DEConfig(population=10, maxiter=1))
    out = Path(args.run)
    t0 = time.perf_counter()
    summary = run_campaign(CampaignConfig(dataset=args.dataset, out=out, attack=attack, progress=False))
    seconds = time.perf_counter() - t0
    config = json.loads((out / "config.json").read_text())
    record = {"seconds": seconds, "attacked": sum(d["attacked"] for d in summary["directions"].values()),
              "engine": config.get("evaluator"), "engine_choice": config.get("engine_choice"),
              "batch_images": config.get("batch_images"),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.memory_child:
        from onepixel.report import analyze_run, write_report

        t0 = time.perf_counter()
        analyze_run(out)
        record["analysis_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(out)
        record["report_seconds"] = time.perf_counter() - t0
        record["peak_rss_mb_with_report"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(record), flush=True)


def run_child(dataset: Path, run: Path, memory: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--dataset", str(dataset), "--run", str(run)]
    if memory:
        cmd.append("--memory-child")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"campaign failed:\n{proc.stderr[-3000:]}")


def scipy_rate(n: int) -> float:
    """Attacks/s of scipy's vectorised (deferred) DE, one image at a time, full network (ORT)."""
    from bench_attack import scipy_attack
    from onepixel import assets
    from onepixel.datasets.demo import dihedral_variants
    from onepixel.datasets.images import load_image
    from onepixel.models import ModelOptions
    from onepixel.scoring.policy import load_attack_evaluator

    variants = list(dihedral_variants(load_image(assets.ensure("true.png"))).values())
    ev = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu"), "full", "deferred")
    t0 = time.perf_counter()
    for i in range(n):
        scipy_attack(ev, variants[i % 8], seed=i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="patches per default campaign")
    parser.add_argument("--scipy-images", type=int, default=8)
    parser.add_argument("--memory", default="", help="synthetic tiles per memory campaign, e.g. 10000,100000")
    parser.add_argument("--work", default=None, help="folder for datasets and RUNs (default: a temp dir)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="onepixel-scale-"))
    lines = ["Machine: " + machine() + ".", ""]
    if args.memory:
        lines += ["Memory: synthetic normal tiles streamed from disk, `--maxiter 1 --popsize 10`; "
                  "peak RSS of the campaign's process, then analysis and report of the RUN.", "",
                  "| tiles | campaign s | attacked | engine | peak RSS (MB) | analysis s | report s | "
                  "peak RSS with report (MB) |", "|---:|---:|---:|---|---:|---:|---:|---:|"]
        for n in [int(v) for v in args.memory.split(",") if v]:
            data = work / f"tiles-{n}"
            if not (data / "normal").is_dir():
                write_tiles(data, n)
            r = run_child(data, work / f"mem-run-{n}", memory=True)
            lines.append(f"| {n:,} | {r['seconds']:.0f} | {r['attacked']} | {r['engine']} | "
                         f"{r['peak_rss_mb']:.0f} | {r['analysis_seconds']:.1f} | "
                         f"{r['report_seconds']:.1f} | {r['peak_rss_mb_with_report']:.0f} |")
            print(lines[-1], flush=True)
    sizes = [int(v) for v in args.sizes.split(",") if v]
    if sizes:
        base = scipy_rate(args.scipy_images)
        print(f"scipy: {base:.3f} attacks/s on {args.scipy_images} images", flush=True)
        lines += ["", f"Throughput: the default attack (papers' settings, evaluator auto) vs scipy's "
                  f"vectorised deferred DE on ONNX Runtime ({args.scipy_images} images: "
                  f"{base:.3f} attacks/s), same run.", "",
                  "| patches | seconds | attacks/s | vs scipy | engine (auto's choice, s per candidate) | "
                  "batch | peak RSS (MB) |", "|---:|---:|---:|---:|---|---:|---:|"]
        for n in sizes:
            data = work / f"patches-{n}"
            if not (data / "mitosis").is_dir():
                write_patches(data, n)
            r = run_child(data, work / f"run-{n}", memory=False)
            rate = n / r["seconds"]
            choice = r.get("engine_choice") or {}
            why = ", ".join(f"{k} {v * 1e6:.0f} us"
                            for k, v in choice.get("seconds_per_candidate", {}).items())
            lines.append(f"| {n:,} | {r['seconds']:.0f} | {rate:.3f} | {rate / base:.2f}x | "
                         f"{r['engine']} ({why}) | {r['batch_images']} | {r['peak_rss_mb']:.0f} |")
            print(lines[-1], flush=True)
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
