"""Success against cost (issue 15 item 4): the papers' DE, DE without early stopping, DE that
stops on success, and the audit's scan as an attack, on the same small dataset.

The dataset: the 8 rotations/flips of the MAX sample true.png (mitosis, decrease) and false.png
with its vertical flip (normal, increase): 10 real 64x64 patches. Methods, at stated budgets:

- ``de-papers``: the papers' DE (population ``--population``, maxiter ``--maxiter``, tol 0.01:
  early stopping on);
- ``de-no-early-stop``: the same DE with tol 0 (runs every generation up to ``--maxiter``);
- ``de-stop-on-success``: tol 0, stopping once the score crosses the threshold;
- ``scan``: the audit's search without DE's pixel: the exhaustive coarse scan at ``--step``
  (every position x (256/step+1)^3 colours), integer refinement from the ``--top`` best scan
  pixels for ``--rounds`` rounds, the best re-scored on the whole network.

Reported per method and direction: success rate, median best score, median queries per attack
(DE: ``nfev``; scan: the scan's, refinement's and re-scoring evaluations) and the wall time of the
whole method (model loading excluded). The DE methods run as campaigns (``run_campaign``, the
evaluator the policy picks); the scan uses the confidence-map engine and the incremental
evaluator, as ``onepixel audit`` does.

Usage::

    ONEPIXEL_ASSETS=../shared/assets .venv/bin/python bench/bench_attack_strength.py \
        [--population 200] [--maxiter 10] [--step 255] [--top 4] [--rounds 2] [--mitosis 8] \
        [--device cpu] \
        [--out bench/results/attack-strength-cpu.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchutil import emit, machine
from onepixel import assets
from onepixel.attack import AttackConfig
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.audit.search import Candidate, Refiner, energy, scan, scan_candidates, verify
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image, scan_dataset
from onepixel.models import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.runs.schema import judge
from onepixel.scoring.policy import evaluator_for, load_confmap_classifier

GOALS = {"mitosis": "decrease", "normal": "increase"}


def build_dataset(root: Path, mitosis: int = 8) -> Path:
    """Real patches: the first ``mitosis`` of true.png's 8 rotations/flips (mitosis), false.png
    and its flip (normal)."""
    (root / "mitosis").mkdir(parents=True)
    (root / "normal").mkdir(parents=True)
    variants = list(dihedral_variants(load_image(assets.ensure("true.png"))).items())[:mitosis]
    for name, variant in variants:
        Image.fromarray(variant).save(root / "mitosis" / f"true-{name}.png")
    false = load_image(assets.ensure("false.png"))
    Image.fromarray(false).save(root / "normal" / "false.png")
    Image.fromarray(np.ascontiguousarray(false[::-1])).save(root / "normal" / "false-flip.png")
    return root


def de_method(dataset: Path, out: Path, de: DEConfig, stop_on_success: bool,
              device: str) -> tuple[list[dict], float]:
    """One campaign; returns per image ``goal, score, success, queries`` and the wall time."""
    t0 = time.perf_counter()
    run_campaign(CampaignConfig(dataset=dataset, out=out, model_options=ModelOptions(device=device),
                                attack=AttackConfig(de=de, stop_on_success=stop_on_success),
                                progress=False))
    seconds = time.perf_counter() - t0
    with open(out / "attacks.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "attacked"]
    return [{"goal": r["goal"], "score": float(r["attacked_score"]), "success": r["success"] == "1",
             "queries": int(r["nfev"])} for r in rows], seconds


def scan_method(dataset: Path, step: int, top: int, rounds: int, device: str) -> tuple[list[dict], float]:
    """The audit's scan and refinement as an attack (no DE pixel to start from)."""
    classifier = load_confmap_classifier("max-mitosis", ModelOptions(device=device))
    evaluator = evaluator_for(classifier, "auto", updating="deferred")
    out = []
    t0 = time.perf_counter()
    for item in scan_dataset(dataset).items:
        goal = "decrease" if item.positive else "increase"
        image = load_image(item.path, classifier.input_shape)
        cmap = scan(image, classifier, step)
        starts = scan_candidates(cmap, goal, top)
        refiner = Refiner(evaluator, image, goal, cmap)
        refined = refiner.refine([c.vector for c in starts], rounds)
        finalists = list(dict.fromkeys(c.vector for c in refined))
        proven = verify(classifier, image, [Candidate(v[0], v[1], tuple(v[2:]), float("nan"))
                                            for v in finalists])
        best = proven[int(np.argmin(energy(goal, [c.score for c in proven])))]
        out.append({"goal": goal, "score": best.score, "success": judge(goal, best.score)[0],
                    "queries": int(cmap.evaluations) + refiner.evaluations + len(proven)})
    return out, time.perf_counter() - t0


def table(results: dict[str, tuple[list[dict], float, str]], info: str) -> str:
    lines = ["# Success against cost: DE variants and the audit's scan", "", info, "",
             "| method | budget | direction | attacked | success | median best score | "
             "median queries | max queries | wall (s, whole method) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, (rows, seconds, budget) in results.items():
        for label, goal in GOALS.items():
            group = [r for r in rows if r["goal"] == goal]
            if not group:
                continue
            other = "normal" if label == "mitosis" else "mitosis"
            ok = sum(r["success"] for r in group)
            lines.append(
                f"| {method} | {budget} | {label}-to-{other} | {len(group)} | {ok}/{len(group)} "
                f"({100 * ok / len(group):.0f}%) | {np.median([r['score'] for r in group]):.4f} | "
                f"{np.median([r['queries'] for r in group]):,.0f} | "
                f"{max(r['queries'] for r in group):,} | {seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=200, help="DE population (papers: 200)")
    ap.add_argument("--maxiter", type=int, default=10,
                    help="DE generations at most (papers: 100; the default keeps the run short)")
    ap.add_argument("--step", type=int, default=255, help="scan colour step (255: 8 colours)")
    ap.add_argument("--top", type=int, default=4, help="refinement starts from the scan")
    ap.add_argument("--rounds", type=int, default=2, help="refinement rounds at most")
    ap.add_argument("--mitosis", type=int, default=8, choices=range(1, 9), metavar="1..8",
                    help="rotations/flips of true.png to attack (fewer: a quick smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    pop, maxiter = args.population, args.maxiter
    results: dict[str, tuple[list[dict], float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = build_dataset(Path(tmp) / "data", args.mitosis)
        for method, de, stop, budget in (
                ("de-papers", DEConfig(population=pop, maxiter=maxiter), False,
                 f"pop {pop}, maxiter {maxiter}, tol 0.01"),
                ("de-no-early-stop", DEConfig(population=pop, maxiter=maxiter, tol=0.0), False,
                 f"pop {pop}, maxiter {maxiter}, tol 0"),
                ("de-stop-on-success", DEConfig(population=pop, maxiter=maxiter, tol=0.0), True,
                 f"pop {pop}, maxiter {maxiter}, tol 0, stop on success")):
            rows, seconds = de_method(dataset, Path(tmp) / method, de, stop, args.device)
            results[method] = (rows, seconds, budget)
            print(f"{method}: {seconds:.1f} s", file=sys.stderr)
        colours = (255 // args.step + 1) ** 3
        rows, seconds = scan_method(dataset, args.step, args.top, args.rounds, args.device)
        results["scan"] = (rows, seconds, f"step {args.step} ({colours} colours), top {args.top}, "
                                          f"rounds {args.rounds}")
        print(f"scan: {seconds:.1f} s", file=sys.stderr)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info = (f"{args.mitosis + 2} real 64x64 patches ({args.mitosis} of true.png's rotations/flips, "
            f"mitosis-to-normal; false.png and "
            f"its flip, normal-to-mitosis), the built-in MAX model on {args.device}. "
            f"Machine: {machine()}; load average {load:.1f} at the end.")
    emit(table(results, info), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
