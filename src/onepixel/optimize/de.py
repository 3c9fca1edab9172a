"""Batched differential evolution: many independent problems solved in lockstep.

This module reimplements the part of :func:`scipy.optimize.differential_evolution` that the
one-pixel attack needs (the twelve built-in strategies, ``init='latinhypercube'``, ``'random'``,
``'sobol'`` or ``'halton'``, a fixed or dithered mutation constant, ``polish=False``, optional
``integrality``, ``updating='immediate'`` or ``'deferred'``, a callback that stops a problem),
but solves ``B`` independent problems at once so that one objective call scores candidates of
many problems (e.g. one batched forward pass of a classifier over many images). Arrays are laid
out as ``(problems, population, parameters) = (B, P, D)``.

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
* Initialisation (``DEConfig.init``), in the unit cube, then the lowest-energy member is
  swapped to index 0 (``nfev = P`` after initialisation):

  - ``"latinhypercube"`` (default): ``P`` equal segments per parameter, one uniform draw inside
    each, each column permuted independently;
  - ``"random"``: ``P x D`` independent uniform draws;
  - ``"sobol"`` / ``"halton"``: the first ``P`` points of a scrambled
    :class:`scipy.stats.qmc.Sobol` / :class:`~scipy.stats.qmc.Halton` engine whose scrambling
    is seeded from the problem's own generator (scipy seeds it from its solver's generator).
    As in scipy, ``"sobol"`` rounds the population up to the next power of two (the balance
    properties of Sobol' points need it); this module logs a warning when it does.
    :attr:`DEConfig.effective_population` is the population actually used.

* Mutation (``DEConfig.strategy``, scipy's formulas, with ``b`` the best member (index 0),
  ``c`` the candidate and ``r0, r1, ...`` distinct members drawn uniformly among all members
  except the candidate, so ``b`` may be drawn):

  - ``best1``: ``b + F (r0 - r1)`` (default, ``best1bin``);
  - ``rand1``: ``r0 + F (r1 - r2)``;
  - ``randtobest1``: ``r0 + F (b - r0) + F (r1 - r2)`` (applied in that order, as scipy);
  - ``currenttobest1``: ``c + F (b - c + r0 - r1)``;
  - ``best2``: ``b + F (r0 + r1 - r2 - r3)``;
  - ``rand2``: ``r0 + F (r1 + r2 - r3 - r4)``.

  A strategy with ``n`` random members needs ``population >= n + 1``; as in scipy, at least 5
  in all cases (so only ``rand2*`` needs more: 6).
* ``F`` is ``DEConfig.mutation``, or with a ``(min, max)`` tuple ("dithering") a value drawn
  uniformly in ``[min, max)`` once per generation per problem (scipy draws it once per
  generation of its single problem).
* Crossover: ``*bin`` (binomial): each parameter comes from the mutant with probability ``CR``,
  one uniformly drawn position always does; ``*exp`` (exponential): starting at a uniformly
  drawn position, ``L`` consecutive parameters (cyclically) come from the mutant, ``L - 1``
  being the number of successes of ``CR`` trials before the first failure (at most ``D``).
  Trial values outside ``[0, 1]`` are redrawn uniformly in ``[0, 1)``; a trial replaces its
  candidate when ``f(trial) <= f(candidate)``.
* ``updating="immediate"``: population slots are processed one at a time; slot ``j`` of all
  active problems is evaluated in one objective call of shape ``(K, 1, D)``. An accepted trial
  whose energy is ``<=`` the best energy triggers scipy's "promote lowest" (swap the argmin of
  the population energies into index 0), so later slots of the same generation mutate around
  the new best.
* ``updating="deferred"``: a whole generation of trials is built from the population at the
  start of the generation and evaluated in one call of shape ``(K, P, D)``; then selection,
  then promote lowest.
* After each generation the ``stop`` callback of :meth:`BatchDESolver.step` (if any) may stop
  any of the problems that took part in it (scipy's ``callback`` returning True, checked before
  convergence): they finish with ``converged=False`` (scipy's ``success=False``),
  ``stopped=True`` and :data:`MESSAGE_CALLBACK`.
* After each generation (never before the first one, so the earliest stop is ``nit = 1``) a
  problem has converged when no energy is infinite and
  ``std(E) <= atol + tol * abs(mean(E))`` over its population energies. Converged, stopped
  problems and problems that reached ``maxiter`` drop out of later objective calls.
* ``nfev`` counts objective evaluations per problem as scipy does without ``vectorized``:
  ``P`` for the initial population plus ``P`` per generation, i.e. ``P * (nit + 1)``.

With the default settings (``best1bin``, ``latinhypercube``, a float mutation) the draws and
results are exactly those of the module before these options existed.

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

Stop each problem as soon as its best energy is below 1 (with a dithered rand1bin):

>>> res = differential_evolution_batch(
...     sphere, [(0, 10)] * 2, n_problems=4, integrality=[True, True],
...     config=DEConfig(population=20, maxiter=50, strategy="rand1bin", mutation=(0.5, 1.0)),
...     stop=lambda ids, best_x, best_fun: best_fun < 1.0)
>>> all(r.stopped and r.fun < 1.0 and r.message == MESSAGE_CALLBACK for r in res)
True
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
    "INITS",
    "MESSAGE_CALLBACK",
    "MESSAGE_MAXITER",
    "MESSAGE_SUCCESS",
    "STRATEGIES",
    "BatchDESolver",
    "DEConfig",
    "DEResult",
    "Objective",
    "ProgressCallback",
    "StopCallback",
    "differential_evolution_batch",
]

logger = logging.getLogger(__name__)

MESSAGE_SUCCESS = "Optimization terminated successfully."
MESSAGE_MAXITER = "Maximum number of iterations has been exceeded."
MESSAGE_CALLBACK = "callback function requested stop early"

_UPDATING = ("immediate", "deferred")
_BACKENDS = ("numpy", "torch")

# mutation rule -> number of random members it needs (besides the candidate)
_MUTATION_SAMPLES = {"best1": 2, "rand1": 3, "randtobest1": 3, "currenttobest1": 2,
                     "best2": 4, "rand2": 5}
STRATEGIES: tuple[str, ...] = tuple(
    f"{rule}{crossover}" for crossover in ("bin", "exp") for rule in _MUTATION_SAMPLES
)
"""The strategy names :class:`DEConfig` accepts (scipy's twelve built-in strategies)."""

INITS: tuple[str, ...] = ("latinhypercube", "random", "sobol", "halton")
"""The initialisations :class:`DEConfig` accepts."""

_MIN_POPULATION = 5  # scipy's minimum, whatever the strategy
_warned_sobol: set[tuple[int, int]] = set()

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

StopCallback = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]
"""``stop(problem_ids, best_x, best_fun) -> None | mask``: called after each generation.

Receives NumPy arrays (whatever the backend): the (K,) int64 ids of the K problems that took
part in the generation (including those that converge or reach ``maxiter`` with it), their
(K, D) float64 best parameters (integer-valued for integer parameters, like ``DEResult.x``) and
their (K,) float64 best energies. Returns None (stop nothing) or a (K,) bool mask (a NumPy
array, a list, or a bool torch tensor) of the problems to stop now: they finish with
``converged=False``, ``stopped=True`` and :data:`MESSAGE_CALLBACK` (scipy's callback stop,
which takes precedence over convergence and ``maxiter``) and take part in no later objective
call. The arrays are copies; the callback may keep them.
"""


def _dither_error(value: object) -> ConfigError:
    return ConfigError(
        f"DEConfig.mutation must be a float in [0, 2) or a (min, max) pair of floats with "
        f"0 <= min <= max < 2 for dithering, got {value!r}; the papers use 0.5, scipy's "
        f"default is (0.5, 1)."
    )


@dataclass(frozen=True)
class DEConfig:
    """Settings of the batched differential evolution (defaults: the papers' settings).

    Attributes
    ----------
    population : int
        Total number of population members P (scipy's ``popsize * D``; scipy's
        ``popsize=40`` with D=5 is 200). At least 5 (6 for ``rand2bin``/``rand2exp``). With
        ``init="sobol"`` it is rounded up to the next power of two, as scipy does (see
        :attr:`effective_population`).
    maxiter : int
        Maximum number of generations (>= 0).
    mutation : float or (float, float)
        Differential weight F in [0, 2); or a ``(min, max)`` pair with
        ``0 <= min <= max < 2`` for dithering: F is drawn uniformly in ``[min, max)`` once per
        generation and problem. A list or array pair is stored as a tuple of floats.
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
    strategy : str
        One of :data:`STRATEGIES`: ``"best1bin"`` (default), ``"rand1bin"``,
        ``"randtobest1bin"``, ``"currenttobest1bin"``, ``"best2bin"``, ``"rand2bin"`` and the
        same six with exponential crossover (``"best1exp"``, ...), as scipy's ``strategy``.
    init : str
        One of :data:`INITS`: ``"latinhypercube"`` (default), ``"random"``, ``"sobol"`` or
        ``"halton"`` (these two use :mod:`scipy.stats.qmc`, imported only then).
    """

    population: int = 200
    maxiter: int = 100
    mutation: float | tuple[float, float] = 0.5
    recombination: float = 0.7
    tol: float = 0.01
    atol: float = 0.0
    updating: str = "immediate"
    seed: int = 0
    widen_integer_bounds: bool = False
    strategy: str = "best1bin"
    init: str = "latinhypercube"

    def __post_init__(self) -> None:
        if not is_integer(self.population) or self.population < _MIN_POPULATION:
            raise ConfigError(
                f"DEConfig.population must be an integer >= {_MIN_POPULATION} (the strategies "
                f"need distinct members), got {self.population!r}; use e.g. "
                f"population=15 * n_parameters."
            )
        if not is_integer(self.maxiter) or self.maxiter < 0:
            raise ConfigError(
                f"DEConfig.maxiter must be a non-negative integer, got {self.maxiter!r}."
            )
        self._check_mutation()
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
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise ConfigError(
                f"DEConfig.strategy must be one of {', '.join(STRATEGIES)}, "
                f"got {self.strategy!r}; the papers use 'best1bin'."
            )
        needed = _MUTATION_SAMPLES[self.strategy[:-3]] + 1
        if self.population < needed:
            raise ConfigError(
                f"DEConfig.population must be >= {needed} with strategy={self.strategy!r} "
                f"(the candidate and {needed - 1} other distinct members), "
                f"got {self.population}; raise population."
            )
        if not isinstance(self.init, str) or self.init not in INITS:
            raise ConfigError(
                f"DEConfig.init must be one of {', '.join(INITS)}, got {self.init!r}; "
                f"the papers use 'latinhypercube'."
            )

    def _check_mutation(self) -> None:
        value = self.mutation
        if is_real(value):
            if not 0.0 <= value < 2.0:
                raise _dither_error(value)
            return
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise _dither_error(value)
        pair = [] if isinstance(value, np.ndarray) and value.ndim != 1 else list(value)
        if len(pair) != 2 or not all(is_real(v) for v in pair):
            raise _dither_error(value)
        lo, hi = float(pair[0]), float(pair[1])
        if not (0.0 <= lo < 2.0 and 0.0 <= hi < 2.0):
            raise _dither_error(value)
        if lo > hi:
            raise ConfigError(
                f"DEConfig.mutation = {value!r} has min > max; give the dithering range in "
                f"order: ({hi}, {lo})."
            )
        object.__setattr__(self, "mutation", (lo, hi))

    @property
    def dither(self) -> tuple[float, float] | None:
        """The ``(min, max)`` range of F when dithering, else None."""
        return self.mutation if isinstance(self.mutation, tuple) else None

    @property
    def effective_population(self) -> int:
        """The population actually used: :attr:`population`, rounded up to the next power of
        two with ``init="sobol"`` (as scipy)."""
        if self.init == "sobol":
            return 1 << (self.population - 1).bit_length()
        return self.population


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
        Number of objective evaluations for this problem, ``P * (nit + 1)`` with ``P`` the
        :attr:`DEConfig.effective_population`.
    converged : bool
        True when the convergence criterion stopped the problem (scipy's ``success``).
    message : str
        :data:`MESSAGE_SUCCESS`, :data:`MESSAGE_MAXITER` or :data:`MESSAGE_CALLBACK`, as scipy.
    history : numpy.ndarray
        (nit + 1,) float64 best energy after initialisation (``history[0]``) and after each
        generation (``history[g]``); non-increasing, ``history[-1] == fun``.
    stopped : bool
        True when the ``stop`` callback stopped the problem (then ``converged`` is False, as
        scipy's ``success`` is after a callback stop).
    """

    problem_id: int
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    converged: bool
    message: str
    history: np.ndarray
    stopped: bool = False


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



def _qmc(rng: np.random.Generator, P: int, D: int, engine: str) -> np.ndarray:
    """(P, D) first points of a scrambled Sobol'/Halton sequence seeded from ``rng``."""
    try:
        from scipy.stats import qmc
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ConfigError(
            f"DEConfig(init={engine!r}) needs scipy >= 1.15 (pip install 'scipy>=1.15'); "
            f"or use init='latinhypercube' or 'random'"
        ) from exc
    sampler = qmc.Sobol(d=D, rng=rng) if engine == "sobol" else qmc.Halton(d=D, rng=rng)
    return sampler.random(n=P)


def _initial_population(rng: np.random.Generator, P: int, D: int, init: str) -> np.ndarray:
    """(P, D) initial population of one problem in the unit cube, as scipy's ``init``."""
    if init == "latinhypercube":
        return _latin_hypercube(rng, P, D)
    if init == "random":
        return rng.uniform(size=(P, D))
    return _qmc(rng, P, D, init)


def _distinct_picks(rng: np.random.Generator, P: int, n: int) -> list[np.ndarray]:
    """``n`` (P,) int64 arrays of member indices: for each candidate ``c``, the ``n`` picks are
    distinct, different from ``c``, and uniform over such ordered tuples (scipy's
    ``_select_samples``). Draws ``rng.integers(0, P - 1 - i, size=P)`` for ``i < n``."""
    raw = [rng.integers(0, P - 1 - i, size=P) for i in range(n)]
    excluded = [np.arange(P)]
    for r in raw:
        # r is uniform over {0 .. P-1-len(excluded)}: map it to the r-th value that is not
        # excluded, by stepping over the excluded values in increasing order
        for s in np.sort(np.stack(excluded), axis=0):
            r += r >= s
        excluded.append(r)
    return raw


def _crossover_mask(cross_u: np.ndarray, fill: np.ndarray, CR: float, binomial: bool
                    ) -> np.ndarray:
    """(K, P, D) bool: which trial parameters come from the mutant.

    ``cross_u`` (K, P, D) uniforms, ``fill`` (K, P) positions in ``[0, D)``. Binomial: ``u < CR``
    plus the fill position. Exponential: ``L`` consecutive positions from ``fill`` (cyclic),
    ``L`` = 1 + the number of leading ``u < CR`` among positions ``1..D-1`` of ``u`` (as scipy,
    which forces its first crossover test to succeed).
    """
    cross = cross_u < CR
    if binomial:
        K, P = fill.shape
        cross[np.arange(K)[:, None], np.arange(P)[None, :], fill] = True
        return cross
    D = cross.shape[-1]
    cross[..., 0] = True
    length = np.where(cross.all(axis=-1), D, cross.argmin(axis=-1))  # first failure
    offset = (np.arange(D) - fill[..., None]) % D
    return offset < length[..., None]


class BatchDESolver:
    """Steppable batched differential evolution (like scipy's solver object).

    Construction draws the initial populations (:attr:`DEConfig.init`); :meth:`initialize`
    evaluates them (called by the first :meth:`step` if needed); each :meth:`step` runs one
    generation of every active problem; :meth:`results` returns one :class:`DEResult` per
    problem once :attr:`done`. :meth:`run` does all of it.

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
        result depends only on ``(config, bounds, integrality, objective, problem_id)`` (and on
        the ``stop`` callback's answers for it).
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
        self.population = config.effective_population
        if self.population != config.population and (
                key := (config.population, self.population)) not in _warned_sobol:
            _warned_sobol.add(key)
            logger.warning("init='sobol' needs a power-of-two population: using %d members "
                           "instead of %d, as scipy does", self.population, config.population)
        self._n_picks = _MUTATION_SAMPLES[config.strategy[:-3]]
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
        P, D = self.population, self.n_parameters
        self._pop = ops.asarray(np.stack([_initial_population(r, P, D, config.init)
                                          for r in self._rngs]))
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
        """True when every problem has finished (converged, stopped or reached ``maxiter``)."""
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

    def _draw(self) -> tuple[Any, list[Any], Any, Any]:
        """One generation of random draws for every active problem, from their own streams.

        Returns F (a float, or (K,) on the backend when dithering), the donor indices (a list
        of n (K, P) int64 arrays: distinct, != candidate), the crossover mask (K, P, D) bool
        and redraw uniforms (K, P, D), on the backend. Per problem the draws are, in order:
        F (dithering only), the n picks, the (P,) crossover positions, (P, D) crossover
        uniforms, (P, D) redraw uniforms (best1bin without dithering: exactly the draws of
        the module before strategies and dithering existed).
        """
        cfg = self.config
        P, D, n = self.population, self.n_parameters, self._n_picks
        dither = cfg.dither
        draws = []
        for k in self._active:
            rng = self._rngs[k]
            f = rng.uniform(dither[0], dither[1]) if dither is not None else cfg.mutation
            picks = _distinct_picks(rng, P, n)
            draws.append((f, *picks, rng.integers(0, D, size=P), rng.random((P, D)),
                          rng.random((P, D))))
        cols = [np.stack(a) for a in zip(*draws, strict=True)]
        F_host, picks, (fill, cross_u, redraw) = cols[0], cols[1 : 1 + n], cols[1 + n :]
        cross = _crossover_mask(cross_u, fill, cfg.recombination, cfg.strategy.endswith("bin"))
        ops = self._ops
        F = ops.asarray(F_host) if dither is not None else cfg.mutation
        return (F, [ops.asarray(p) for p in picks], ops.asarray(cross), ops.asarray(redraw))

    def _mutant(self, F: Any, best: Any, current: Any, donors: list[Any]) -> Any:
        """scipy's mutation rule of the strategy (shapes broadcast: (K, [P,] D))."""
        rule = self.config.strategy[:-3]
        if rule == "best1":
            return best + F * (donors[0] - donors[1])
        if rule == "rand1":
            return donors[0] + F * (donors[1] - donors[2])
        if rule == "randtobest1":
            b = donors[0] + F * (best - donors[0])
            return b + F * (donors[1] - donors[2])
        if rule == "currenttobest1":
            return current + F * (best - current + donors[0] - donors[1])
        if rule == "best2":
            return best + F * (donors[0] + donors[1] - donors[2] - donors[3])
        return donors[0] + F * (donors[1] + donors[2] - donors[3] - donors[4])  # rand2

    def _generation_immediate(self) -> None:
        ops = self._ops
        F, picks, cross, redraw = self._draw()
        if self.config.dither is not None:
            F = F[:, None]  # (K, 1)
        pop, E, rows = self._pop, self._energy, self._rows
        for j in range(self.population):
            current = pop[:, j]
            mutant = self._mutant(F, pop[:, 0], current, [pop[rows, r[:, j]] for r in picks])
            trial = ops.where(cross[:, j], mutant, current)
            trial = ops.where((trial > 1) | (trial < 0), redraw[:, j], trial)
            e = self._evaluate(trial[:, None, :])[:, 0]
            accept = e <= E[:, j]
            pop[:, j] = ops.where(accept[:, None], trial, current)
            E[:, j] = ops.where(accept, e, E[:, j])
            self._promote_lowest(accept & (e <= E[:, 0]))

    def _generation_deferred(self) -> None:
        ops = self._ops
        F, picks, cross, redraw = self._draw()
        if self.config.dither is not None:
            F = F[:, None, None]  # (K, 1, 1)
        pop, E, rows = self._pop, self._energy, self._rows[:, None]
        mutant = self._mutant(F, pop[:, :1], pop, [pop[rows, r] for r in picks])
        trial = ops.where(cross, mutant, pop)
        trial = ops.where((trial > 1) | (trial < 0), redraw, trial)
        e = self._evaluate(trial)
        accept = e <= E
        self._pop = ops.where(accept[..., None], trial, pop)
        self._energy = ops.where(accept, e, E)
        self._promote_lowest()

    def _finish(self, finished: np.ndarray, converged: np.ndarray,
                stopped: np.ndarray | None = None) -> None:
        """Record results of the rows in ``finished`` (bool (K,)) and drop them.

        ``converged`` and ``stopped`` (bool (K,)) say why; ``stopped`` wins.
        """
        if not finished.any():
            return
        ops = self._ops
        idx = np.flatnonzero(finished)
        x = ops.to_numpy(self._scale(self._pop[ops.asarray(idx), 0]))
        fun = ops.to_numpy(self._energy[ops.asarray(idx), 0])
        P = self.population
        for n, row in enumerate(idx):
            b = int(self._active[row])
            xb = np.array(x[n], dtype=np.float64)
            xb.setflags(write=False)
            hist = self._history[b, : self._generation + 1].copy()
            hist.setflags(write=False)
            stop = stopped is not None and bool(stopped[row])
            ok = bool(converged[row]) and not stop
            self._results[b] = DEResult(
                problem_id=int(self.problem_ids[b]),
                x=xb,
                fun=float(fun[n]),
                nit=self._generation,
                nfev=P * (self._generation + 1),
                converged=ok,
                message=MESSAGE_CALLBACK if stop else MESSAGE_SUCCESS if ok else MESSAGE_MAXITER,
                history=hist,
                stopped=stop,
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

    def _ask_stop(self, stop: StopCallback, ids: np.ndarray, best: np.ndarray) -> np.ndarray:
        """(K,) bool: the problems the ``stop`` callback stops now."""
        K = ids.size
        x = self._ops.to_numpy(self._scale(self._pop[:, 0])).astype(np.float64)
        answer = stop(ids.copy(), x, best.copy())
        if answer is None:
            return np.zeros(K, dtype=bool)
        if hasattr(answer, "detach"):  # a torch tensor
            answer = answer.detach().cpu().numpy()
        mask = np.asarray(answer)
        if mask.dtype != np.bool_ or mask.shape != (K,):
            raise ConfigError(
                f"the stop callback must return None or a ({K},) bool mask (one per problem "
                f"it was given), got dtype {mask.dtype} and shape {mask.shape}; compare, e.g. "
                f"return best_fun < threshold"
            )
        return mask

    # ------------------------------------------------------------------ public API
    def initialize(self) -> None:
        """Evaluate the initial populations (one objective call (B, P, D)); idempotent."""
        if self._energy is not None:
            return
        self._energy = self._evaluate(self._pop)
        self._promote_lowest()
        self._record_best()
        logger.debug("DE init: %d problems, population %d", self.n_problems, self.population)
        if self.config.maxiter == 0:
            none = np.zeros(self._active.size, dtype=bool)
            self._finish(~none, none)

    def step(self, stop: StopCallback | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run one generation of every active problem.

        Parameters
        ----------
        stop : StopCallback, optional
            ``stop(problem_ids (K,), best_x (K, D), best_fun (K,)) -> None | (K,) bool``,
            called after the generation (its stop wins over convergence and ``maxiter``) with
            the K problems that took part in it; the problems it marks finish now with
            :data:`MESSAGE_CALLBACK`, ``stopped=True``, ``converged=False``. See
            :data:`StopCallback`.

        Returns
        -------
        problem_ids : numpy.ndarray
            (K,) ids of the problems that took part in this generation.
        best_fun : numpy.ndarray
            (K,) their best energies after it.
        """
        if stop is not None and not callable(stop):
            raise ConfigError(
                f"stop must be callable: stop(problem_ids, best_x, best_fun) -> None or a bool "
                f"mask, got {stop!r}"
            )
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
        best = E[:, 0].copy()
        stopped = self._ask_stop(stop, ids, best) if stop is not None else None
        finished = converged | (self._generation >= cfg.maxiter)
        if stopped is not None:
            finished |= stopped
        logger.debug("DE generation %d: %d active, %d converged, %d stopped, %d finished",
                     self._generation, ids.size, int(converged.sum()),
                     0 if stopped is None else int(stopped.sum()), int(finished.sum()))
        self._finish(finished, converged, stopped)
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

    def run(self, callback: ProgressCallback | None = None,
            stop: StopCallback | None = None) -> list[DEResult]:
        """Step until every problem has finished; return :meth:`results`.

        Parameters
        ----------
        callback : ProgressCallback, optional
            ``callback(generation, problem_ids (K,), best_fun (K,))`` after each generation
            (after ``stop`` has been asked); its return value is ignored.
        stop : StopCallback, optional
            Passed to each :meth:`step`: may stop problems after each generation.
        """
        self.initialize()
        while not self.done:
            ids, best = self.step(stop)
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
    stop: StopCallback | None = None,
) -> list[DEResult]:
    """Minimise ``n_problems`` independent problems with batched differential evolution.

    Equivalent in distribution to calling, per problem,
    ``scipy.optimize.differential_evolution(f, bounds, strategy=strategy,
    popsize=population / D, init=init, mutation=mutation, recombination=CR, tol=tol,
    atol=atol, maxiter=maxiter, polish=False, integrality=integrality, updating=updating,
    callback=...)``.

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
    stop : callable, optional
        ``stop(problem_ids (K,), best_x (K, D), best_fun (K,)) -> None | (K,) bool`` after
        each generation: the problems it marks stop now (:data:`StopCallback`).

    Returns
    -------
    list of DEResult
        (B,) results in batch order.
    """
    if stop is not None and not callable(stop):
        raise ConfigError(
            f"stop must be callable: stop(problem_ids, best_x, best_fun) -> None or a bool "
            f"mask, got {stop!r}"
        )
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
    return solver.run(callback, stop)
