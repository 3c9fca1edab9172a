"""Tests of onepixel.optimize.de: batched differential evolution vs scipy.optimize.differential_evolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import differential_evolution
from scipy.stats import ks_2samp

from onepixel.optimize.de import (
    MESSAGE_MAXITER,
    MESSAGE_SUCCESS,
    BatchDESolver,
    DEConfig,
    DEResult,
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


def _scipy_runs(f, updating: str, n: int, population: int = P_STAT) -> np.ndarray:
    """(n, 3) fun, nit, nfev of scipy's differential_evolution over seeds 0..n-1."""
    out = []
    for seed in range(n):
        r = differential_evolution(
            f, BOUNDS, strategy="best1bin", popsize=population // D, init="latinhypercube",
            mutation=0.5, recombination=0.7, tol=0.01, atol=0, polish=False,
            integrality=INTEGRALITY, updating=updating, rng=seed, maxiter=MAXITER_STAT,
        )
        out.append((r.fun, r.nit, r.nfev))
    return np.array(out, dtype=float)


def _batch_runs(f, updating: str, n: int, population: int = P_STAT, seed: int = 1000,
                **overrides: float) -> np.ndarray:
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
        ({"mutation": (0.5, 1.0)}, "dithering is not supported"),
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


def test_updating_modes_are_distinguished() -> None:
    """The statistical test also has power against mixing up the two updating modes."""
    ref = _scipy_runs(sphere, "immediate", N_SEEDS)
    other = _batch_runs(sphere, "deferred", N_SEEDS)
    assert _pvalues(ref, other)[1] < P_ALPHA


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
