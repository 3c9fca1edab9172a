"""Attacks/s of onepixel's batched attack vs a scipy reference, same model backend, one process.

Usage::

    ONEPIXEL_ASSETS=../shared/assets python bench/bench_attack.py [--images 64]
        [--scipy-images 8] [--device cpu] [--out bench/results/attack-cpu.md]

The images are real mitosis patches: the 8 rotations/flips of the MAX sample true.png, each
repeated under distinct names (so each gets its own DE stream). Settings are the papers'
(population 200, maxiter 100, F 0.5, CR 0.7, tol 0.01). The scipy reference is
``scipy.optimize.differential_evolution(..., vectorized=True)`` (which implies deferred
updating) on one image at a time, scoring through the very same classifier object.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from scipy.optimize import differential_evolution

from benchutil import emit
from onepixel import assets
from onepixel.attack import AttackConfig, OnePixelAttack
from onepixel.data import load_image
from onepixel.de import DEConfig
from onepixel.demo_dataset import dihedral_variants
from onepixel.evaluate import HostEvaluator, make_evaluator
from onepixel.models import ModelOptions, load_classifier

BOUNDS = [(0, 63), (0, 63), (0, 255), (0, 255), (0, 255)]


def scipy_attack(classifier, image: np.ndarray, seed: int):
    """The papers' attack, one image, scipy's solver; returns (result, evaluations)."""
    evaluator = HostEvaluator(classifier)

    def energy(v: np.ndarray) -> np.ndarray:  # v: (5, S) in vectorized mode
        pixels = np.asarray(v).T.astype(np.int64)[None]
        return evaluator.scores(image[None], pixels)[0]

    res = differential_evolution(energy, BOUNDS, strategy="best1bin", popsize=40,
                                 init="latinhypercube", mutation=0.5, recombination=0.7, tol=0.01,
                                 atol=0, maxiter=100, polish=False, integrality=[True] * 5,
                                 seed=seed, vectorized=True)
    return res, evaluator.n_evaluations


def time_model_calls(evaluator) -> dict[str, float]:
    """Wrap the evaluator's scoring methods in place to add up the seconds spent in them."""
    spent = {"seconds": 0.0}
    cuda = torch.cuda.is_available()
    for name in ("scores", "scores_tensor"):
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


def raw_throughput(classifier, images: np.ndarray, seconds: float = 3.0) -> float:
    """Images/s of plain batched ``classifier.scores`` on ``images`` (no DE, no perturbation)."""
    classifier.scores(images)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        classifier.scores(images)
        done += len(images)
    return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images attacked at once")
    parser.add_argument("--scipy-images", type=int, default=8,
                        help="images for the scipy reference (8 = one per rotation/flip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--modes", default="immediate,deferred")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    variants = list(dihedral_variants(load_image(assets.ensure("true.png"))).values())
    images = np.stack([variants[i % 8] for i in range(args.images)])
    classifier = load_classifier("max-mitosis", ModelOptions(device=args.device, engine=args.engine))
    lines = []

    t0 = time.perf_counter()
    ref = [scipy_attack(classifier, images[i], seed=i) for i in range(args.scipy_images)]
    scipy_s = time.perf_counter() - t0
    scipy_rate = args.scipy_images / scipy_s
    ref_evals = sum(n for _, n in ref)
    lines.append(("scipy differential_evolution, vectorized (deferred), 1 image at a time",
                  args.scipy_images, scipy_s, scipy_rate, ref_evals / scipy_s,
                  np.mean([r.fun for r, _ in ref]), np.mean([r.nit for r, _ in ref])))
    print(f"scipy: {scipy_rate:.3f} attacks/s", flush=True)

    raw = raw_throughput(classifier, images)
    print(f"raw batched model throughput: {raw:,.0f} images/s", flush=True)
    for mode in args.modes.split(","):
        for memoize in (True, False):
            evaluator = make_evaluator(classifier)
            in_model = time_model_calls(evaluator)
            attack = OnePixelAttack(evaluator, AttackConfig(de=DEConfig(updating=mode),
                                                            memoize=memoize))
            t0 = time.perf_counter()
            results = attack.run(images, ["decrease"] * len(images), list(range(len(images))))
            seconds = time.perf_counter() - t0
            rate = len(images) / seconds
            name = f"onepixel {mode}, {len(images)} images at once" + (", memo" if memoize else "")
            name += f"; DE bookkeeping {100 * (1 - in_model['seconds'] / seconds):.0f}% of the time"
            lines.append((name, len(images), seconds, rate, evaluator.n_evaluations / seconds,
                          np.mean([r.fun for r in results]), np.mean([r.nit for r in results])))
            print(f"{name}: {rate:.3f} attacks/s ({rate / scipy_rate:.2f}x)", flush=True)
            if not isinstance(evaluator, HostEvaluator):
                break  # memoisation applies to the host evaluator only

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    header = [
        f"Machine: {platform.platform()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, GPU: {gpu}; model "
        f"{type(classifier).__name__} on {args.device}; raw batched model throughput in the same "
        f"run: {raw:,.0f} images/s (batches of {len(images)}).",
        "Papers' settings (population 200, maxiter 100, F 0.5, CR 0.7, tol 0.01), real mitosis "
        "patches (rotations/flips of true.png).", "",
        "| run | images | seconds | attacks/s | vs scipy | model evals/s | mean best score "
        "| mean generations |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [f"| {n} | {k} | {s:.1f} | {r:.3f} | {r / scipy_rate:.2f}x | {e:,.0f} | {f:.3f} | {it:.1f} |"
            for n, k, s, r, e, f, it in lines]
    table = "\n".join(header + rows)
    emit(table, args.out)


if __name__ == "__main__":
    main()
