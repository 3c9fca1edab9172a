"""``onepixel evaluate``: the strongest one-pixel evaluation per query, a fixed ensemble.

- :mod:`~onepixel.evaluation.config`: :class:`EvaluateConfig` (budgets, methods, labels).
- :mod:`~onepixel.evaluation.runner`: :func:`evaluate`: rs, then DE, then the exhaustive corner
  scan, each on the images still robust; ``DIR/evaluation.csv`` and the headline.
- :mod:`~onepixel.evaluation.curves`: success against queries per method, from the rows.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "EVALUATION_COLUMNS": "onepixel.evaluation.config",
    "EvaluateConfig": "onepixel.evaluation.config",
    "evaluate": "onepixel.evaluation.runner",
    "read_evaluation": "onepixel.evaluation.runner",
    "success_curves": "onepixel.evaluation.curves",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
