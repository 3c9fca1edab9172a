"""Statistics of the one-pixel confidence maps stored in a RUN (``RUN/confmaps/*/confmap.npz``).

The map type and its loader are :class:`onepixel.confmap.result.ConfidenceMap` and
:func:`onepixel.confmap.result.load_confmap`; this module only summarises maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.confmap.result import ConfidenceMap, load_confmap
from onepixel.runs.evidence import Evidence, compare_groups

__all__ = ["ConfidenceMap", "ConfmapStats", "confmap_stats", "load_confmap", "map_provenance"]

#: How each evaluator recorded in a map (``method``) computed it (docs/confmap.md); maps made
#: before the evaluator names were shared with the attack say ``fast`` / ``brute``.
ENGINES = {"incremental": "exact incremental (only what the pixel changes is recomputed)",
           "full": "brute force (the whole image scored per colour)"}
ENGINES |= {"fast": ENGINES["incremental"], "brute": ENGINES["full"]}


@dataclass(frozen=True)
class ConfmapStats:
    """Where a confidence map is lowest and highest, and its checkerboard contrast.

    ``even_min_mean`` / ``other_min_mean``: mean of the ``min`` map over pixels with both
    coordinates even / all other pixels (the chromatic paper's checkerboard, Fig. 5);
    ``checkerboard`` tests whether the two sets of ``min`` values differ (Mann-Whitney U).
    """

    lowest: float
    lowest_xy: tuple[int, int]
    lowest_rgb: tuple[int, int, int] | None
    highest: float
    highest_xy: tuple[int, int]
    highest_rgb: tuple[int, int, int] | None
    mean: float
    even_min_mean: float
    other_min_mean: float
    checkerboard: Evidence | None = None


def confmap_stats(cm: ConfidenceMap) -> ConfmapStats:
    """Summarise one :class:`~onepixel.confmap.result.ConfidenceMap`."""
    ly, lx = np.unravel_index(int(np.nanargmin(cm.min)), cm.min.shape)
    hy, hx = np.unravel_index(int(np.nanargmax(cm.max)), cm.max.shape)
    yy, xx = np.indices(cm.min.shape)
    even = (yy % 2 == 0) & (xx % 2 == 0)

    def rgb(arr: np.ndarray | None, y: int, x: int) -> tuple[int, int, int] | None:
        return None if arr is None else tuple(int(v) for v in arr[y, x])  # type: ignore[return-value]

    return ConfmapStats(float(cm.min[ly, lx]), (int(lx), int(ly)), rgb(cm.argmin_rgb, ly, lx),
                        float(cm.max[hy, hx]), (int(hx), int(hy)), rgb(cm.argmax_rgb, hy, hx),
                        float(np.nanmean(cm.mean)), float(np.nanmean(cm.min[even])),
                        float(np.nanmean(cm.min[~even])), compare_groups(cm.min[even], cm.min[~even]))


def map_provenance(cm: ConfidenceMap) -> str:
    """How a map was made, from its own metadata: step, colours per channel, engine, model and
    defence, e.g. ``"step 85: 4 levels per channel, 64 colours; exact incremental (...); model
    max-mitosis; defence none"``. Facts the map does not record are said to be unrecorded."""
    if cm.step:
        per_channel = round(cm.n_colours ** (1 / 3))
        grid = f"step {cm.step}: {per_channel} levels per channel, {cm.n_colours:,} colours"
    else:
        grid = "colour step not recorded"
    engine = ENGINES.get(cm.method, f"engine {cm.method}" if cm.method else "engine not recorded")
    model = f"model {cm.model}" if cm.model else "model not recorded"
    defence = cm.metadata.get("defence")
    return f"{grid}; {engine}; {model}; " + (f"defence {defence}" if defence else "defence not recorded")
