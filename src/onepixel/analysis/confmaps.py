"""Statistics of the one-pixel confidence maps stored in a RUN (``RUN/confmaps/*/confmap.npz``).

The map type and its loader are :class:`onepixel.confmap.result.ConfidenceMap` and
:func:`onepixel.confmap.result.load_confmap`; this module only summarises maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.confmap.result import ConfidenceMap, load_confmap

__all__ = ["ConfidenceMap", "ConfmapStats", "confmap_stats", "load_confmap"]


@dataclass(frozen=True)
class ConfmapStats:
    """Where a confidence map is lowest and highest, and its checkerboard contrast.

    ``even_min_mean`` / ``other_min_mean``: mean of the ``min`` map over pixels with both
    coordinates even / all other pixels (the chromatic paper's checkerboard, Fig. 5).
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
                        float(np.nanmean(cm.min[~even])))
