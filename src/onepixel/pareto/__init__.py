"""``onepixel pareto``: stealthy one-pixel attacks, the (score, visibility) trade-off.

- :mod:`~onepixel.stealth.config`: :class:`ParetoConfig`, the search's settings;
- :mod:`~onepixel.stealth.pareto`: the per-image NSGA-II search (pymoo)
  over integer ``(x, y, r, g, b)`` (``(x, y, v)`` greyscale) and its non-dominated front for
  (energy towards the goal, h), for any goal (binary, untargeted, targeted);
- :mod:`~onepixel.stealth.curve`: the budget curve (success rate against the colour budget H)
  and each image's lowest flipping h, from the fronts;
- :mod:`~onepixel.stealth.runner`: :func:`run_pareto`, the command: ``front.csv``, figures,
  ``budget_curve.csv``/``.png`` and ``summary.json``.

See docs/stealth.md. Public names load on first use (:func:`onepixel.lazy_exports`).
"""

from onepixel import lazy_exports

_EXPORTS = {
    "BUDGET_GRID": "onepixel.stealth.curve",
    "Detector": "onepixel.stealth.runner",
    "ImageFront": "onepixel.stealth.pareto",
    "ParetoConfig": "onepixel.stealth.config",
    "budget_curve": "onepixel.stealth.curve",
    "non_dominated": "onepixel.stealth.pareto",
    "pareto_front": "onepixel.stealth.pareto",
    "run_pareto": "onepixel.stealth.runner",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
