"""Batched differential evolution on arrays (numpy or torch): many problems, one solver, no models.

:class:`BatchDESolver` can be stepped one generation at a time and reproduces scipy's
``differential_evolution`` (its twelve strategies, Latin hypercube, random, Sobol' and Halton
initialisation, dithering, integrality, immediate and deferred updating, a callback that stops
problems) problem by problem; :func:`differential_evolution_batch` runs it to the end.
"""

from onepixel.optimize.de import (
    INITS,
    MESSAGE_CALLBACK,
    MESSAGE_MAXITER,
    MESSAGE_SUCCESS,
    STRATEGIES,
    BatchDESolver,
    DEConfig,
    DEResult,
    ProgressCallback,
    StopCallback,
    differential_evolution_batch,
)

__all__ = ["INITS", "MESSAGE_CALLBACK", "MESSAGE_MAXITER", "MESSAGE_SUCCESS", "STRATEGIES",
           "BatchDESolver", "DEConfig", "DEResult", "ProgressCallback", "StopCallback",
           "differential_evolution_batch"]
