"""Tests of onepixel.optimize.de: batched differential evolution vs scipy.optimize.differential_evolution."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy.optimize import differential_evolution
from scipy.stats import chisquare, ks_2samp, qmc

from onepixel.optimize.de import (
    INITS,
    MESSAGE_CALLBACK,
    MESSAGE_MAXITER,
    MESSAGE_SUCCESS,
    STRATEGIES,
    BatchDESolver,
    DEConfig,
    DEResult,
    StopCallback,
    _distinct_picks,
    differential_evolution_batch,
)

BOUNDS = [(0, 63)] * 2 + [(0, 255)] * 3  # pixel (row, col) + RGB, like the one-pixel attack
INTEGRALITY = [True] * 5
HIGH = np.array([63.0, 63.0, 255.0, 255.0, 255.0])
D = len(BOUNDS)
P_STAT = 50  # population of the statistical tests (scipy popsize = 10)
N_SEEDS = 60  # runs per side of the statistical tests
MAXITER_STAT = 60
P_ALPHA = 1e-3


def _z(x: np.ndarray) -> np.ndarray:
    """Map pixel parameters to the Rastrigin domain [-5.12, 5.12]."""
    return x / HIGH * 10.24 - 5.12


def sphere(x: np.ndarray) -> np.ndarray:
    """Integer sphere with an offset, so that the relative tolerance stops it early."""
    return 100.0 + (_z(x) ** 2).sum(-1)


def rastrigin(x: np.ndarray) -> np.ndarray:
    """Rastrigin on the integer grid: multimodal, often stops in a local minimum."""
    z = _z(x)
    return 10.0 * D + (z**2 - 10.0 * np.cos(2.0 * np.pi * z)).sum(-1)


OBJECTIVES = {"sphere": sphere, "rastrigin": rastrigin}


def _scipy_runs(f, updating: str, n: int, population: int = P_STAT, **options) -> np.ndarray:
    """(n, 3) fun, nit, nfev of scipy's differential_evolution over seeds 0..n-1.

    ``options``: strategy, init or mutation instead of best1bin, latinhypercube, 0.5.
    """
    options = {"strategy": "best1bin", "init": "latinhypercube", "mutation": 0.5, **options}
    out = []
    for seed in range(n):
        r = differential_evolution(
            f, BOUNDS, popsize=population // D, recombination=0.7, tol=0.01, atol=0,
            polish=False, integrality=INTEGRALITY, updating=updating, rng=seed,
            maxiter=MAXITER_STAT, **options,
        )
        out.append((r.fun, r.nit, r.nfev))
    return np.array(out, dtype=float)


def _batch_runs(f, updating: str, n: int, population: int = P_STAT, seed: int = 1000,
                **overrides: object) -> np.ndarray:
    """(n, 3) fun, nit, nfev of n problems solved in one batch."""
    cfg = DEConfig(population=population, maxiter=MAXITER_STAT, updating=updating, seed=seed,
                   **overrides)
    res = differential_evolution_batch(lambda idx, X: f(X), BOUNDS, n_problems=n,
                                       integrality=INTEGRALITY, config=cfg)
    return np.array([(r.fun, r.nit, r.nfev) for r in res], dtype=float)


def _pvalues(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [float(ks_2samp(a[:, i], b[:, i]).pvalue) for i in range(3)]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"population": 4}, "population must be an integer >= 5"),
        ({"population": 10.0}, "population must be an integer"),
        ({"maxiter": -1}, "maxiter must be a non-negative integer"),
        ({"mutation": 2.0}, r"mutation must be a float in \[0, 2\)"),
        ({"mutation": -0.1}, r"mutation must be a float in \[0, 2\)"),
        ({"mutation": (0.5,)}, r"or a \(min, max\) pair of floats"),
        ({"mutation": (0.5, [1.0])}, r"or a \(min, max\) pair of floats"),
        ({"mutation": np.array(0.5)}, r"or a \(min, max\) pair of floats"),
        ({"mutation": (0.5, 2.0)}, r"0 <= min <= max < 2 for dithering"),
        ({"mutation": (-0.1, 0.5)}, r"0 <= min <= max < 2 for dithering"),
        ({"mutation": (0.5, math.nan)}, r"0 <= min <= max < 2 for dithering"),
        ({"mutation": (0.5, "1")}, r"0 <= min <= max < 2 for dithering"),
        ({"mutation": "0.5"}, r"mutation must be a float in \[0, 2\)"),
        ({"mutation": (1.0, 0.5)}, r"has min > max; give the dithering range in order: \(0.5, 1.0\)"),
        ({"strategy": "best3bin"}, "strategy must be one of best1bin, rand1bin"),
        ({"strategy": None}, "strategy must be one of"),
        ({"strategy": "rand2bin", "population": 5}, r"population must be >= 6 with strategy='rand2bin'"),
        ({"strategy": "rand2exp", "population": 5}, r"population must be >= 6 with strategy='rand2exp'"),
        ({"init": "lhs"}, "init must be one of latinhypercube, random, sobol, halton"),
        ({"recombination": 1.5}, r"recombination must be a probability in \[0, 1\]"),
        ({"recombination": -0.01}, r"recombination must be a probability in \[0, 1\]"),
        ({"tol": -1.0}, "tol must be a finite float >= 0"),
        ({"atol": math.inf}, "atol must be a finite float >= 0"),
        ({"updating": "lazy"}, "updating must be one of"),
        ({"seed": -3}, "seed must be a non-negative integer"),
        ({"widen_integer_bounds": "yes"}, "widen_integer_bounds must be a bool"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DEConfig(**kwargs)


def _zero(idx, X):
    return X.sum(-1) * 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bounds": [(5, 1)]}, r"bounds\[0\] = \(5.0, 1.0\) has low > high"),
        ({"bounds": [(0, 1, 2)]}, r"bounds must have shape \(D, 2\)"),
        ({"bounds": []}, r"bounds must have shape \(D, 2\)"),
        ({"bounds": [(0, math.inf)]}, "bounds must be finite"),
        ({"bounds": "abc"}, "bounds must"),
        ({"integrality": [True, False, True]}, "integrality must be a bool or a sequence of 2"),
        ({"bounds": [(0.2, 0.8), (0, 1)], "integrality": True}, "contain no integer"),
        ({"backend": "jax"}, "backend must be one of"),
        ({"device": "cpu"}, "device is only meaningful with backend='torch'"),
        ({"n_problems": 0}, "n_problems must be a positive integer"),
        ({"problem_ids": [0, 1, 2]}, "problem_ids must be 2 non-negative integers"),
        ({"problem_ids": [0, -1]}, "problem_ids must be 2 non-negative integers"),
        ({"config": {"population": 10}}, "config must be a DEConfig"),
    ],
)
def test_solver_validation(kwargs: dict, match: str) -> None:
    args = {"bounds": [(0, 1), (0, 1)], "n_problems": 2, **kwargs}
    bounds = args.pop("bounds")
    with pytest.raises(ValueError, match=match):
        BatchDESolver(_zero, bounds, **args)


def test_objective_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"objective returned shape \(2, 10, 1\), expected"):
        differential_evolution_batch(lambda idx, X: X[..., :1], [(0, 1)] * 2, n_problems=2,
                                     config=DEConfig(population=10))


# ----------------------------------------------------------------------------- vs scipy
@pytest.mark.slow
@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize("name", ["sphere", "rastrigin"])
def test_distribution_matches_scipy(name: str, updating: str) -> None:
    f = OBJECTIVES[name]
    ref = _scipy_runs(f, updating, N_SEEDS)
    ours = _batch_runs(f, updating, N_SEEDS)
    # the comparison must be non-degenerate to have any power
    assert len(np.unique(ref[:, 0])) >= 10
    assert len(np.unique(ref[:, 1])) >= 3
    # nfev counts like scipy (without vectorized): P for the initial population + P per generation
    np.testing.assert_array_equal(ref[:, 2], P_STAT * (ref[:, 1] + 1))
    np.testing.assert_array_equal(ours[:, 2], P_STAT * (ours[:, 1] + 1))
    p_fun, p_nit, p_nfev = _pvalues(ref, ours)
    assert min(p_fun, p_nit, p_nfev) > P_ALPHA, (p_fun, p_nit, p_nfev)
    # the same test detects deliberately wrong variants
    for wrong in ({"mutation": 0.9}, {"recombination": 0.1}):
        bad = _batch_runs(f, updating, N_SEEDS, seed=2000, **wrong)
        assert min(_pvalues(ref, bad)) < P_ALPHA, wrong


@pytest.mark.slow
def test_updating_modes_are_distinguished() -> None:
    """The statistical test also has power against mixing up the two updating modes."""
    ref = _scipy_runs(sphere, "immediate", N_SEEDS)
    other = _batch_runs(sphere, "deferred", N_SEEDS)
    assert _pvalues(ref, other)[1] < P_ALPHA


@pytest.mark.slow
def test_distribution_matches_scipy_paper_population() -> None:
    """The papers' population (200 = popsize 40 x D 5), fewer seeds."""
    n = 30
    ref = _scipy_runs(sphere, "immediate", n, population=200)
    ours = _batch_runs(sphere, "immediate", n, population=200)
    assert min(_pvalues(ref, ours)) > P_ALPHA


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_earliest_stop_and_counts_match_scipy(updating: str) -> None:
    """A flat objective converges at the first check, which comes after generation 1."""
    P = 20
    ref = differential_evolution(lambda x: 7.0, [(0, 1)] * 2, popsize=P // 2, polish=False,
                                 updating=updating, rng=0)
    (ours,) = differential_evolution_batch(lambda idx, X: X.sum(-1) * 0.0 + 7.0,
                                           [(0, 1)] * 2, n_problems=1,
                                           config=DEConfig(population=P, updating=updating))
    assert (ours.nit, ours.nfev, ours.converged, ours.message) == (
        ref.nit, ref.nfev, ref.success, ref.message) == (1, 2 * P, True, MESSAGE_SUCCESS)
    np.testing.assert_array_equal(ours.history, [7.0, 7.0])


@pytest.mark.parametrize("maxiter", [0, 3])
def test_maxiter_matches_scipy(maxiter: int) -> None:
    P = 20
    f = lambda x: float(np.sum(x))  # noqa: E731 - never converges in 3 generations
    ref = differential_evolution(f, [(0, 100)] * 2, popsize=P // 2, polish=False,
                                 maxiter=maxiter, rng=0)
    (ours,) = differential_evolution_batch(lambda idx, X: X.sum(-1), [(0, 100)] * 2,
                                           n_problems=1,
                                           config=DEConfig(population=P, maxiter=maxiter))
    assert (ours.nit, ours.nfev, ours.converged, ours.message) == (
        ref.nit, ref.nfev, ref.success, ref.message) == (
        maxiter, P * (maxiter + 1), False, MESSAGE_MAXITER)
    assert ours.history.shape == (maxiter + 1,)


def _initial_population(bounds, P: int, **config) -> np.ndarray:
    """(P, D) parameter values of one problem's initial population (maxiter=0)."""
    seen = []

    def objective(idx, X):
        seen.append(X.copy())
        return X.sum(-1) * 0.0

    differential_evolution_batch(objective, bounds, n_problems=1,
                                 integrality=[True] * len(bounds),
                                 config=DEConfig(population=P, maxiter=0, **config))
    (init,) = seen
    return init[0]


def _counts(column: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(column, return_counts=True)
    return dict(zip(values.astype(int).tolist(), counts.tolist(), strict=True))


def test_integer_scaling_matches_scipy() -> None:
    """scipy 1.17 scales integer parameters over the original bounds (its widened limits come
    too late to matter), so with a Latin hypercube of 400 members the edge integers of (0, 3)
    get ~half the count of interior ones; we match that up to +-1 (the hypercube draws differ),
    except that fractional bounds are clipped (scipy returns 0 and 5 for (0.3, 4.7))."""
    P = 400
    bounds = [(0, 3), (0.3, 4.7)]
    ref = differential_evolution(lambda x: 0.0, bounds, popsize=P // 2, polish=False,
                                 maxiter=0, integrality=[True, True], rng=0).population
    assert _counts(ref[:, 0]) == {0: 66, 1: 134, 2: 133, 3: 67}
    assert set(_counts(ref[:, 1])) == {0, 1, 2, 3, 4, 5}  # scipy leaves the bounds
    ours = _initial_population(bounds, P)
    for j in range(2):
        lo, hi = math.ceil(bounds[j][0]), math.floor(bounds[j][1])
        want, got = _counts(np.clip(ref[:, j], lo, hi)), _counts(ours[:, j])
        assert set(got) == set(range(lo, hi + 1))
        assert all(abs(got[v] - want[v]) <= 1 for v in want), (got, want)


def test_widened_integer_bounds_give_equal_mass() -> None:
    P = 400
    ours = _initial_population([(0, 3), (0.3, 4.7)], P, widen_integer_bounds=True)
    assert _counts(ours[:, 0]) == {0: 100, 1: 100, 2: 100, 3: 100}
    assert _counts(ours[:, 1]) == {1: 100, 2: 100, 3: 100, 4: 100}


# ----------------------------------------------------------------------------- properties
def _centres(ids: np.ndarray) -> np.ndarray:
    """A different integer optimum for each problem id, (len(ids), D)."""
    return np.stack([np.random.default_rng(int(i)).integers(0, 64, size=D) for i in ids])


def _shifted(problem_ids: list[int], backend: str = "numpy"):
    """Per-problem shifted integer objective with exact arithmetic in both backends."""
    centres = _centres(np.asarray(problem_ids)).astype(float)

    def objective(idx, X):
        c = centres[idx]
        if backend == "torch":
            c = torch.as_tensor(c, device=X.device)
        d = X - c[:, None, :]
        return 50.0 + d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2] \
            + abs(d[..., 3]) + abs(d[..., 4])

    return objective


def _assert_same(a: list[DEResult], b: list[DEResult]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.problem_id, ra.fun, ra.nit, ra.nfev, ra.converged, ra.message) == (
            rb.problem_id, rb.fun, rb.nit, rb.nfev, rb.converged, rb.message)
        np.testing.assert_array_equal(ra.x, rb.x)
        np.testing.assert_array_equal(ra.history, rb.history)


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize("integer", [True, False])
def test_numpy_and_torch_identical(updating: str, integer: bool) -> None:
    ids = [0, 1, 2, 3]
    cfg = DEConfig(population=20, maxiter=40, updating=updating, seed=7)
    common = {"n_problems": 4, "problem_ids": ids, "config": cfg,
              "integrality": INTEGRALITY if integer else None}
    a = differential_evolution_batch(_shifted(ids), BOUNDS, **common)
    b = differential_evolution_batch(_shifted(ids, "torch"), BOUNDS, backend="torch",
                                     device="cpu", **common)
    _assert_same(a, b)
    assert len({r.nit for r in a}) > 1  # problems stopped at different generations


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_numpy_and_cuda_identical(updating: str) -> None:
    ids = [0, 1, 2]
    cfg = DEConfig(population=20, maxiter=40, updating=updating, seed=7)
    common = {"n_problems": 3, "problem_ids": ids, "config": cfg, "integrality": INTEGRALITY}
    a = differential_evolution_batch(_shifted(ids), BOUNDS, **common)
    b = differential_evolution_batch(_shifted(ids, "torch"), BOUNDS, backend="torch",
                                     device="cuda", **common)
    _assert_same(a, b)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_batch_independence(updating: str, backend: str) -> None:
    cfg = DEConfig(population=20, maxiter=40, updating=updating, seed=3)
    together = differential_evolution_batch(_shifted([3, 5], backend), BOUNDS, n_problems=2,
                                            problem_ids=[3, 5], integrality=INTEGRALITY,
                                            config=cfg, backend=backend)
    alone = differential_evolution_batch(_shifted([5], backend), BOUNDS, n_problems=1,
                                         problem_ids=[5], integrality=INTEGRALITY, config=cfg,
                                         backend=backend)
    _assert_same(together[1:], alone)
    assert together[0].nit != together[1].nit or together[0].fun != together[1].fun


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_per_problem_stopping(updating: str) -> None:
    """Problem 0 is flat (stops after generation 1), problem 1 keeps going alone."""
    P = 20
    calls: list[tuple[list[int], tuple[int, ...]]] = []
    progress: list[tuple[int, list[int]]] = []

    def objective(idx, X):
        calls.append((idx.tolist(), X.shape))
        e = X.sum(-1)
        return np.where((idx == 0)[:, None], 1.0, e)

    res = differential_evolution_batch(
        objective, [(0, 100)] * 3, n_problems=2, config=DEConfig(population=P, maxiter=5,
                                                                 updating=updating),
        callback=lambda g, ids, best: progress.append((g, ids.tolist())),
    )
    assert (res[0].nit, res[0].nfev, res[0].converged) == (1, 2 * P, True)
    assert (res[1].nit, res[1].nfev, res[1].converged) == (5, 6 * P, False)
    assert res[1].message == MESSAGE_MAXITER
    per_gen = 1 if updating == "deferred" else P
    assert calls[0] == ([0, 1], (2, P, 3))
    n = P if updating == "deferred" else 1
    assert calls[1 : 1 + per_gen] == [([0, 1], (2, n, 3))] * per_gen
    assert calls[1 + per_gen :] == [([1], (1, n, 3))] * (4 * per_gen)
    assert progress == [(1, [0, 1]), (2, [1]), (3, [1]), (4, [1]), (5, [1])]


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_results_integer_in_bounds_and_history(updating: str) -> None:
    bounds = [(0.3, 4.7), (-2, 2), (0, 1)]
    integrality = [True, True, False]
    seen = []

    def objective(idx, X):
        seen.append(X.copy())
        return np.cos(3 * X[..., 0]) + (X[..., 1] - 0.3) ** 2 + np.sin(5 * X[..., 2])

    res = differential_evolution_batch(objective, bounds, n_problems=6,
                                       integrality=integrality,
                                       config=DEConfig(population=15, maxiter=30,
                                                       updating=updating))
    X = np.concatenate([s.reshape(-1, 3) for s in seen])
    assert np.all(X[:, :2] == np.round(X[:, :2]))
    assert X[:, 0].min() == 1 and X[:, 0].max() == 4
    assert X[:, 1].min() == -2 and X[:, 1].max() == 2
    assert np.all((X[:, 2] >= 0) & (X[:, 2] <= 1))
    for r in res:
        assert r.x.shape == (3,) and r.x.dtype == np.float64
        assert r.x[0] in (1, 2, 3, 4) and r.x[1] in (-2, -1, 0, 1, 2)
        assert r.history.shape == (r.nit + 1,)
        assert np.all(np.diff(r.history) <= 0)
        assert r.history[-1] == r.fun
        assert r.fun == pytest.approx(float(objective(None, r.x[None, None, :])[0, 0]))
        with pytest.raises(ValueError, match="read-only"):
            r.x[0] = 0.0


def test_solver_steps_like_the_function() -> None:
    ids = [4, 9]
    cfg = DEConfig(population=12, maxiter=15, seed=1)
    solver = BatchDESolver(_shifted(ids), BOUNDS, n_problems=2, problem_ids=ids,
                           integrality=INTEGRALITY, config=cfg)
    with pytest.raises(RuntimeError, match="still running"):
        solver.results()
    while not solver.done:
        pids, best = solver.step()
        assert pids.shape == best.shape
    assert solver.generation == max(r.nit for r in solver.results())
    with pytest.raises(RuntimeError, match="all problems have finished"):
        solver.step()
    ref = differential_evolution_batch(_shifted(ids), BOUNDS, n_problems=2, problem_ids=ids,
                                       integrality=INTEGRALITY, config=cfg)
    _assert_same(solver.results(), ref)


def test_seed_changes_results() -> None:
    def run(seed: int) -> list[DEResult]:
        return differential_evolution_batch(_shifted([0]), BOUNDS, n_problems=1,
                                            integrality=INTEGRALITY,
                                            config=DEConfig(population=20, seed=seed))

    _assert_same(run(1), run(1))
    a, b = run(1)[0], run(2)[0]
    assert not np.array_equal(a.history, b.history)


# ----------------------------------------------------------------------------- options (issue 13)
# The statistical tests of the options use the cheap sphere with a small population; they match
# scipy run for run in distribution, and each one shows it could fail: it tells the option apart
# from another setting.
P_OPT = 20  # scipy popsize 4
N_OPT = 30
NEW_BIN = ["rand1bin", "randtobest1bin", "currenttobest1bin", "best2bin", "rand2bin"]


def _check_matches_and_tells_apart(ref: np.ndarray, ours: np.ndarray,
                                   *others: np.ndarray) -> None:
    assert len(np.unique(ref[:, 0])) >= 10 and len(np.unique(ref[:, 1])) >= 3
    P = ref[0, 2] / (ref[0, 1] + 1)
    np.testing.assert_array_equal(ours[:, 2], P * (ours[:, 1] + 1))
    p = _pvalues(ref, ours)
    assert min(p) > P_ALPHA, p
    for other in others:
        assert min(_pvalues(ref, other)) < P_ALPHA


_SLOW_SCIPY = {("rand1bin", "immediate"), ("best2bin", "immediate"), ("rand2bin", "immediate")}


@pytest.mark.parametrize(
    ("strategy", "updating"),
    [pytest.param(s, u, marks=[pytest.mark.slow] if (s, u) in _SLOW_SCIPY else [])
     for s in [*NEW_BIN, "best1exp"] for u in ("immediate", "deferred")],
)
def test_strategy_matches_scipy(strategy: str, updating: str) -> None:
    ref = _scipy_runs(sphere, updating, N_OPT, P_OPT, strategy=strategy)
    ours = _batch_runs(sphere, updating, N_OPT, P_OPT, strategy=strategy)
    # the same test detects a wrong F or CR, and another strategy (rand2 converges far more
    # slowly than the others)
    wrong = [_batch_runs(sphere, updating, N_OPT, P_OPT, seed=2000, strategy=strategy, **bad)
             for bad in ({"mutation": 0.9}, {"recombination": 0.1})]
    other = _batch_runs(sphere, updating, N_OPT, P_OPT,
                        strategy="best1bin" if strategy == "rand2bin" else "rand2bin")
    _check_matches_and_tells_apart(ref, ours, *wrong, other)


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_dithering_matches_scipy(updating: str) -> None:
    ref = _scipy_runs(sphere, updating, N_OPT, P_OPT, mutation=(0.5, 1.0))
    ours = _batch_runs(sphere, updating, N_OPT, P_OPT, mutation=(0.5, 1.0))
    fixed = _batch_runs(sphere, updating, N_OPT, P_OPT)  # F = 0.5, scipy's min
    _check_matches_and_tells_apart(ref, ours, fixed)


@pytest.mark.parametrize("init", ["random", "sobol", "halton"])
def test_init_run_matches_scipy(init: str) -> None:
    """fun, nit, nfev (sobol: population 32, as scipy's) in distribution; the initialisations
    themselves are told apart by :func:`test_init_population_matches_scipy`."""
    ref = _scipy_runs(sphere, "deferred", N_OPT, P_OPT, init=init)
    ours = _batch_runs(sphere, "deferred", N_OPT, P_OPT, init=init)
    P = 32 if init == "sobol" else P_OPT
    np.testing.assert_array_equal(ref[:, 2], P * (ref[:, 1] + 1))
    np.testing.assert_array_equal(ours[:, 2], P * (ours[:, 1] + 1))
    assert min(_pvalues(ref, ours)) > P_ALPHA


def _discrepancies_scipy(init: str, n: int, P: int) -> tuple[np.ndarray, int]:
    out = []
    for seed in range(n):
        pop = differential_evolution(lambda x: 0.0, [(0, 1)] * D, popsize=P // D, polish=False,
                                     maxiter=0, init=init, rng=seed).population
        out.append(qmc.discrepancy(pop))
    return np.array(out), len(pop)


def _discrepancies_ours(init: str, n: int, P: int) -> tuple[np.ndarray, int]:
    seen = []

    def objective(idx, X):
        seen.append(X.copy())
        return X.sum(-1) * 0.0

    differential_evolution_batch(objective, [(0, 1)] * D, n_problems=n,
                                 config=DEConfig(population=P, maxiter=0, init=init, seed=77))
    (pops,) = seen
    return np.array([qmc.discrepancy(pop) for pop in pops]), pops.shape[1]


@pytest.mark.parametrize("init", INITS)
def test_init_population_matches_scipy(init: str) -> None:
    """The centred L2 discrepancy of the initial population (in the unit cube: bounds (0, 1))
    has the same distribution as scipy's, and tells the four initialisations apart."""
    n = 60
    ref, size = _discrepancies_scipy(init, n, P_OPT)
    ours = {name: _discrepancies_ours(name, n, P_OPT) for name in INITS}
    assert ours[init][1] == size == (32 if init == "sobol" else P_OPT)
    assert ks_2samp(ref, ours[init][0]).pvalue > P_ALPHA
    for name in INITS:
        if name != init:
            assert ks_2samp(ref, ours[name][0]).pvalue < P_ALPHA, name


def test_sobol_rounds_population_up_like_scipy(caplog) -> None:
    assert DEConfig(population=33, init="sobol").effective_population == 64
    assert DEConfig(population=32, init="sobol").effective_population == 32
    assert DEConfig(population=33, init="halton").effective_population == 33
    ref = differential_evolution(lambda x: 7.0, [(0, 1)] * 3, popsize=11, polish=False,
                                 init="sobol", rng=0)
    with caplog.at_level(logging.WARNING, logger="onepixel.optimize.de"):
        (ours,) = differential_evolution_batch(
            lambda idx, X: X.sum(-1) * 0.0 + 7.0, [(0, 1)] * 3, n_problems=1,
            config=DEConfig(population=33, init="sobol"))
    assert (ours.nit, ours.nfev) == (ref.nit, ref.nfev) == (1, 2 * 64)
    assert any("using 64 members instead of 33" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onepixel.optimize.de"):
        BatchDESolver(_zero, [(0, 1)] * 3, n_problems=1, config=DEConfig(population=32,
                                                                         init="sobol"))
    assert not caplog.records


def test_dither_range_is_stored_as_a_tuple() -> None:
    cfg = DEConfig(mutation=[0.5, np.float64(1.0)])
    assert cfg.mutation == (0.5, 1.0) and cfg.dither == (0.5, 1.0)
    assert type(cfg.mutation[1]) is float
    assert hash(cfg) == hash(DEConfig(mutation=(0.5, 1.0)))
    assert DEConfig().dither is None
    assert DEConfig(mutation=(0.7, 0.7)).dither == (0.7, 0.7)


def _promote(pop: np.ndarray) -> np.ndarray:
    """(K, P, D) population with each problem's lowest ``X[..., 0]`` swapped to index 0."""
    new = pop.copy()
    for k in range(len(new)):
        best = int(new[k, :, 0].argmin())
        new[k, [0, best]] = new[k, [best, 0]]
    return new


def _replay_deferred(pop: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """The population after a deferred generation of the energy ``X[..., 0]`` (selection, then
    promote lowest), as the solver does it."""
    return _promote(np.where((trials[..., 0] <= pop[..., 0])[..., None], trials, pop))


def test_dithered_f_is_one_draw_per_generation_and_problem() -> None:
    """rand1bin, CR = 1, D = 2: each trial is ``x[r0] + F (x[r1] - x[r2])`` (unless a value left
    [0, 1] and was redrawn); solving for (r0, r1, r2, F) finds one F per generation and problem,
    the same for all its candidates, within the range and different each time."""
    P, K, lo, hi = 7, 4, 0.1, 0.3
    seen = []

    def objective(idx, X):
        seen.append(X.copy())
        return X[..., 0]

    cfg = DEConfig(population=P, maxiter=3, mutation=(lo, hi), strategy="rand1bin",
                   updating="deferred", recombination=1.0, tol=0.0)
    differential_evolution_batch(objective, [(0, 1)] * 2, n_problems=K, config=cfg)
    pop, found = _promote(seen[0]), []  # the objective saw it before the first promotion
    triples = [(a, b, c) for a in range(P) for b in range(P) for c in range(P)
               if len({a, b, c}) == 3]
    for trials in seen[1:]:
        for k in range(K):
            x, per_candidate = pop[k], []
            for j in range(P):
                t, fs = trials[k, j], []
                for a, b, c in triples:
                    f = (t[0] - x[a, 0]) / (x[b, 0] - x[c, 0])
                    # (r1, r2) swapped explain it with -F: keep the admissible 0 <= F < 2
                    if (j not in (a, b, c) and 0 <= f < 2
                            and abs(x[a, 1] + f * (x[b, 1] - x[c, 1]) - t[1]) < 1e-9):
                        fs.append(f)
                per_candidate.append(np.array(fs))
            # a redrawn trial has no explanation, and accepted trials of earlier generations
            # lie on the lines of others, so a few extra values appear: one F explains most
            values = np.concatenate(per_candidate)
            support = [sum(bool(c.size) and np.abs(c - f).min() < 1e-9 for c in per_candidate)
                       for f in values]
            assert max(support) >= 4, (support, per_candidate)
            found.append(float(values[int(np.argmax(support))]))
        pop = _replay_deferred(pop, trials)
    assert len(np.unique(np.round(found, 6))) == 3 * K
    assert all(lo <= f < hi for f in found)


def test_distinct_picks_are_uniform_over_ordered_tuples() -> None:
    """scipy's _select_samples: n distinct members, none the candidate, every ordered tuple
    equally likely."""
    P, n, draws = 5, 3, 3000
    rng = np.random.default_rng(0)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(draws):
        picks = np.stack(_distinct_picks(rng, P, n), axis=1)  # (P, n)
        for c in range(P):
            t = tuple(picks[c].tolist())
            assert len(set(t)) == n and c not in t
            counts[(c, *t)] = counts.get((c, *t), 0) + 1
    assert len(counts) == P * 4 * 3 * 2  # every (candidate, ordered tuple) occurs
    assert chisquare(list(counts.values())).pvalue > P_ALPHA
    rng = np.random.default_rng(1)
    for P, n in ((6, 5), (3, 2)):  # the tightest cases: all other members, in some order
        picks = np.stack(_distinct_picks(rng, P, n), axis=1)
        for c in range(P):
            assert sorted(picks[c].tolist()) == [m for m in range(P) if m != c]


@pytest.mark.parametrize("strategy", [*NEW_BIN, "best1bin", "best2exp"])
def test_zero_weight_trials_copy_the_base_member(strategy: str) -> None:
    """F = 0, CR = 1: the trial is the base vector of the strategy, which shows who it is:
    rand*: r0, never the candidate; best*: the best member; currenttobest1: the candidate."""
    P, K = 6, 60
    seen = []

    def objective(idx, X):
        seen.append(X.copy())
        return X[..., 0]

    cfg = DEConfig(population=P, maxiter=1, mutation=0.0, strategy=strategy,
                   updating="deferred", recombination=1.0)
    differential_evolution_batch(objective, [(0, 1)] * 2, n_problems=K, config=cfg)
    pop, trials = _promote(seen[0]), seen[1]
    pairs = set()
    for k in range(K):
        for j in range(P):
            (m,) = np.flatnonzero((pop[k] == trials[k, j]).all(-1))
            pairs.add((j, int(m)))
    if strategy.startswith(("rand1", "rand2", "randtobest1")):
        assert pairs == {(j, m) for j in range(P) for m in range(P) if m != j}
    elif strategy.startswith("currenttobest1"):
        assert pairs == {(j, j) for j in range(P)}
    else:
        assert pairs == {(j, 0) for j in range(P)}


# numpy / torch, batch independence, defaults -------------------------------------------------
OPTIONS = [{"strategy": s} for s in STRATEGIES if s != "best1bin"] + [
    {"init": i} for i in INITS if i != "latinhypercube"] + [{"mutation": (0.4, 0.9)}]


def _option_id(option: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in option.items())


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize("option", OPTIONS, ids=_option_id)
def test_numpy_and_torch_identical_with_options(option: dict, updating: str) -> None:
    ids = [0, 1, 2]
    cfg = DEConfig(population=10, maxiter=8, updating=updating, seed=5, **option)
    common = {"n_problems": 3, "problem_ids": ids, "config": cfg, "integrality": INTEGRALITY}
    a = differential_evolution_batch(_shifted(ids), BOUNDS, **common)
    b = differential_evolution_batch(_shifted(ids, "torch"), BOUNDS, backend="torch",
                                     device="cpu", **common)
    _assert_same(a, b)
    # the option changes the run (same seed, default settings otherwise)
    c = differential_evolution_batch(
        _shifted(ids), BOUNDS, **{**common, "config": DEConfig(population=10, maxiter=8,
                                                               updating=updating, seed=5)})
    assert any(not np.array_equal(ra.history, rc.history) for ra, rc in zip(a, c, strict=True))


@pytest.mark.parametrize("option", OPTIONS, ids=_option_id)
def test_batch_independence_with_options(option: dict) -> None:
    cfg = DEConfig(population=10, maxiter=8, seed=3, updating="deferred", **option)
    together = differential_evolution_batch(_shifted([3, 5, 8]), BOUNDS, n_problems=3,
                                            problem_ids=[3, 5, 8], integrality=INTEGRALITY,
                                            config=cfg)
    alone = differential_evolution_batch(_shifted([5]), BOUNDS, n_problems=1, problem_ids=[5],
                                         integrality=INTEGRALITY, config=cfg)
    _assert_same(together[1:2], alone)


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_default_options_unchanged(backend: str, updating: str) -> None:
    """The new options at their defaults, and a stop callback that stops nothing, leave the
    default path (its draws and results) exactly as it is; tests/test_golden.py pins it to the
    results of the code before the options existed."""
    ids = [2, 7, 4]
    common = {"n_problems": 3, "problem_ids": ids, "integrality": INTEGRALITY,
              "backend": backend}
    base = DEConfig(population=12, maxiter=20, updating=updating, seed=9)
    explicit = DEConfig(population=12, maxiter=20, updating=updating, seed=9,
                        strategy="best1bin", init="latinhypercube", mutation=0.5)
    a = differential_evolution_batch(_shifted(ids, backend), BOUNDS, config=base, **common)
    b = differential_evolution_batch(_shifted(ids, backend), BOUNDS, config=explicit, **common)
    c = differential_evolution_batch(_shifted(ids, backend), BOUNDS, config=base,
                                     stop=lambda i, x, f: np.zeros(len(i), dtype=bool), **common)
    d = differential_evolution_batch(_shifted(ids, backend), BOUNDS, config=base,
                                     stop=lambda i, x, f: None, **common)
    for other in (b, c, d):
        _assert_same(a, other)
    assert not any(r.stopped for r in a + c + d)


# ----------------------------------------------------------------------------- stop callback
def _stop_at(generation: int, stop_ids: set[int], log: list) -> StopCallback:
    """Stops ``stop_ids`` (problem ids) after ``generation``; records what it is given."""
    calls = iter(range(1, 10**6))

    def stop(ids, best_x, best_fun):
        g = next(calls)
        log.append((g, ids.copy(), best_x.copy(), best_fun.copy()))
        return np.array([g == generation and int(i) in stop_ids for i in ids])

    return stop


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_stop_callback_stops_exactly_the_problems_it_names(updating: str, backend: str) -> None:
    ids = [10, 11, 12, 13]
    P = 12
    cfg = DEConfig(population=P, maxiter=12, updating=updating, seed=4, tol=0.0)
    shifted = _shifted(ids, backend)
    seen: list[list[int]] = []

    def objective(idx, X):
        seen.append(idx.tolist())
        return shifted(idx, X)

    log: list = []
    common = {"n_problems": 4, "problem_ids": ids, "integrality": INTEGRALITY, "config": cfg,
              "backend": backend}
    res = differential_evolution_batch(objective, BOUNDS, stop=_stop_at(3, {11, 13}, log),
                                       **common)
    free = differential_evolution_batch(_shifted(ids, backend), BOUNDS, **common)
    for b in (1, 3):
        r = res[b]
        assert (r.nit, r.nfev, r.stopped, r.converged, r.message) == (
            3, P * 4, True, False, MESSAGE_CALLBACK)
        # the stopped problem ran exactly like the free run until then
        np.testing.assert_array_equal(r.history, free[b].history[:4])
        # the callback saw its best x and energy, which are the result's
        g, seen_ids, best_x, best_fun = log[2]
        row = seen_ids.tolist().index(ids[b])
        np.testing.assert_array_equal(best_x[row], r.x)
        assert best_fun[row] == r.fun
    for b in (0, 2):  # the others are untouched by the stop of their neighbours
        assert not res[b].stopped and res[b].message != MESSAGE_CALLBACK
        _assert_same([res[b]], [free[b]])
    # stopped problems take part in no later objective call
    calls_per_gen = 1 if updating == "deferred" else P
    after = seen[1 + 3 * calls_per_gen :]
    assert after and all(1 not in c and 3 not in c for c in after)
    assert all(set(c) == {0, 1, 2, 3} for c in seen[: 1 + 3 * calls_per_gen])
    # it is asked about every problem taking part, with numpy arrays of the documented shapes
    g, seen_ids, best_x, best_fun = log[0]
    assert g == 1 and seen_ids.tolist() == ids
    assert isinstance(best_x, np.ndarray) and best_x.shape == (4, D) and best_x.dtype == np.float64
    assert isinstance(best_fun, np.ndarray) and best_fun.shape == (4,)
    assert log[3][1].tolist() == [10, 12]


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_stop_callback_matches_scipy_and_wins_over_convergence(updating: str) -> None:
    """A flat objective converges after generation 1; a callback that stops then wins, as in
    scipy (success False, its message, nit 1)."""
    P = 20
    ref = differential_evolution(lambda x: 7.0, [(0, 1)] * 2, popsize=P // 2, polish=False,
                                 updating=updating, rng=0, callback=lambda intermediate_result: True)
    (ours,) = differential_evolution_batch(lambda idx, X: X.sum(-1) * 0.0 + 7.0, [(0, 1)] * 2,
                                           n_problems=1, config=DEConfig(population=P,
                                                                         updating=updating),
                                           stop=lambda i, x, f: np.ones(len(i), dtype=bool))
    assert (ours.nit, ours.nfev, ours.converged, ours.message) == (
        ref.nit, ref.nfev, ref.success, ref.message) == (1, 2 * P, False, MESSAGE_CALLBACK)
    assert ours.stopped


def test_stop_callback_wins_over_maxiter_and_steps() -> None:
    """A stop at the last generation is a stop (scipy: the callback message), through step()."""
    solver = BatchDESolver(lambda idx, X: X.sum(-1), [(0, 100)] * 2, n_problems=2,
                           config=DEConfig(population=10, maxiter=2))
    solver.step(stop=lambda i, x, f: None)
    solver.step(stop=lambda i, x, f: torch.tensor([True, False]))  # a bool tensor is fine
    a, b = solver.results()
    assert (a.nit, a.stopped, a.message) == (2, True, MESSAGE_CALLBACK)
    assert (b.nit, b.stopped, b.message) == (2, False, MESSAGE_MAXITER)


def test_stop_and_progress_callbacks_in_run() -> None:
    progress: list[tuple[int, list[int]]] = []
    solver = BatchDESolver(lambda idx, X: X.sum(-1), [(0, 100)] * 2, n_problems=3,
                           problem_ids=[5, 6, 7], config=DEConfig(population=10, maxiter=4))
    res = solver.run(lambda g, ids, best: progress.append((g, ids.tolist())),
                     stop=lambda ids, x, f: ids == 6)
    assert progress == [(1, [5, 6, 7]), (2, [5, 7]), (3, [5, 7]), (4, [5, 7])]
    assert [r.stopped for r in res] == [False, True, False]
    assert [r.nit for r in res] == [4, 1, 4]


@pytest.mark.parametrize(
    ("stop", "match"),
    [
        (lambda i, x, f: np.ones(len(i)), r"must return None or a \(2,\) bool mask.*dtype float64"),
        (lambda i, x, f: np.ones(3, dtype=bool), r"must return None or a \(2,\) bool mask.*shape \(3,\)"),
        (lambda i, x, f: True, r"must return None or a \(2,\) bool mask"),
        ("yes", "stop must be callable"),
    ],
)
def test_stop_callback_is_checked(stop, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        differential_evolution_batch(_zero, [(0, 1)] * 2, n_problems=2,
                                     config=DEConfig(population=10, maxiter=3), stop=stop)
    solver = BatchDESolver(_zero, [(0, 1)] * 2, n_problems=2,
                           config=DEConfig(population=10, maxiter=3))
    with pytest.raises(ValueError, match=match):
        solver.step(stop=stop)
