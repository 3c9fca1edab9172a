"""Time batched differential evolution against scipy's, problem by problem.

On a cheap vectorisable toy objective (a shifted integer Rastrigin over one pixel's parameters:
row, column in [0, 63] and RGB in [0, 255], a different optimum per problem) this times

* scipy ``differential_evolution(vectorized=True)`` called once per problem (``vectorized``
  forces ``updating='deferred'``), and, on a few problems, scipy's default
  ``updating='immediate'`` without ``vectorized`` (one call per candidate);
* ``onepixel.optimize.de.differential_evolution_batch`` on all problems at once, numpy and torch
  backends, both updating modes,

with the same settings (best1bin, latinhypercube, F=0.5, CR=0.7, tol=0.01, no polish,
integrality), and prints a markdown table: problems/s and the ratio to scipy in the same
updating mode, plus mean ``fun``/``nit`` as a sanity check that the runs are comparable.
The batched runs are preceded by a tiny untimed warm-up (torch's first calls take seconds).
The numpy and torch rows can differ slightly in ``fun``/``nit``: the solver itself is
bit-identical across backends, but this objective's ``cos``/``sum`` are not.

Example::

    python bench/bench_de_vs_scipy.py --problems 64 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import differential_evolution

from onepixel.optimize.de import DEConfig, DEResult, differential_evolution_batch

BOUNDS = [(0, 63), (0, 63), (0, 255), (0, 255), (0, 255)]
HIGH = np.array([b[1] for b in BOUNDS], dtype=np.float64)
D = len(BOUNDS)


def centres(n: int) -> np.ndarray:
    """(n, D) per-problem shift of the Rastrigin optimum, in parameter units."""
    return np.random.default_rng(12345).uniform(-0.25, 0.25, size=(n, D)) * HIGH


def rastrigin_np(X: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Energies (..., N) of parameters X (..., N, D) with shifts c (..., 1, D)."""
    z = (X - c) / HIGH * 10.24 - 5.12
    return 10.0 * D + (z * z - 10.0 * np.cos(2.0 * np.pi * z)).sum(-1)


def rastrigin_torch(X: torch.Tensor, c: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    z = (X - c) / high * 10.24 - 5.12
    return 10.0 * D + (z * z - 10.0 * torch.cos(2.0 * torch.pi * z)).sum(-1)


@dataclass
class Row:
    name: str
    updating: str
    problems: int
    seconds: float
    fun: float
    nit: float

    @property
    def rate(self) -> float:
        return self.problems / self.seconds


def run_scipy(n: int, seeds: list[int], cfg: DEConfig, vectorized: bool) -> Row:
    C = centres(n)
    funs, nits = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        for i in range(n):
            c = C[i]
            if vectorized:
                f: Callable = lambda x, c=c: rastrigin_np(x.T, c)  # noqa: E731 - x is (D, S)
            else:
                f = lambda x, c=c: float(rastrigin_np(x, c))  # noqa: E731 - x is (D,)
            r = differential_evolution(
                f, BOUNDS, strategy="best1bin", popsize=cfg.population // D,
                init="latinhypercube", mutation=cfg.mutation, recombination=cfg.recombination,
                tol=cfg.tol, atol=cfg.atol, maxiter=cfg.maxiter, polish=False,
                integrality=[True] * D, vectorized=vectorized,
                updating="deferred" if vectorized else "immediate", rng=seed * 100003 + i,
            )
            funs.append(r.fun)
            nits.append(r.nit)
    dt = time.perf_counter() - t0
    name = "scipy vectorized=True" if vectorized else "scipy (per candidate)"
    return Row(name, "deferred" if vectorized else "immediate", n * len(seeds), dt,
               float(np.mean(funs)), float(np.mean(nits)))


def run_batch(n: int, seeds: list[int], cfg: DEConfig, backend: str, device: str | None) -> Row:
    C = centres(n)
    if backend == "torch":
        Ct = torch.as_tensor(C, device=device)
        high = torch.as_tensor(HIGH, device=device)

        def objective(idx: np.ndarray, X: torch.Tensor) -> torch.Tensor:
            return rastrigin_torch(X, Ct[torch.as_tensor(idx, device=device)][:, None], high)
    else:

        def objective(idx: np.ndarray, X: np.ndarray) -> np.ndarray:
            return rastrigin_np(X, C[idx][:, None])

    results: list[DEResult] = []
    t0 = time.perf_counter()
    for seed in seeds:
        c = DEConfig(**{**cfg.__dict__, "seed": seed})
        results += differential_evolution_batch(
            objective, BOUNDS, n_problems=n, integrality=[True] * D, config=c, backend=backend,
            device=device if backend == "torch" else None,
        )
    if backend == "torch" and device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    label = "batch numpy" if backend == "numpy" else f"batch torch ({device})"
    return Row(label, cfg.updating, n * len(seeds), dt,
               float(np.mean([r.fun for r in results])), float(np.mean([r.nit for r in results])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=64, help="problems per batch (default 64)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="base seeds; each repeats the whole comparison (default: 0)")
    ap.add_argument("--population", type=int, default=200, help="population (default 200)")
    ap.add_argument("--maxiter", type=int, default=100, help="max generations (default 100)")
    ap.add_argument("--scipy-immediate-problems", type=int, default=4,
                    help="problems for the slow per-candidate scipy run (0 skips it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="torch device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)

    base = DEConfig(population=args.population, maxiter=args.maxiter)
    n = args.problems
    rows: list[Row] = []
    rows.append(run_scipy(n, args.seeds, base, vectorized=True))
    if args.scipy_immediate_problems > 0:
        rows.append(run_scipy(min(n, args.scipy_immediate_problems), args.seeds, base,
                              vectorized=False))
    for updating in ("deferred", "immediate"):
        cfg = DEConfig(**{**base.__dict__, "updating": updating})
        warm = DEConfig(**{**cfg.__dict__, "maxiter": 2})  # untimed: torch's one-off start-up
        run_batch(2, [0], warm, "numpy", None)
        run_batch(2, [0], warm, "torch", args.device)
        rows.append(run_batch(n, args.seeds, cfg, "numpy", None))
        rows.append(run_batch(n, args.seeds, cfg, "torch", args.device))

    scipy_rate = {r.updating: r.rate for r in rows if r.name.startswith("scipy")}
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
          + (f", GPU {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))
    print(f"settings: D={D}, population={args.population}, maxiter={args.maxiter}, "
          f"seeds={args.seeds}, shifted integer Rastrigin\n")
    print("| implementation | updating | problems | seconds | problems/s | vs scipy "
          "(same updating) | mean fun | mean nit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = scipy_rate.get(r.updating)
        ratio = f"{r.rate / ref:.1f}x" if ref else "n/a"
        print(f"| {r.name} | {r.updating} | {r.problems} | {r.seconds:.2f} | {r.rate:.1f} | "
              f"{ratio} | {r.fun:.3f} | {r.nit:.1f} |")


if __name__ == "__main__":
    main()
