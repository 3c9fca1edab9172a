"""One-pixel confidence maps: every pixel x a colour grid, reduced to min / max / mean score.

Brute force on any classifier, and an exact incremental path for Keras networks
(:mod:`onepixel.confmap.fast`); results, checkpoints and figures.
"""

from onepixel.confmap.engine import (
    METHODS,
    PARTIAL_NAME,
    ConfmapConfig,
    compute_confmap,
    compute_confmaps,
    confmap_image_file,
    load_confmap_classifier,
    save_confmap,
)
from onepixel.confmap.result import (
    RESULT_NAME,
    ConfidenceMap,
    colour_grid,
    colour_levels,
    load_confmap,
    write_confmap_npz,
)
from onepixel.confmap.runs import RunImage, confmap_run, select_run_images
from onepixel.errors import ConfmapError

__all__ = [
    "METHODS", "PARTIAL_NAME", "RESULT_NAME", "ConfidenceMap", "ConfmapConfig", "ConfmapError",
    "RunImage", "colour_grid", "colour_levels", "compute_confmap", "compute_confmaps",
    "confmap_image_file", "confmap_run", "load_confmap", "load_confmap_classifier", "save_confmap",
    "select_run_images", "write_confmap_npz",
]
