"""One-pixel confidence maps: every pixel x a colour grid, reduced to min / max / mean score.

Brute force on any classifier, and an exact incremental path for Keras networks
(:mod:`onepixel.confmap.incremental`); results, checkpoints and figures.

Public names load on first use (:func:`onepixel._lazy.lazy_exports`).
"""

from onepixel._lazy import lazy_exports

_EXPORTS = {
    "colour_grid": "onepixel.confmap.result",
    "colour_levels": "onepixel.confmap.result",
    "compute_confmap": "onepixel.confmap.engine",
    "compute_confmaps": "onepixel.confmap.engine",
    "ConfidenceMap": "onepixel.confmap.result",
    "confmap_image_file": "onepixel.confmap.engine",
    "confmap_run": "onepixel.confmap.run_maps",
    "ConfmapConfig": "onepixel.confmap.config",
    "ConfmapError": "onepixel.errors",
    "load_confmap": "onepixel.confmap.result",
    "load_confmap_classifier": "onepixel.confmap.engine",
    "EVALUATORS": "onepixel.confmap.config",
    "PARTIAL_NAME": "onepixel.confmap.engine",
    "RESULT_NAME": "onepixel.confmap.result",
    "RunImage": "onepixel.confmap.run_maps",
    "save_confmap": "onepixel.confmap.engine",
    "select_run_images": "onepixel.confmap.run_maps",
    "write_confmap_npz": "onepixel.confmap.result",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
