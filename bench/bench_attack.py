"""Attacks/s of onepixel's batched attack vs scipy references, same model, one process.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_attack.py [--images 64]
        [--scipy-images 32] [--device cpu] [--evaluators full,incremental]
        [--modes immediate,deferred] [--out bench/results/attack-cpu.md]

The images are real mitosis patches: the 8 rotations/flips of the MAX sample true.png, each
repeated under distinct names (so each gets its own DE stream). Settings are the papers'
(population 200, maxiter 100, F 0.5, CR 0.7, tol 0.01). Each scipy reference is
``scipy.optimize.differential_evolution(..., vectorized=True)`` (which implies deferred
updating) on one image at a time, scoring through one of onepixel's evaluators:

- ``full``: the whole network per candidate, on the default classifier (ONNX Runtime on CPU,
  torch on CUDA);
- ``incremental``: onepixel's exact incremental evaluator (only what the pixel changes).

Every onepixel run uses the attack's defaults (memo of scored pixels on), 64 images at once;
with ``--auto-images N`` (N >= 1) one more run attacks N images the way a campaign's defaults
do (``--evaluator auto``, all N images at once, immediate updating: the papers' mode), which
for N >= 256 on CPU is the incremental evaluator with one candidate per image per call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import differential_evolution

from benchutil import emit, machine
from onepixel import assets
from onepixel.attack import AttackConfig, OnePixelAttack
from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image
from onepixel.optimize.de import DEConfig
from onepixel.scoring.policy import load_attack_evaluator

BOUNDS = [(0, 63), (0, 63), (0, 255), (0, 255), (0, 255)]


def scipy_attack(evaluator, image: np.ndarray, seed: int):
    """The papers' attack on one image with scipy's solver; returns (result, evaluations)."""
    before = evaluator.n_evaluations
    if hasattr(evaluator, "prepare"):
        prepared = evaluator.prepare(image[None])

        def score(pixels):
            return evaluator.scores_prepared(prepared, np.zeros(1, np.int64), pixels)[0]
    else:
        def score(pixels):
            return evaluator.scores(image[None], pixels)[0]

    def energy(v: np.ndarray) -> np.ndarray:  # v: (5, S) in vectorized mode
        return score(np.asarray(v).T.astype(np.int64)[None])

    res = differential_evolution(energy, BOUNDS, strategy="best1bin", popsize=40,
                                 init="latinhypercube", mutation=0.5, recombination=0.7, tol=0.01,
                                 atol=0, maxiter=100, polish=False, integrality=[True] * 5,
                                 seed=seed, vectorized=True)
    return res, evaluator.n_evaluations - before


def time_scoring(evaluator) -> dict[str, float]:
    """Wrap the evaluator's scoring methods in place to add up the seconds spent in them."""
    spent = {"seconds": 0.0}
    cuda = torch.cuda.is_available()
    for name in ("scores", "scores_tensor", "scores_prepared"):
        inner = getattr(evaluator, name, None)
        if inner is None:
            continue

        def timed(*args, _inner=inner, **kwargs):
            t0 = time.perf_counter()
            out = _inner(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            spent["seconds"] += time.perf_counter() - t0
            return out

        setattr(evaluator, name, timed)
    return spent


def raw_throughput(evaluator, images: np.ndarray, seconds: float = 3.0) -> float:
    """Candidates/s of the evaluator alone: one random pixel per image, batches of len(images)."""
    rng = np.random.default_rng(0)
    cand = np.concatenate([rng.integers(0, 64, (len(images), 1, 2)),
                           rng.integers(0, 256, (len(images), 1, 3))], axis=2)
    rows = np.arange(len(images))
    if hasattr(evaluator, "prepare"):
        prepared = evaluator.prepare(images)

        def call():
            evaluator.scores_prepared(prepared, rows, cand)
    else:
        def call():
            evaluator.scores(images, cand)
    call()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        done += len(images)
    return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images attacked at once")
    parser.add_argument("--scipy-images", type=int, default=32,
                        help="images per scipy reference (32 = four per rotation/flip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluators", default="full,incremental")
    parser.add_argument("--modes", default="immediate,deferred")
    parser.add_argument("--auto-images", type=int, default=0,
                        help="also run the campaign default (evaluator auto, immediate) on this "
                             "many images at once (0: no)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    variants = list(dihedral_variants(load_image(assets.ensure("true.png"))).values())
    images = np.stack([variants[i % 8] for i in range(args.images)])
    from onepixel.models import ModelOptions

    options = ModelOptions(device=args.device)
    kinds = args.evaluators.split(",")
    evaluators = {kind: load_attack_evaluator("max-mitosis", options, kind, "deferred")
                  for kind in kinds}
    raw = {kind: raw_throughput(ev, images[:64]) for kind, ev in evaluators.items()}
    for kind, rate in raw.items():
        print(f"{kind}: {rate:,.0f} candidates/s alone (batches of 64)", flush=True)

    lines, scipy_rate = [], {}
    for kind, ev in evaluators.items():
        t0 = time.perf_counter()
        ref = [scipy_attack(ev, images[i], seed=i) for i in range(args.scipy_images)]
        seconds = time.perf_counter() - t0
        scipy_rate[kind] = args.scipy_images / seconds
        evals = sum(n for _, n in ref)
        lines.append((f"scipy, vectorized (deferred), 1 image at a time, {kind} evaluator",
                      args.scipy_images, seconds, scipy_rate[kind], evals / seconds,
                      evals / args.scipy_images, np.mean([r.fun for r, _ in ref]),
                      np.mean([r.nit for r, _ in ref]), None))
        print(f"scipy ({kind}): {scipy_rate[kind]:.3f} attacks/s", flush=True)
    base = scipy_rate[kinds[0]]

    for kind in kinds:
        for mode in args.modes.split(","):
            ev = load_attack_evaluator("max-mitosis", options, kind, mode)
            in_scoring = time_scoring(ev)
            attack = OnePixelAttack(ev, AttackConfig(de=DEConfig(updating=mode)))
            t0 = time.perf_counter()
            results = attack.run(images, ["decrease"] * len(images), list(range(len(images))))
            seconds = time.perf_counter() - t0
            rate = len(images) / seconds
            bookkeeping = 1 - in_scoring["seconds"] / seconds
            lines.append((f"onepixel {mode}, {len(images)} images at once, {kind} evaluator",
                          len(images), seconds, rate, ev.n_evaluations / seconds,
                          ev.n_evaluations / len(images), np.mean([r.fun for r in results]),
                          np.mean([r.nit for r in results]), bookkeeping))
            print(f"{lines[-1][0]}: {rate:.3f} attacks/s ({rate / base:.2f}x)", flush=True)

    if args.auto_images:
        n = args.auto_images
        auto_images = np.stack([variants[i % 8] for i in range(n)])
        ev = load_attack_evaluator("max-mitosis", options, "auto", "immediate", call_shape=(n, 1))
        in_scoring = time_scoring(ev)
        attack = OnePixelAttack(ev, AttackConfig(de=DEConfig(updating="immediate")))
        t0 = time.perf_counter()
        results = attack.run(auto_images, ["decrease"] * n, list(range(n)))
        seconds = time.perf_counter() - t0
        rate = n / seconds
        lines.append((f"onepixel immediate, campaign default for {n} images (all at once, "
                      f"{ev_name(ev)})", n, seconds, rate, ev.n_evaluations / seconds,
                      ev.n_evaluations / n, np.mean([r.fun for r in results]),
                      np.mean([r.nit for r in results]), 1 - in_scoring["seconds"] / seconds))
        print(f"{lines[-1][0]}: {rate:.3f} attacks/s ({rate / base:.2f}x)", flush=True)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    header = [
        "Machine: " + machine(f"torch {torch.__version__}", f"{torch.get_num_threads()} threads",
                              f"GPU: {gpu}", f"device {args.device}") + ".",
        "Evaluators alone in the same run (one random pixel on each of 64 images per call): "
        + ", ".join(f"{k} {ev_name(evaluators[k])} {r:,.0f} candidates/s" for k, r in raw.items())
        + ".",
        "Papers' settings (population 200, maxiter 100, F 0.5, CR 0.7, tol 0.01), real mitosis "
        "patches (rotations/flips of true.png). 'vs scipy' columns divide by each scipy "
        "reference's attacks/s. 'evals' counts model evaluations actually run (onepixel's memo "
        "skips pixels already scored for that image).", "",
        "| run | images | seconds | attacks/s | " + " | ".join(f"vs scipy ({k})" for k in kinds)
        + " | evals/s | evals per attack | mean best score | mean generations | DE bookkeeping |",
        "|---|" + "---:|" * (8 + len(kinds))]
    rows = []
    for n, k, s, r, e, per, f, it, book in lines:
        ratios = " | ".join(f"{r / scipy_rate[kind]:.2f}x" for kind in kinds)
        book_s = "" if book is None else f"{100 * book:.0f}%"
        rows.append(f"| {n} | {k} | {s:.1f} | {r:.3f} | {ratios} | {e:,.0f} | {per:,.0f} | "
                    f"{f:.3f} | {it:.1f} | {book_s} |")
    emit("\n".join(header + rows), args.out)


def ev_name(evaluator) -> str:
    """The evaluator and the classifier behind it, e.g. 'HostEvaluator(OnnxClassifier)'."""
    return f"{type(evaluator).__name__}({type(evaluator.classifier).__name__})"


if __name__ == "__main__":
    main()
