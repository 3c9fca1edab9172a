"""Batched differential evolution: many independent problems solved in lockstep.

This module reimplements the part of :func:`scipy.optimize.differential_evolution` that the
one-pixel attack needs (``strategy='best1bin'``, ``init='latinhypercube'``, a fixed mutation
constant, ``polish=False``, optional ``integrality``, ``updating='immediate'`` or
``'deferred'``), but solves ``B`` independent problems at once so that one objective call
scores candidates of many problems (e.g. one batched forward pass of a classifier over many
images). Arrays are laid out as ``(problems, population, parameters) = (B, P, D)``.

The same code runs on two array backends:

* ``backend="numpy"``: NumPy arrays on the host.
* ``backend="torch"``: float64 torch tensors on ``device`` (CPU or CUDA). The objective
  receives a tensor and returns a tensor, so a model can stay on the GPU.

Random numbers always come from one NumPy generator per problem, seeded from
``(config.seed, problem_id)`` only, and are drawn in bulk once per generation. Both backends
consume exactly the same draws and do the same IEEE float64 operations, so they return
identical results, and a problem's result does not depend on which other problems share its
batch (given an objective whose value for a row does not depend on the other rows).

The random *streams* differ from scipy's (scipy interleaves its draws candidate by candidate),
so results match scipy in distribution, not bit for bit. Semantics that are reproduced:

* Parameters live in the unit cube; ``x = m + (u - 0.5) * w`` with ``m``/``w`` the midpoint and
  width of the bounds ``(lo, hi)``; integer parameters are then rounded half-to-even
  (``np.round``). Note what scipy 1.17 actually does here: it computes the widened integer
  limits ``(nextafter(ceil(lo) - 0.5, +inf), nextafter(floor(hi) + 0.5, -inf))`` but *after* it
  has fixed ``m`` and ``w`` from the original bounds, so the widening never reaches the scaling:
  with integer bounds ``(0, 63)`` the edge values 0 and 63 get half the probability of an
  interior value (under the uniform draws of the initialisation and of out-of-range redraws).
  This module reproduces that by default; ``DEConfig(widen_integer_bounds=True)`` scales integer
  parameters over the widened limits instead, which gives every integer the same mass.
  In both cases the rounded value is clipped to ``[ceil(lo), floor(hi)]``. With integer-valued
  bounds the clip never changes anything; with fractional bounds such as ``(0.3, 4.7)`` scipy
  returns out-of-bounds integers (0 and 5) where this module returns 1 and 4.
* Latin-hypercube initialisation: ``P`` equal segments per parameter, one uniform draw inside
  each, each column permuted independently. Then the lowest-energy member is swapped to
  index 0 (``nfev = P`` after initialisation).
* best1bin: ``mutant = pop[0] + F * (pop[r0] - pop[r1])`` with ``r0 != r1`` both different
  from the candidate, binomial crossover with probability ``CR`` and one forced crossover
  position, trial values outside ``[0, 1]`` redrawn uniformly in ``[0, 1)``; a trial replaces
  its candidate when ``f(trial) <= f(candidate)``.
* ``updating="immediate"``: population slots are processed one at a time; slot ``j`` of all
  active problems is evaluated in one objective call of shape ``(K, 1, D)``. An accepted trial
  whose energy is ``<=`` the best energy triggers scipy's "promote lowest" (swap the argmin of
  the population energies into index 0), so later slots of the same generation mutate around
  the new best.
* ``updating="deferred"``: a whole generation of trials is built from the population at the
  start of the generation and evaluated in one call of shape ``(K, P, D)``; then selection,
  then promote lowest.
* After each generation (never before the first one, so the earliest stop is ``nit = 1``) a
  problem has converged when no energy is infinite and
  ``std(E) <= atol + tol * abs(mean(E))`` over its population energies. Converged problems and
  problems that reached ``maxiter`` drop out of later objective calls.
* ``nfev`` counts objective evaluations per problem as scipy does without ``vectorized``:
  ``P`` for the initial population plus ``P`` per generation, i.e. ``P * (nit + 1)``.

Examples
--------
>>> import numpy as np
>>> def sphere(problem_index, X):  # (K,), (K, N, D) -> (K, N)
...     return ((X - 3.0) ** 2).sum(axis=-1)
>>> res = differential_evolution_batch(
...     sphere, [(0, 10)] * 2, n_problems=4, integrality=[True, True],
...     config=DEConfig(population=20, maxiter=50))
>>> [r.x.tolist() for r in res][0]
[3.0, 3.0]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.errors import ConfigError, SolverStateError, is_integer, is_real

if TYPE_CHECKING:
    import torch

__all__ = [
    "MESSAGE_MAXITER",
    "MESSAGE_SUCCESS",
    "BatchDESolver",
    "DEConfig",
    "DEResult",
    "Objective",
    "differential_evolution_batch",
]

logger = logging.getLogger(__name__)

MESSAGE_SUCCESS = "Optimization terminated successfully."
MESSAGE_MAXITER = "Maximum number of iterations has been exceeded."

_UPDATING = ("immediate", "deferred")
_BACKENDS = ("numpy", "torch")

Objective = Callable[[np.ndarray, Any], Any]
"""``objective(problem_index, X) -> energies``, minimised.

``problem_index`` is a NumPy int64 array of shape (K,): the positions in the batch
(``0 <= i < n_problems``) of the K problems being evaluated. ``X`` has shape (K, N, D) and holds
float64 parameter values (integer-valued for integer parameters); it is a NumPy array for
``backend="numpy"`` and a float64 torch tensor on the solver's device for ``backend="torch"``.
The return value must have shape (K, N), of the same array kind (anything
``np.asarray`` / ``torch.as_tensor`` accepts is converted to float64). ``N`` is 1 (immediate
updating), or P (initial population and deferred updating).
"""

ProgressCallback = Callable[[int, np.ndarray, np.ndarray], Any]
"""``callback(generation, problem_ids, best_fun)``: called after each generation with the
(K,) ids of the problems that took part in it and their (K,) best energies. Return value
ignored."""


@dataclass(frozen=True)
class DEConfig:
    """Settings of the batched differential evolution (defaults: the papers' settings).

    Attributes
    ----------
    population : int
        Total number of population members P (scipy's ``popsize * D``; scipy's
        ``popsize=40`` with D=5 is 200). At least 5.
    maxiter : int
        Maximum number of generations (>= 0).
    mutation : float
        Differential weight F in [0, 2) (no dithering).
    recombination : float
        Crossover probability CR in [0, 1].
    tol, atol : float
        Relative and absolute convergence tolerances (>= 0).
    updating : str
        ``"immediate"`` (scipy's default) or ``"deferred"``.
    seed : int
        Base seed (>= 0); problem ``i``'s stream is derived from ``(seed, problem_ids[i])``.
    widen_integer_bounds : bool
        False (scipy 1.17): integer parameters are scaled over their bounds and rounded, so the
        two edge integers get half the mass of the others. True: scaled over the bounds widened
        by 0.5 on each side, so all integers get equal mass.
    """

    population: int = 200
    maxiter: int = 100
    mutation: float = 0.5
    recombination: float = 0.7
    tol: float = 0.01
    atol: float = 0.0
    updating: str = "immediate"
    seed: int = 0
    widen_integer_bounds: bool = False

    def __post_init__(self) -> None:
        if not is_integer(self.population) or self.population < 5:
            raise ConfigError(
                f"DEConfig.population must be an integer >= 5 (best1bin needs distinct "
                f"members), got {self.population!r}; use e.g. population=15 * n_parameters."
            )
        if not is_integer(self.maxiter) or self.maxiter < 0:
            raise ConfigError(
                f"DEConfig.maxiter must be a non-negative integer, got {self.maxiter!r}."
            )
        if not is_real(self.mutation) or not (0.0 <= self.mutation < 2.0):
            raise ConfigError(
                f"DEConfig.mutation must be a float in [0, 2) (dithering is not supported), "
                f"got {self.mutation!r}; the papers use 0.5."
            )
        if not is_real(self.recombination) or not (0.0 <= self.recombination <= 1.0):
            raise ConfigError(
                f"DEConfig.recombination must be a probability in [0, 1], "
                f"got {self.recombination!r}; scipy's default is 0.7."
            )
        for name in ("tol", "atol"):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"DEConfig.{name} must be a finite float >= 0, got {value!r}."
                )
        if self.updating not in _UPDATING:
            raise ConfigError(
                f"DEConfig.updating must be one of {_UPDATING}, got {self.updating!r}."
            )
        if not is_integer(self.seed) or self.seed < 0:
            raise ConfigError(
                f"DEConfig.seed must be a non-negative integer, got {self.seed!r}."
            )
        if not isinstance(self.widen_integer_bounds, bool | np.bool_):
            raise ConfigError(
                f"DEConfig.widen_integer_bounds must be a bool, "
                f"got {self.widen_integer_bounds!r}."
            )


@dataclass(frozen=True, eq=False)
class DEResult:
    """Result of one problem (arrays are read-only).

    Attributes
    ----------
    problem_id : int
        The id that seeded this problem's random stream.
    x : numpy.ndarray
        (D,) float64 best parameters (integer-valued for integer parameters).
    fun : float
        Objective value at ``x``.
    nit : int
        Number of generations run.
    nfev : int
        Number of objective evaluations for this problem, ``P * (nit + 1)``.
    converged : bool
        True when the convergence criterion stopped the problem (scipy's ``success``).
    message : str
        :data:`MESSAGE_SUCCESS` or :data:`MESSAGE_MAXITER`, as scipy.
    history : numpy.ndarray
        (nit + 1,) float64 best energy after initialisation (``history[0]``) and after each
        generation (``history[g]``); non-increasing, ``history[-1] == fun``.
    """

    problem_id: int
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    converged: bool
    message: str
    history: np.ndarray


class _NumpyOps:
    """Array operations on NumPy arrays."""

    name = "numpy"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def where(self, cond: np.ndarray, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def clip(self, a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.clip(a, lo, hi)

    def energies(self, out: Any, shape: tuple[int, int]) -> np.ndarray:
        e = np.asarray(out, dtype=np.float64)
        if e.shape != shape:
            raise ConfigError(
                f"objective returned shape {e.shape}, expected {shape} "
                f"(one energy per problem and candidate)"
            )
        return e


class _TorchOps:
    """Array operations on float64 torch tensors on one device."""

    name = "torch"

    def __init__(self, device: str | torch.device | None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cpu" if device is None else device)

    def asarray(self, a: np.ndarray) -> torch.Tensor:
        return self.torch.as_tensor(a, device=self.device)

    def to_numpy(self, a: torch.Tensor) -> np.ndarray:
        return a.detach().cpu().numpy()

    def where(self, cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return self.torch.where(cond, a, b)

    def clip(self, a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return self.torch.clamp(a, min=lo, max=hi)

    def energies(self, out: Any, shape: tuple[int, int]) -> torch.Tensor:
        torch = self.torch
        e = out if isinstance(out, torch.Tensor) else torch.as_tensor(out)
        e = e.detach().to(device=self.device, dtype=torch.float64)
        if tuple(e.shape) != shape:
            raise ConfigError(
                f"objective returned shape {tuple(e.shape)}, expected {shape} "
                f"(one energy per problem and candidate)"
            )
        return e


def _validate_bounds(bounds: Sequence[tuple[float, float]] | np.ndarray) -> np.ndarray:
    try:
        b = np.array(bounds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"bounds must be a sequence of (low, high) number pairs, got {bounds!r}"
        ) from exc
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ConfigError(
            f"bounds must have shape (D, 2): one (low, high) pair per parameter, "
            f"got shape {b.shape}"
        )
    if not np.all(np.isfinite(b)):
        raise ConfigError("bounds must be finite; replace infinite/NaN limits by finite ones")
    bad = np.flatnonzero(b[:, 0] > b[:, 1])
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"bounds[{i}] = ({b[i, 0]}, {b[i, 1]}) has low > high; give (low, high) in order"
        )
    return b


def _validate_integrality(integrality: Any, limits: np.ndarray) -> np.ndarray:
    D = limits.shape[0]
    if integrality is None:
        return np.zeros(D, dtype=bool)
    try:
        mask = np.broadcast_to(np.asarray(integrality, dtype=bool), (D,)).copy()
    except ValueError as exc:
        raise ConfigError(
            f"integrality must be a bool or a sequence of {D} bools (one per parameter), "
            f"got {integrality!r}"
        ) from exc
    lo, hi = np.ceil(limits[:, 0]), np.floor(limits[:, 1])
    bad = np.flatnonzero(mask & (lo > hi))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"integer parameter {i} has bounds ({limits[i, 0]}, {limits[i, 1]}) that contain "
            f"no integer; widen them or mark the parameter as continuous"
        )
    return mask


def _latin_hypercube(rng: np.random.Generator, P: int, D: int) -> np.ndarray:
    """(P, D) Latin-hypercube sample of the unit cube, as scipy's ``init_population_lhs``."""
    segments = np.linspace(0.0, 1.0, P, endpoint=False)[:, None]
    samples = (1.0 / P) * rng.uniform(size=(P, D)) + segments
    orders = rng.permuted(np.tile(np.arange(P), (D, 1)), axis=1)  # (D, P)
    return samples[orders.T, np.arange(D)]


class BatchDESolver:
    """Steppable batched best1bin differential evolution (like scipy's solver object).

    Construction draws the initial Latin-hypercube populations; :meth:`initialize` evaluates
    them (called by the first :meth:`step` if needed); each :meth:`step` runs one generation
    of every active problem; :meth:`results` returns one :class:`DEResult` per problem once
    :attr:`done`. :meth:`run` does all of it.

    Parameters
    ----------
    objective : Objective
        ``objective(problem_index (K,), X (K, N, D)) -> (K, N)`` energies to minimise; see
        :data:`Objective`.
    bounds : sequence of (low, high)
        Per-parameter bounds, length D, shared by all problems.
    n_problems : int
        Number of problems B.
    problem_ids : sequence of int, optional
        (B,) non-negative ids that seed each problem's stream (default ``range(B)``). A problem's
        result depends only on ``(config, bounds, integrality, objective, problem_id)``.
    integrality : bool or sequence of bool, optional
        (D,) which parameters are integers.
    config : DEConfig
        Algorithm settings.
    backend : {"numpy", "torch"}
        Array backend of the population and of the objective's input/output.
    device : str or torch.device, optional
        Torch device (default CPU); only with ``backend="torch"``.
    """

    def __init__(
        self,
        objective: Objective,
        bounds: Sequence[tuple[float, float]] | np.ndarray,
        *,
        n_problems: int,
        problem_ids: Sequence[int] | np.ndarray | None = None,
        integrality: bool | Sequence[bool] | np.ndarray | None = None,
        config: DEConfig = DEConfig(),
        backend: str = "numpy",
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(objective):
            raise ConfigError("objective must be callable: objective(problem_index, X) -> (K, N)")
        if not isinstance(config, DEConfig):
            raise ConfigError(f"config must be a DEConfig, got {type(config).__name__}")
        if not is_integer(n_problems) or n_problems < 1:
            raise ConfigError(f"n_problems must be a positive integer, got {n_problems!r}")
        if backend not in _BACKENDS:
            raise ConfigError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "numpy" and device is not None:
            raise ConfigError("device is only meaningful with backend='torch'; drop it or "
                             "pass backend='torch'")
        if problem_ids is None:
            ids = np.arange(n_problems, dtype=np.int64)
        else:
            ids = np.asarray(problem_ids)
            if (ids.shape != (n_problems,) or not np.issubdtype(ids.dtype, np.integer)
                    or np.any(ids < 0)):
                raise ConfigError(
                    f"problem_ids must be {n_problems} non-negative integers "
                    f"(one per problem), got {problem_ids!r}"
                )
            ids = ids.astype(np.int64)

        limits = _validate_bounds(bounds)
        int_mask = _validate_integrality(integrality, limits)
        lo, hi = limits[:, 0].copy(), limits[:, 1].copy()
        int_lo, int_hi = np.ceil(lo), np.floor(hi)
        if config.widen_integer_bounds:
            lo[int_mask] = np.nextafter(int_lo[int_mask] - 0.5, np.inf)
            hi[int_mask] = np.nextafter(int_hi[int_mask] + 0.5, -np.inf)

        self.objective = objective
        self.config = config
        self.problem_ids = ids
        self.n_problems = int(n_problems)
        self.n_parameters = int(limits.shape[0])
        self.integrality = int_mask
        self._ops: _NumpyOps | _TorchOps = (
            _NumpyOps() if backend == "numpy" else _TorchOps(device)
        )
        ops = self._ops
        self._center = ops.asarray(0.5 * (lo + hi))
        self._width = ops.asarray(np.fabs(lo - hi))
        self._has_int = bool(int_mask.any())
        self._int_mask = ops.asarray(int_mask)
        self._int_lo = ops.asarray(np.where(int_mask, int_lo, -np.inf))
        self._int_hi = ops.asarray(np.where(int_mask, int_hi, np.inf))

        self._rngs = [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, int(i)])))
            for i in ids
        ]
        P, D = config.population, self.n_parameters
        self._pop = ops.asarray(np.stack([_latin_hypercube(r, P, D) for r in self._rngs]))
        self._energy: Any = None  # (K, P) once initialised
        self._active = np.arange(self.n_problems)  # batch positions of the state rows
        self._rows = ops.asarray(np.arange(self.n_problems))  # (K,) row numbers on backend
        self._generation = 0
        # (B, maxiter + 1) best energy after init and after each generation
        self._history = np.full((self.n_problems, config.maxiter + 1), np.nan)
        self._results: list[DEResult | None] = [None] * self.n_problems
        self._taken: set[int] = set()

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        """``"numpy"`` or ``"torch"``."""
        return self._ops.name

    @property
    def generation(self) -> int:
        """Number of generations run so far."""
        return self._generation

    @property
    def active_problem_ids(self) -> np.ndarray:
        """(K,) ids of the problems still running."""
        return self.problem_ids[self._active]

    @property
    def done(self) -> bool:
        """True when every problem has converged or reached ``maxiter``."""
        return self._active.size == 0

    # ------------------------------------------------------------------ internals
    def _scale(self, unit: Any) -> Any:
        """Unit cube (..., D) -> parameter values (..., D), as scipy's ``_scale_parameters``."""
        x = self._center + (unit - 0.5) * self._width
        if self._has_int:
            ops = self._ops
            x = ops.where(self._int_mask, ops.clip(x.round(), self._int_lo, self._int_hi), x)
        return x

    def _evaluate(self, unit: Any) -> Any:
        """Energies (K, N) of unit-cube candidates (K, N, D) of the active problems."""
        K, N = int(unit.shape[0]), int(unit.shape[1])
        out = self.objective(self._active.copy(), self._scale(unit))
        return self._ops.energies(out, (K, N))

    def _promote_lowest(self, mask: Any | None = None) -> None:
        """Swap each row's lowest-energy member into index 0 (rows where ``mask`` only)."""
        ops, rows = self._ops, self._rows
        E, pop = self._energy, self._pop
        best = E.argmin(1)
        if mask is not None:
            best = ops.where(mask, best, 0)
        p0, pb = pop[rows, 0], pop[rows, best]
        e0, eb = E[rows, 0], E[rows, best]
        pop[rows, best] = p0
        pop[rows, 0] = pb
        E[rows, best] = e0
        E[rows, 0] = eb

    def _draw(self) -> tuple[Any, Any, Any, Any]:
        """One generation of random draws for every active problem, from their own streams.

        Returns r0, r1 (K, P) int64 donor indices (distinct, != candidate), crossover mask
        (K, P, D) bool (fill point forced) and redraw uniforms (K, P, D), on the backend.
        """
        P, D = self.config.population, self.n_parameters
        draws = []
        for k in self._active:
            rng = self._rngs[k]
            draws.append((
                rng.integers(0, P - 1, size=P),
                rng.integers(0, P - 2, size=P),
                rng.integers(0, D, size=P),
                rng.random((P, D)),
                rng.random((P, D)),
            ))
        r0, r1, fill, cross_u, redraw = (np.stack(a) for a in zip(*draws, strict=True))
        cand = np.arange(P)
        # r0 uniform over {0..P-1} \ {c}; r1 uniform over {0..P-1} \ {c, r0}
        r0 += r0 >= cand
        low, high = np.minimum(cand, r0), np.maximum(cand, r0)
        r1 += r1 >= low
        r1 += r1 >= high
        cross = cross_u < self.config.recombination
        K = len(self._active)
        cross[np.arange(K)[:, None], cand[None, :], fill] = True
        ops = self._ops
        return ops.asarray(r0), ops.asarray(r1), ops.asarray(cross), ops.asarray(redraw)

    def _generation_immediate(self) -> None:
        ops, F = self._ops, self.config.mutation
        r0, r1, cross, redraw = self._draw()
        pop, E, rows = self._pop, self._energy, self._rows
        for j in range(self.config.population):
            current = pop[:, j]
            mutant = pop[:, 0] + F * (pop[rows, r0[:, j]] - pop[rows, r1[:, j]])
            trial = ops.where(cross[:, j], mutant, current)
            trial = ops.where((trial > 1) | (trial < 0), redraw[:, j], trial)
            e = self._evaluate(trial[:, None, :])[:, 0]
            accept = e <= E[:, j]
            pop[:, j] = ops.where(accept[:, None], trial, current)
            E[:, j] = ops.where(accept, e, E[:, j])
            self._promote_lowest(accept & (e <= E[:, 0]))

    def _generation_deferred(self) -> None:
        ops, F = self._ops, self.config.mutation
        r0, r1, cross, redraw = self._draw()
        pop, E, rows = self._pop, self._energy, self._rows[:, None]
        mutant = pop[:, :1] + F * (pop[rows, r0] - pop[rows, r1])
        trial = ops.where(cross, mutant, pop)
        trial = ops.where((trial > 1) | (trial < 0), redraw, trial)
        e = self._evaluate(trial)
        accept = e <= E
        self._pop = ops.where(accept[..., None], trial, pop)
        self._energy = ops.where(accept, e, E)
        self._promote_lowest()

    def _finish(self, finished: np.ndarray, converged: np.ndarray) -> None:
        """Record results of the rows in ``finished`` (bool (K,)) and drop them."""
        if not finished.any():
            return
        ops = self._ops
        idx = np.flatnonzero(finished)
        x = ops.to_numpy(self._scale(self._pop[ops.asarray(idx), 0]))
        fun = ops.to_numpy(self._energy[ops.asarray(idx), 0])
        P = self.config.population
        for n, row in enumerate(idx):
            b = int(self._active[row])
            xb = np.array(x[n], dtype=np.float64)
            xb.setflags(write=False)
            hist = self._history[b, : self._generation + 1].copy()
            hist.setflags(write=False)
            ok = bool(converged[row])
            self._results[b] = DEResult(
                problem_id=int(self.problem_ids[b]),
                x=xb,
                fun=float(fun[n]),
                nit=self._generation,
                nfev=P * (self._generation + 1),
                converged=ok,
                message=MESSAGE_SUCCESS if ok else MESSAGE_MAXITER,
                history=hist,
            )
        keep = ~finished
        keep_b = ops.asarray(keep)
        self._pop = self._pop[keep_b]
        self._energy = self._energy[keep_b]
        self._active = self._active[keep]
        self._rows = ops.asarray(np.arange(self._active.size))

    def _record_best(self) -> np.ndarray:
        """Store each active problem's best energy in its history; return host energies."""
        E = self._ops.to_numpy(self._energy)
        self._history[self._active, self._generation] = E[:, 0]
        return E

    # ------------------------------------------------------------------ public API
    def initialize(self) -> None:
        """Evaluate the initial populations (one objective call (B, P, D)); idempotent."""
        if self._energy is not None:
            return
        self._energy = self._evaluate(self._pop)
        self._promote_lowest()
        self._record_best()
        logger.debug("DE init: %d problems, population %d", self.n_problems,
                     self.config.population)
        if self.config.maxiter == 0:
            none = np.zeros(self._active.size, dtype=bool)
            self._finish(~none, none)

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """Run one generation of every active problem.

        Returns
        -------
        problem_ids : numpy.ndarray
            (K,) ids of the problems that took part in this generation.
        best_fun : numpy.ndarray
            (K,) their best energies after it.
        """
        self.initialize()
        if self.done:
            raise SolverStateError("all problems have finished; read results() instead of step()")
        ids = self.active_problem_ids
        if self.config.updating == "immediate":
            self._generation_immediate()
        else:
            self._generation_deferred()
        self._generation += 1
        E = self._record_best()
        cfg = self.config
        with np.errstate(invalid="ignore", over="ignore"):
            converged = (~np.isinf(E).any(axis=1)) & (
                E.std(axis=1) <= cfg.atol + cfg.tol * np.abs(E.mean(axis=1))
            )
        finished = converged | (self._generation >= cfg.maxiter)
        logger.debug("DE generation %d: %d active, %d converged, %d finished",
                     self._generation, ids.size, int(converged.sum()), int(finished.sum()))
        best = E[:, 0].copy()
        self._finish(finished, converged)
        return ids, best

    def take_finished(self) -> list[tuple[int, DEResult]]:
        """``(batch position, result)`` of problems finished since the last call.

        Lets a caller store each problem's result as soon as it stops, while others run on.
        """
        out = []
        for b, result in enumerate(self._results):
            if result is not None and b not in self._taken:
                self._taken.add(b)
                out.append((b, result))
        return out

    def results(self) -> list[DEResult]:
        """(B,) results in batch order; only once :attr:`done`."""
        if not self.done:
            raise SolverStateError(
                f"{self._active.size} problems are still running; call step() until done "
                f"(or use run())"
            )
        return [r for r in self._results if r is not None]

    def run(self, callback: ProgressCallback | None = None) -> list[DEResult]:
        """Step until every problem has finished; return :meth:`results`."""
        self.initialize()
        while not self.done:
            ids, best = self.step()
            if callback is not None:
                callback(self._generation, ids, best)
        return self.results()


def differential_evolution_batch(
    objective: Objective,
    bounds: Sequence[tuple[float, float]] | np.ndarray,
    *,
    n_problems: int,
    problem_ids: Sequence[int] | np.ndarray | None = None,
    integrality: bool | Sequence[bool] | np.ndarray | None = None,
    config: DEConfig = DEConfig(),
    backend: str = "numpy",
    device: str | torch.device | None = None,
    callback: ProgressCallback | None = None,
) -> list[DEResult]:
    """Minimise ``n_problems`` independent problems with batched best1bin DE.

    Equivalent in distribution to calling, per problem,
    ``scipy.optimize.differential_evolution(f, bounds, strategy='best1bin',
    popsize=population / D, init='latinhypercube', mutation=F, recombination=CR, tol=tol,
    atol=atol, maxiter=maxiter, polish=False, integrality=integrality, updating=updating)``.

    Parameters
    ----------
    objective : Objective
        ``objective(problem_index (K,), X (K, N, D)) -> (K, N)`` float64 energies; ``X`` is a
        NumPy array (``backend="numpy"``) or a torch tensor on ``device`` (``"torch"``).
    bounds : sequence of (low, high)
        (D, 2) bounds shared by all problems.
    n_problems : int
        Number of problems B.
    problem_ids : sequence of int, optional
        (B,) ids seeding each problem's random stream (default ``range(B)``).
    integrality : bool or sequence of bool, optional
        (D,) integer parameters.
    config : DEConfig
        Algorithm settings.
    backend : {"numpy", "torch"}
        Array backend.
    device : str or torch.device, optional
        Torch device (default CPU); only with ``backend="torch"``.
    callback : callable, optional
        ``callback(generation, problem_ids (K,), best_fun (K,))`` after each generation.

    Returns
    -------
    list of DEResult
        (B,) results in batch order.
    """
    solver = BatchDESolver(
        objective,
        bounds,
        n_problems=n_problems,
        problem_ids=problem_ids,
        integrality=integrality,
        config=config,
        backend=backend,
        device=device,
    )
    return solver.run(callback)
