"""Defences against one-pixel attacks, as classifier wrappers (``--defence``).

- :mod:`~onepixel.defences.spec`: parse ``NAME[:ARG][,NAME...]``;
- :mod:`~onepixel.defences.filters`: the filters on uint8 batches (median, blur, repair, JPEG,
  bit depth) and the 8-neighbour statistics (h, residual against the median);
- :mod:`~onepixel.defences.wrapper`: :class:`DefendedClassifier`, :func:`defend`.

See docs/defences.md. Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "apply_defence": "onepixel.defences.wrapper",
    "DEFENCES": "onepixel.defences.spec",
    "DefenceStep": "onepixel.defences.spec",
    "DefendedClassifier": "onepixel.defences.wrapper",
    "defence_of": "onepixel.defences.wrapper",
    "defend": "onepixel.defences.wrapper",
    "format_defence": "onepixel.defences.spec",
    "h_map": "onepixel.defences.filters",
    "parse_defence": "onepixel.defences.spec",
    "residual_map": "onepixel.defences.filters",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
