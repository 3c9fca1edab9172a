"""The papers' figures as PNG files (matplotlib, Agg, no pyplot state).

Every function takes the :class:`~onepixel.analysis.RunAnalysis` (and what else it needs),
writes one PNG into a folder and returns a :class:`FigureInfo` whose ``reading`` is a sentence
computed from the numbers shown, or None when there is nothing to draw (the caller records a
note saying why). Plots of many points are subsampled, and the caption says so; statistics
never are.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.analysis import (
    DirectionAnalysis,
    RunAnalysis,
    colour_name,
    confmap_stats,
    gain,
    load_history,
    location_map,
)
from onepixel.analysis.confmaps import map_provenance
from onepixel.analysis.tables import (
    checkerboard_claim,
    class_matrix_table,
    colour_label,
    goal_probability,
    moved,
    num,
    pct,
    pixel_note,
    slug,
)
from onepixel.confmap.result import ConfidenceMap
from onepixel.errors import OnepixelError
from onepixel.plotting import new_figure as _new_figure
from onepixel.plotting import save_png, styled
from onepixel.runs.config import RunConfig
from onepixel.runs.schema import lowers_score

log = logging.getLogger(__name__)

#: Most points drawn in one scatter plot.
MAX_SCATTER_POINTS = 20_000
BEFORE_COLOUR = "#8c8c8c"
AFTER_COLOUR = "#1f77b4"
REST_COLOUR = "#d62728"


@dataclass(frozen=True)
class FigureInfo:
    """One figure written under ``RUN/analysis``.

    Attributes
    ----------
    name : str
        File stem.
    file : str
        Path relative to the analysis folder (``figures/<name>.png``).
    title, caption, reading : str
    section : str
    """

    name: str
    file: str
    title: str
    section: str
    caption: str = ""
    reading: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.file, "title": self.title, "section": self.section,
                "caption": self.caption, "reading": self.reading}

    @classmethod
    def from_dict(cls, data: dict) -> FigureInfo:
        return cls(data["name"], data["file"], data["title"], data["section"], data.get("caption", ""),
                   data.get("reading", ""))


def _save(fig, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    save_png(fig, folder / f"{name}.png")
    return f"figures/{name}.png"


def _styled(fn):
    def wrapper(*args, **kwargs):
        with styled():
            return fn(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _integer_ticks(nbins: int | str = "auto"):
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=nbins, integer=True)


def frame(ax) -> None:
    """All four edges on an image panel (the style turns the top and right spines off for plots)."""
    for spine in ax.spines.values():
        spine.set_visible(True)


def short_name(name: str, width: int) -> str:
    """``name`` in at most about ``width`` characters, cut at a ``/`` (never mid-word): the last
    path parts that fit after ``…/``; the file name whole when even it is longer."""
    if len(name) <= width:
        return name
    parts = name.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(kept) + 2 > width:
            break
        kept = f"{part}/{kept}"
    return "…/" + kept


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555555",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _positive_label(analysis: RunAnalysis) -> str:
    return analysis.run.config.positive_label


def _score_label(analysis: RunAnalysis) -> str:
    """The score axis: the positive class's probability (binary), or the goal's (multi-class)."""
    if analysis.multiclass:
        return f"score ({goal_probability(analysis)})"
    return f"score (probability of {_positive_label(analysis)})"


def _goal_caption(analysis: RunAnalysis) -> str:
    """For multi-class RUNs: a sentence naming the score and pooling; else ""."""
    if not analysis.multiclass:
        return ""
    return (f" Score: {goal_probability(analysis)} ({'untargeted' if analysis.target is None else 'targeted'}"
            f" goal); the attacks of every class are pooled.")


# --------------------------------------------------------------------------- box plots


@_styled
def scores_boxplot(analysis: RunAnalysis, folder: Path, max_fliers: int = 2000) -> FigureInfo | None:
    """Box plots of the scores before and after the attack, one panel per direction.

    Boxes and whiskers use every score; when a box has more than ``max_fliers`` outliers, a
    random ``max_fliers`` of them are drawn (said in the caption).
    """
    dirs = [d for d in analysis.stat_directions if d.attacked]
    if not dirs:
        return None
    from matplotlib import cbook

    fig = _new_figure(max(4.2 * len(dirs), 5.0), 4.2)
    axes = fig.subplots(1, len(dirs), squeeze=False)[0]
    parts = []
    thinned: list[str] = []
    rng = np.random.default_rng(0)
    for ax, d in zip(axes, dirs, strict=True):
        before, after = d.rows.original_score, d.rows.attacked_score
        data = [before, after, after[d.rest]]
        labels = ["Before", "After\n(all)", "After\n(excl. early)"]
        keep = [i for i, v in enumerate(data) if v.size]
        stats = cbook.boxplot_stats([data[i] for i in keep], labels=[labels[i] for i in keep])
        for st in stats:  # quartiles and whiskers from all values; only the drawn outliers are thinned
            if st["fliers"].size > max_fliers:
                thinned.append(f"{max_fliers:,} of {st['fliers'].size:,} outliers")
                st["fliers"] = rng.choice(st["fliers"], size=max_fliers, replace=False)
        bp = ax.bxp(stats, widths=0.55, patch_artist=True,
                    flierprops={"marker": ".", "markersize": 3, "alpha": 0.3, "markeredgewidth": 0},
                    medianprops={"color": "black"})
        for patch, i in zip(bp["boxes"], keep, strict=True):
            patch.set_facecolor([BEFORE_COLOUR, AFTER_COLOUR, REST_COLOUR][i])
            patch.set_alpha(0.6)
        t = d.success_all.success_threshold
        ax.axhline(t, ls="--", lw=1, color="#444444")
        ax.text(len(keep) + 0.45, t, f" {t:g}", va="center", fontsize=8, color="#444444")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{d.direction} (N = {d.attacked:,}; {int(d.rest.sum()):,} not early)")
        ax.set_ylabel(_score_label(analysis))
        parts.append(f"{d.direction} median {num(np.median(before))} before, {num(np.median(after))} "
                     f"after")
    fig.suptitle("Confidence scores before and after the attack")
    file = _save(fig, folder, "scores_boxplot")
    return FigureInfo("scores_boxplot", file, "Confidence scores before and after the attack", "scores",
                      caption="Box: quartiles; line: median; whiskers: 1.5 x IQR; dots: outliers "
                              "(Figures 1-2 of the breast-cancer paper). Dashed: the success threshold. "
                              "'Excl. early' leaves out attacks that converged after the first generation."
                              + (" Outliers drawn: " + "; ".join(thinned) + " (random, seed 0); the boxes "
                                 "use all scores." if thinned else "") + _goal_caption(analysis),
                      reading="Median scores: " + "; ".join(parts) + ".")


# --------------------------------------------------------------------------- convergence


def rank_by_gain(d: DirectionAnalysis) -> list[int]:
    """Row indices of the attacks, largest score change towards the goal first (ties by image)."""
    g = gain(d.goal, d.rows.original_score, d.rows.attacked_score)
    return [int(i) for i in np.lexsort((d.rows.image.astype(str), -g))]


def pick_extremes(d: DirectionAnalysis, k: int = 3) -> tuple[list[int], list[int]]:
    """Row indices of the ``k`` most and ``k`` least successful attacks (by score change to the goal).

    With fewer than ``2k`` attacks the list is split in two halves (the extra one goes to the most
    successful), so no attack is drawn twice. The least successful list starts with the worst.
    """
    order = rank_by_gain(d)
    n_most = min(k, math.ceil(len(order) / 2))
    n_least = min(k, len(order) - n_most)
    return order[:n_most], order[len(order) - n_least:][::-1]


@_styled
def convergence_plot(analysis: RunAnalysis, folder: Path, k: int = 3) -> FigureInfo | None:
    """Best score per generation (history.csv) for the most and least successful attacks."""
    dirs = [d for d in analysis.stat_directions if d.attacked]
    if not dirs or analysis.run.history_path is None:
        return None
    picks = {d.direction: pick_extremes(d, k) for d in dirs}
    wanted = [str(d.rows.image[i]) for d in dirs for group in picks[d.direction] for i in group]
    curves = load_history(analysis.run.history_path, wanted)
    if not curves:
        return None
    fig = _new_figure(max(5.0 * len(dirs), 6.0), 4.2)
    axes = fig.subplots(1, len(dirs), squeeze=False)[0]
    parts = []
    for ax, d in zip(axes, dirs, strict=True):
        most, least = picks[d.direction]
        drawn = 0
        for group, style, cmap in ((most, "-", ("#08519c", "#3182bd", "#6baed6")),
                                   (least, "--", ("#a50f15", "#de2d26", "#fb6a4a"))):
            for j, i in enumerate(group):
                name = str(d.rows.image[i])
                curve = curves.get(name)
                if curve is None:
                    continue
                short = short_name(name, 28)
                ax.plot(np.arange(curve.size), curve, style, color=cmap[j % 3], lw=1.6, marker="." if
                        curve.size < 4 else None, label=f"{short} ({curve[-1]:.3g})")
                drawn += 1
        if not drawn:
            _empty(ax, "no history rows for these attacks")
        t = d.success_all.success_threshold
        ax.axhline(t, ls=":", lw=1, color="#444444")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("generation (0 = initial population)")
        ax.xaxis.set_major_locator(_integer_ticks())  # generations are counted: no 0.2 ticks
        ax.set_ylabel("lowest score so far" if lowers_score(d.goal) else "highest score so far")
        ax.set_title(d.direction)
        if drawn:
            ax.legend(loc="best", frameon=False, title="solid: most, dashed: least successful",
                      title_fontsize=8, fontsize=7)
        best = curves.get(str(d.rows.image[most[0]])) if most else None
        worst = curves.get(str(d.rows.image[least[0]])) if least else None
        if best is not None:
            text = (f"{d.direction}: the most successful attack reached {best[-1]:.3g} after "
                    f"{_plural(best.size - 1, 'generation')}")
            if worst is not None:
                text += f", the least successful ended at {worst[-1]:.3g} after {worst.size - 1}"
            parts.append(text)
    fig.suptitle("Progress of differential evolution: best score per generation")
    file = _save(fig, folder, "convergence")
    return FigureInfo("convergence", file, "Progress of differential evolution", "convergence",
                      caption=f"Best score after each generation (history.csv) for the {k} most (solid) "
                              f"and {k} least (dashed) successful attacks per direction, ranked by the "
                              f"score change towards the goal (Figures 5-6 of the breast-cancer paper). "
                              f"Legend: image (final score). "
                              + ("Dotted: 0.5." + _goal_caption(analysis) if analysis.multiclass else
                                 "Dotted: the success threshold."),
                      reading=(("; ".join(parts) + ".") if parts else ""))


@_styled
def nit_histogram(analysis: RunAnalysis, folder: Path) -> FigureInfo | None:
    """Distribution of the number of generations run, per direction."""
    dirs = [d for d in analysis.stat_directions if d.attacked]
    if not dirs:
        return None
    fig = _new_figure(8.0, 3.6)
    ax = fig.subplots()
    maxiter = max(d.nit.maxiter for d in dirs)
    top = max(int(d.rows.nit.max()) for d in dirs)
    edges = np.arange(0.5, max(maxiter, top) + 1.5)
    colours = (AFTER_COLOUR, REST_COLOUR, "#2ca02c", "#9467bd")
    for j, d in enumerate(dirs):
        ax.hist(d.rows.nit, bins=edges, histtype="stepfilled", alpha=0.45, color=colours[j % 4],
                label=f"{d.direction} (N = {d.attacked:,})")
    counts = np.concatenate([np.bincount(d.rows.nit) for d in dirs])
    counts = counts[counts > 0]
    log_scale = counts.max() / counts.min() > 50
    if log_scale:
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("generations run (nit); 1 = converged early")
    ax.set_ylabel("attacks (log scale)" if log_scale else "attacks")
    ax.set_title("Generations run per attack")
    ax.legend(frameon=False)
    file = _save(fig, folder, "nit_histogram")
    reading = "; ".join(f"{d.direction}: {pct(d.early.percent)} stopped after one generation, mean "
                        f"{num(d.nit.mean, '.1f')}" for d in dirs) + "."
    return FigureInfo("nit_histogram", file, "Generations run per attack", "convergence",
                      caption="Histogram of nit, one bar per number of generations (log scale when the "
                              "counts span more than a factor of 50).", reading=reading)


# --------------------------------------------------------------------------- examples


def _load_original(analysis: RunAnalysis, name: str) -> np.ndarray | None:
    from onepixel.datasets.images import load_image
    from onepixel.runs.schema import image_path

    root = analysis.run.config.dataset
    if root is None:
        return None
    try:
        return load_image(image_path(root, name))
    except OnepixelError as exc:
        log.warning("example figure: %s", exc)
        return None


@_styled
def example_panels(analysis: RunAnalysis, d: DirectionAnalysis, folder: Path,
                   k: int = 3) -> FigureInfo | None:
    """Original | attacked image pairs for the ``k`` most successful attacks, the pixel circled."""
    if not d.attacked or not analysis.dataset_available:
        return None
    from matplotlib.patches import Circle

    shown = []
    for i in rank_by_gain(d)[:k]:
        img = _load_original(analysis, str(d.rows.image[i]))
        if img is not None:
            shown.append((i, img))
    if not shown:
        return None
    fig = _new_figure(6.4, 3.15 * len(shown) + 0.3)
    axes = fig.subplots(len(shown), 2, squeeze=False)
    rows = d.rows
    for (ax_o, ax_a), (i, img) in zip(axes, shown, strict=True):
        x, y = int(rows.x[i]), int(rows.y[i])
        rgb = (int(rows.r[i]), int(rows.g[i]), int(rows.b[i]))
        mine = d.pixels[d.owner == i] if d.owner.size else np.array([[x, y, *rgb]])
        attacked = img.copy()
        for px in mine:  # every pixel of a k-pixel attack, in order (a later one wins)
            attacked[int(px[1]), int(px[0])] = px[2:]
        for ax, im in ((ax_o, img), (ax_a, attacked)):
            ax.imshow(im, interpolation="nearest")
            for px in mine:
                ax.add_patch(Circle((int(px[0]), int(px[1])), radius=max(img.shape[:2]) / 16, fill=False,
                                    lw=1.8, ls="--" if ax is ax_o else "-", ec="#00e5ff"))
            ax.set_xticks([])
            ax.set_yticks([])
            frame(ax)
        name = str(rows.image[i])
        short = short_name(name, 36)
        ax_o.set_title(f"Original ({rows.label[i]}), score {rows.original_score[i]:.4f}\n{short}",
                       fontsize=9)
        if d.multiclass:
            where = (f"RGB {rgb} at (x={x}, y={y})" if len(mine) == 1 else f"{len(mine)} pixels")
            ax_a.set_title(f"Attacked: class {rows.attacked_class[i]}, score "
                           f"{rows.attacked_score[i]:.4f}\n{where}", fontsize=9)
        else:
            ax_a.set_title(f"Attacked, score {rows.attacked_score[i]:.4f}\nRGB {rgb} at (x={x}, y={y})",
                           fontsize=9)
    fig.suptitle(f"Adversarial examples, {d.direction}")
    file = _save(fig, folder, f"examples_{slug(d.direction)}")
    i = shown[0][0]
    success = d.success_mask[i]
    n_px = int((d.owner == i).sum()) if d.owner.size else 1
    if n_px > 1:
        how = f"{n_px} pixels"
    else:
        how = (f"one {colour_name((rows.r[i], rows.g[i], rows.b[i])) or 'RGB'} pixel "
               f"({rows.r[i]}, {rows.g[i]}, {rows.b[i]}) at (x={rows.x[i]}, y={rows.y[i]})")
    reading = (f"The {'most successful' if success else 'best (but unsuccessful)'} {d.direction} attack "
               f"moved the score from {rows.original_score[i]:.4f} to {rows.attacked_score[i]:.4f} with "
               f"{how}" + (f": the model now predicts class {rows.attacked_class[i]}" if d.multiclass
                           else "") + ".")
    caption = (f"The {len(shown)} attacks of this direction with the largest score change "
               f"towards the goal (Figures 3-4 of the breast-cancer paper). Left: original "
               f"image; right: with the attack pixel; the circle marks the pixel.")
    if d.multiclass:
        caption = (f"The {len(shown)} attacks with the largest change of {goal_probability(analysis)}, "
                   f"over every class (Figures 3-4 of the breast-cancer paper). Left: original image "
                   f"and its class; right: with the attack pixels and the class the model then "
                   f"predicts; circles mark the pixels.")
    return FigureInfo(f"examples_{slug(d.direction)}", file, f"Adversarial examples, {d.direction}",
                      "examples", caption=caption, reading=reading)


# --------------------------------------------------------------------------- colours


@_styled
def colour_chart(analysis: RunAnalysis, folder: Path, k: int = 10) -> FigureInfo | None:
    """Horizontal bars of the most common attack colours, each bar in its colour."""
    dirs = [d for d in analysis.stat_directions if d.colours]
    if not dirs:
        return None
    slots = max(len(d.colours[:k]) for d in dirs)
    fig = _new_figure(max(4.6 * len(dirs), 5.5), 0.34 * slots + 1.6)
    axes = fig.subplots(1, len(dirs), squeeze=False)[0]
    parts = []
    for ax, d in zip(axes, dirs, strict=True):
        colours = d.colours[:k]
        ypos = slots - 1 - np.arange(len(colours))
        ax.barh(ypos, [c.count for c in colours], color=[c.hex for c in colours], edgecolor="#333333",
                lw=0.6)
        ax.set_yticks(ypos, [f"{c.rgb[0]}, {c.rgb[1]}, {c.rgb[2]}" for c in colours], fontsize=8)
        for yp, c in zip(ypos, colours, strict=True):
            ax.text(c.count, yp, f" {c.percent:.1f}%", va="center", fontsize=8)
        ax.set_ylim(-0.6, slots - 0.4)
        ax.xaxis.set_major_locator(_integer_ticks(4))
        ax.set_xlabel("attacks" if d.pixels.shape[0] == d.attacked else "attack pixels")
        ax.set_ylabel("attack colour (R, G, B)")
        ax.set_title(f"{d.direction} (N = {d.attacked:,})")
        ax.set_xlim(0, max(c.count for c in colours) * 1.22)
        parts.append(f"{d.direction}: {colour_label(colours[0])} leads with {pct(colours[0].percent)}")
    fig.suptitle(f"Most common attack colours (up to {k} per direction)")
    file = _save(fig, folder, "colours")
    return FigureInfo("colours", file, "Most common attack colours", "colours",
                      caption="Each bar is drawn in its colour; percentages are of all attacks of the "
                              "direction." + pixel_note(analysis), reading="; ".join(parts) + ".")


# --------------------------------------------------------------------------- chromatic


def colour_budget(config: RunConfig) -> float | None:
    """The RUN's colour budget H (``attack.max_colour_diff`` of config.json, set by
    ``onepixel attack --max-colour-diff H``); None without one (or a RUN made before it existed).
    """
    return config.attack.max_colour_diff


@_styled
def chromatic_scatter(analysis: RunAnalysis, folder: Path,
                      max_points: int = MAX_SCATTER_POINTS) -> FigureInfo | None:
    """Scatter of the colour difference h against the attacked score, one panel per direction."""
    dirs = [d for d in analysis.stat_directions
            if d.h is not None and d.attacked and (~np.isnan(d.h)).any()]
    if not dirs:
        return None
    budget = colour_budget(analysis.run.config)
    fig = _new_figure(max(5.2 * len(dirs), 6.4), 4.4)
    axes = fig.subplots(1, len(dirs), squeeze=False)[0]
    subsampled = []
    parts = []
    for ax, d in zip(axes, dirs, strict=True):
        ok = ~np.isnan(d.h)
        idx = np.flatnonzero(ok)
        if idx.size > max_points:
            rng = np.random.default_rng(0)
            idx = np.sort(rng.choice(idx, size=max_points, replace=False))
            subsampled.append(f"{max_points:,} of the {int(ok.sum()):,} {d.direction} attacks")
        # h is per attack pixel; each pixel takes its attack's filter and score (k pixels).
        inc = d.filtered[d.owner[idx]]
        h, sc = d.h[idx], d.rows.attacked_score[d.owner[idx]]
        size = 12 if idx.size < 2000 else 4
        ax.scatter(h[~inc], sc[~inc], s=size, c="#b0b0b0", alpha=0.7, lw=0, label="outside the paper filter")
        ax.scatter(h[inc], sc[inc], s=size, c=AFTER_COLOUR if lowers_score(d.goal) else REST_COLOUR,
                   alpha=0.7, lw=0, label="paper filter")
        ax.axhline(d.success_all.success_threshold, ls="--", lw=1, color="#444444")
        right = max(0.2, float(np.nanmax(h)) * 1.05)
        if budget is not None:
            ax.axvline(budget, ls="--", lw=1, color="#e3a800", label=f"colour budget H = {budget:g}")
            right = max(right, budget * 1.05)
        ax.set_xlim(-0.02, right)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("colour difference to the neighbours, h (RMSE in [0, 1])")
        ax.set_ylabel(f"score after the attack ({goal_probability(analysis)})" if analysis.multiclass
                      else "score after the attack")
        ax.set_title(f"{d.direction} (N = {int(ok.sum()):,})")
        ax.legend(frameon=False, loc="best", markerscale=2)
        c = d.chromatic_filtered
        if c is not None and c.n >= 2 and not math.isnan(c.gain_high):
            parts.append(f"{d.direction}: paper-filtered attacks with h above {c.median:.2f} {moved(d.goal)} "
                         f"the score by {c.gain_high:.2f} on average, against {c.gain_low:.2f} for smaller "
                         "colour differences: " + (c.split.claim("a real difference") if c.split is not None
                                                   else "too few to tell"))
    fig.suptitle("Colour difference to the neighbours vs score after the attack")
    file = _save(fig, folder, "chromatic")
    sub = (" Subsampled for drawing: " + "; ".join(subsampled) + " (random, seed 0); the statistics "
           "use all of them.") if subsampled else ""
    return FigureInfo("chromatic", file, "Chromatic analysis", "chromatic",
                      caption="Each dot is an attack: x the RMSE h between the attack colour and the mean "
                              "of its neighbours in the original image, y the score after the attack "
                              "(Figures 1-2 of the chromatic paper). Coloured: the paper filter; dashed: "
                              "the success threshold." + (
                                  f" Dashed vertical: the campaign's colour budget H = {budget:g} "
                                  "(`--max-colour-diff`); every attack pixel has h <= H."
                                  if budget is not None else "") + sub + _goal_caption(analysis)
                              + pixel_note(analysis),
                      reading=("; ".join(parts) + ".") if parts else "")


@_styled
def location_heatmap(analysis: RunAnalysis, folder: Path) -> FigureInfo | None:
    """Heatmaps of attack pixel locations at the RUN's H x W, one panel per direction (multi-class
    RUNs: all classes pooled, and the pixels of the successful attacks when there are any)."""
    dirs = [d for d in analysis.stat_directions if d.attacked]
    if not dirs:
        return None
    panels = [(d, d.direction, d.location) for d in dirs]
    if analysis.multiclass:
        for d in dirs:
            won = d.success_mask[d.owner]
            if won.any():
                panels.append((d, f"{d.direction}, successful", location_map(
                    d.pixels[won, 0], d.pixels[won, 1], d.location.shape)))
    fig = _new_figure(max(5.0 * len(panels), 5.4), 4.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    parts = []
    for ax, (d, label, grid) in zip(axes, panels, strict=True):
        h, w = grid.shape
        im = ax.imshow(grid, cmap="magma", interpolation="nearest", origin="upper")
        frame(ax)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label("attacks")
        cb.locator = _integer_ticks()
        cb.update_ticks()
        step = 8 if w >= 32 else 2
        ax.set_xticks(range(0, w, step))
        ax.set_yticks(range(0, h, step))
        ax.set_xlabel("x (column)")
        ax.set_ylabel("y (row)")
        ax.set_title(f"{label} (N = {d.attacked:,})" if grid is d.location else
                     f"{label} (N = {int(d.success_mask.sum()):,})")
        y0, x0 = np.unravel_index(int(np.argmax(grid)), grid.shape)
        cy0, cy1, cx0, cx1 = h // 4, h - h // 4, w // 4, w - w // 4
        central = grid[cy0:cy1, cx0:cx1].sum() / max(grid.sum(), 1)
        parts.append(f"{label}: {100 * central:.0f}% of the attacks fall in the central "
                     f"{cx1 - cx0}x{cy1 - cy0} square ({100 * (cy1 - cy0) * (cx1 - cx0) / (h * w):.0f}% of "
                     f"the image), the most attacked pixel is (x={x0}, y={y0}) with "
                     f"{_plural(int(grid[y0, x0]), 'attack')}")
    fig.suptitle("Where the attack pixels are")
    file = _save(fig, folder, "heatmaps")
    return FigureInfo("heatmaps", file, "Attack locations", "periodicity",
                      caption="Number of attacks per pixel, row y down, column x across (Figures 3-4 of "
                              "the chromatic paper); a checkerboard means even coordinates are preferred."
                              + (f" Drawn at the images' {w}x{h} pixels." if analysis.multiclass else "")
                              + _goal_caption(analysis) + pixel_note(analysis),
                      reading="; ".join(parts) + ".")


# --------------------------------------------------------------------------- classes


@_styled
def class_matrix_heatmap(analysis: RunAnalysis, folder: Path) -> FigureInfo | None:
    """Multi-class RUNs: the source class x class-after-the-attack matrix as a heatmap (Su et al.).

    Cells hold the number of attacked images; the colour is the share of the row (the true
    class), so classes with few images read like the others. None for binary RUNs.
    """
    table = class_matrix_table(analysis)
    if table is None:
        return None
    sources = [str(r[0]) for r in table.rows]
    targets = [c[3:] for c in table.columns[4:]]  # "-> 7" -> "7"
    counts = np.array([[int(v) for v in r[4:]] for r in table.rows], dtype=np.int64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(max(0.42 * len(targets) + 2.2, 4.6), 14.0)
    fig = _new_figure(side + 1.2, min(max(0.42 * len(sources) + 1.8, 3.6), 14.0))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label("share of the true class's attacked images")
    if counts.size <= 900:  # numbers stay legible up to 30 x 30 classes
        for (r, c), v in np.ndenumerate(counts):
            if v:
                ax.text(c, r, str(v), ha="center", va="center", fontsize=8,
                        color="white" if share[r, c] > 0.6 else "black")
    ax.set_xticks(range(len(targets)), targets, rotation=90 if len(targets) > 12 else 0)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("class predicted after the attack")
    ax.set_ylabel("true class")
    target = analysis.target
    if target is not None and target in targets:  # outline the target column: the success cells
        c = targets.index(target)
        ax.add_patch(_rectangle(c, len(sources)))
    goal = ("untargeted: any class but the true one" if target is None else
            f"targeted towards class {target}")
    ax.set_title(f"True class x class after the attack ({goal})")
    file = _save(fig, folder, "class_matrix")
    off = int(sum(counts[r, c] for r, src in enumerate(sources) for c, tgt in enumerate(targets)
                  if ((tgt == target) if target is not None else (tgt != src))))
    total = int(counts.sum())
    flows = [(int(counts[r, c]), src, tgt) for r, src in enumerate(sources) for c, tgt in enumerate(targets)
             if tgt != src and counts[r, c]]
    reading = f"{off:,} of {total:,} attacked images ({pct(100 * off / total if total else float('nan'))}) " \
              f"ended in a success cell"
    if flows:
        n, src, tgt = max(flows, key=lambda f: (f[0], f[1], f[2]))
        reading += f"; the most common change is {src} -> {tgt} ({_plural(n, 'image')})"
    return FigureInfo("class_matrix", file, "Source class x adversarial class", "classes",
                      caption="Rows: true class of the attacked image; columns: the class the model "
                              "predicts after the attack (Su et al.'s table). Numbers: images; colour: "
                              "share of the row; "
                              + ("off the diagonal: success (the model's answer changed)." if target is None
                                 else f"outlined: column {target}, the success cells.")
                              + f" The scores the attack minimised are {goal_probability(analysis)}.",
                      reading=reading + ".")


def _rectangle(col: int, rows: int):
    """The outline of column ``col`` over ``rows`` rows."""
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, -0.5), 1, rows, fill=False, ec="#d62728", lw=1.6)


# --------------------------------------------------------------------------- confidence maps


@_styled
def confmap_panel(cm: ConfidenceMap, folder: Path) -> FigureInfo:
    """Original | min | max | mean score maps of one confidence map."""
    st = confmap_stats(cm)
    panels: list[tuple[str, np.ndarray | None]] = []
    if cm.original is not None:
        panels.append(("original", None))
    panels += [("min", cm.min), ("max", cm.max), ("mean", cm.mean)]
    fig = _new_figure(3.3 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, arr) in zip(axes, panels, strict=True):
        if arr is None:
            ax.imshow(cm.original, interpolation="nearest")
            ax.set_title("original" + (f", score {cm.original_score:.4g}"
                                       if not math.isnan(cm.original_score) else ""))
        else:
            im = ax.imshow(arr, cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label="score")
            ax.set_title(f"{label} score per pixel")
        frame(ax)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    lx, ly = st.lowest_xy
    axes[-3].plot([lx], [ly], marker="o", mfc="none", mec="red", ms=9, mew=1.5)
    image = f" ({cm.metadata['image']})" if "image" in cm.metadata else ""
    fig.suptitle(f"Confidence map {cm.name}{image}")
    name = f"confmap_{slug(cm.name)}"
    file = _save(fig, folder, name)
    rgb = f" with RGB {st.lowest_rgb}" if st.lowest_rgb is not None else ""
    reading = (f"The lowest score {st.lowest:.4g} is reached at (x={lx}, y={ly}){rgb}; the min map averages "
               f"{st.even_min_mean:.3g} on pixels with both coordinates even against "
               f"{st.other_min_mean:.3g} elsewhere"
               + (f": {checkerboard_claim(st.checkerboard)}." if st.checkerboard is not None else "."))
    return FigureInfo(name, file, f"Confidence map {cm.name}", "confmaps",
                      caption=f"Made with {map_provenance(cm)}. Per pixel, the lowest, highest and mean "
                              "model score over the colour grid (Figure 5 of the chromatic paper, which "
                              "used step 5); red circle: the lowest score.",
                      reading=reading)


def all_figures(analysis: RunAnalysis, folder: Path) -> tuple[list[FigureInfo], list[tuple[str, str]]]:
    """Every figure of the analysis.

    Returns
    -------
    figures : list of FigureInfo
    missing : list of (section, why)
        Figures that could not be drawn, with the reason (for the report's notes).
    """
    figures: list[FigureInfo] = []
    missing: list[tuple[str, str]] = []
    attacked = [d for d in analysis.stat_directions if d.attacked]

    def add(result: FigureInfo | None, section: str, why: str) -> None:
        if result is not None:
            figures.append(result)
        elif why:
            missing.append((section, why))

    none_attacked = "no image was attacked" if analysis.directions else "the RUN has no images"
    if analysis.multiclass:
        add(class_matrix_heatmap(analysis, folder), "classes", "")
    add(scores_boxplot(analysis, folder), "scores", f"No box plot: {none_attacked}.")
    if attacked and analysis.run.history_path is None:
        add(None, "convergence", "No convergence plot: history.csv is missing from the RUN.")
    else:
        add(convergence_plot(analysis, folder), "convergence",
            "No convergence plot: history.csv has no rows for the attacked images." if attacked else "")
    add(nit_histogram(analysis, folder), "convergence", "")
    for d in analysis.stat_directions:
        if not d.attacked:
            missing.append(("examples", f"No {d.direction} examples: no {d.direction} image was attacked."))
            continue
        why = "" if not analysis.dataset_available else \
            f"No {d.direction} examples: the original images could not be read."
        add(example_panels(analysis, d, folder), "examples", why)
    if attacked and not analysis.dataset_available:
        missing.append(("examples", "No adversarial-example figures: the original images are not "
                                    "available (see the chromatic section)."))
    add(colour_chart(analysis, folder), "colours", "")
    add(chromatic_scatter(analysis, folder), "chromatic", "")
    add(location_heatmap(analysis, folder), "periodicity", "")
    for cm in analysis.confmaps:
        figures.append(confmap_panel(cm, folder))
    return figures, missing
