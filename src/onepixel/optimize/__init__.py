"""Batched differential evolution on arrays (numpy or torch): many problems, one solver, no models.

:class:`BatchDESolver` can be stepped one generation at a time and reproduces scipy's
``differential_evolution`` (best1bin, Latin hypercube, integrality, immediate and deferred
updating) problem by problem; :func:`differential_evolution_batch` runs it to the end.
"""

from onepixel.optimize.de import (
    MESSAGE_MAXITER,
    MESSAGE_SUCCESS,
    BatchDESolver,
    DEConfig,
    DEResult,
    differential_evolution_batch,
)

__all__ = ["MESSAGE_MAXITER", "MESSAGE_SUCCESS", "BatchDESolver", "DEConfig", "DEResult",
           "differential_evolution_batch"]
