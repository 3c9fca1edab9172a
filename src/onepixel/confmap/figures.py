"""Figures of confidence maps in the papers' style (chromatic/spatial paper, Figure 5).

Each figure shows the per-pixel heatmap (min, max or mean score over the colour grid) on the
left and the original image on the right, with the best pixel marked. Needs matplotlib (the
``analysis`` extra); the Agg backend is used, so no display is required.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from onepixel.confmap.result import ConfidenceMap
from onepixel.plotting import new_figure, save_png, styled

log = logging.getLogger(__name__)

_TITLES = {"min": "lowest score per pixel", "max": "highest score per pixel",
           "mean": "mean score per pixel"}


def plot_confmap(result: ConfidenceMap, image: np.ndarray | None = None, kind: str = "min"):
    """A matplotlib Figure: ``kind`` heatmap (H, W) beside the original image (H, W, 3).

    Parameters
    ----------
    result : ConfidenceMap
    image : ndarray, shape (H, W, 3), uint8, optional
        Without it, only the heatmap is drawn.
    kind : {"min", "max", "mean"}
    """
    if kind not in _TITLES:
        raise ValueError(f"kind must be one of {', '.join(_TITLES)}, got {kind!r}")
    data = getattr(result, kind)
    ncols = 2 if image is not None else 1
    with styled():
        fig = new_figure(4.2 * ncols + 0.6, 4.2)
        _draw(fig, result, image, kind, data)
    return fig


def _draw(fig, result: ConfidenceMap, image: np.ndarray | None, kind: str, data: np.ndarray) -> None:
    ncols = 2 if image is not None else 1
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    im = ax.imshow(data, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="score")
    ax.set_title(f"{_TITLES[kind]}\n(step {result.step}, {result.n_colours:,} colours)", fontsize=9)
    best = "min" if kind != "max" else "max"
    x, y, score, rgb = result.extreme(best)
    if kind != "mean":
        ax.plot([x], [y], marker="s", markersize=7, markerfacecolor="none", markeredgecolor="red")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if image is not None:
        ax2 = axes[1]
        ax2.imshow(np.asarray(image, dtype=np.uint8), interpolation="nearest")
        ax2.set_title(f"original, score {result.original_score:.4g}", fontsize=9)
        ax2.plot([x], [y], marker="s", markersize=7, markerfacecolor="none", markeredgecolor="red")
        ax2.set_xticks([])
        ax2.set_yticks([])
    fig.suptitle(f"{result.model}: {best} {score:.4g} at (x={x}, y={y}), rgb={rgb}", fontsize=9)


def save_confmap_figures(result: ConfidenceMap, out_dir: str | Path,
                         image: np.ndarray | None = None,
                         kinds: tuple[str, ...] = ("min", "max", "mean")) -> list[Path]:
    """Write ``confmap_<kind>.png`` for each kind into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds:
        fig = plot_confmap(result, image, kind)
        path = out_dir / f"confmap_{kind}.png"
        with styled():
            save_png(fig, path)
        paths.append(path)
    return paths
