"""``onepixel pareto``: stealthy one-pixel attacks, the (score, visibility) trade-off.

- :mod:`~onepixel.pareto.config`: :class:`ParetoConfig`, the search's settings;
- :mod:`~onepixel.pareto.pareto`: the per-image NSGA-II search (pymoo)
  over integer ``(x, y, r, g, b)`` (``(x, y, v)`` greyscale) and its non-dominated front for
  (energy towards the goal, h), for any goal (binary, untargeted, targeted);
- :mod:`~onepixel.pareto.curve`: the budget curve (success rate against the colour budget H)
  and each image's lowest flipping h, from the fronts;
- :mod:`~onepixel.pareto.runner`: :func:`run_pareto`, the command: ``front.csv``, figures,
  ``budget_curve.csv``/``.png`` and ``summary.json``.

See docs/pareto.md. Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "BUDGET_GRID": "onepixel.pareto.curve",
    "Detector": "onepixel.pareto.runner",
    "ImageFront": "onepixel.pareto.pareto",
    "ParetoConfig": "onepixel.pareto.config",
    "budget_curve": "onepixel.pareto.curve",
    "non_dominated": "onepixel.pareto.pareto",
    "pareto_front": "onepixel.pareto.pareto",
    "run_pareto": "onepixel.pareto.runner",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
