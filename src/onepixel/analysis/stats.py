"""The papers' statistics as pure functions on arrays.

Score tables (Tables 1-2 of the breast-cancer paper), success counts, early convergence and
generations (``nit``), attack colours, spatial statistics (Tables 1-2 of the chromatic paper),
coordinate periodicity, every pixel of a k-pixel attack (:func:`attack_pixels`) and success per
class of a multi-class campaign (:func:`class_success`). Every function takes plain arrays and
returns a frozen dataclass, so each can be checked against hand-computed values.

Conventions: ``sd`` is the sample standard deviation (``ddof=1``, ``nan`` for fewer than two
values); statistics of an empty selection are ``nan``; percentages are of the selection's size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onepixel.runs.evidence import Evidence, compare_groups
from onepixel.runs.schema import lowers_score
from onepixel.runs.summary import ScoreStats, SuccessCounts, percent, score_stats, success_counts

__all__ = [
    "SPATIAL_COLUMNS", "ClassSuccess", "ColourCount", "EarlyConvergence", "NitStats", "ParityCounts",
    "ScoreStats", "SpatialStats", "SuccessCounts", "attack_pixels", "class_success", "colour_name",
    "early_convergence", "expected_parity", "gain", "location_map", "nit_distribution", "nit_stats",
    "parity_counts", "percent", "score_stats", "spatial_stats", "spearman", "success_counts", "top_colours",
]

SPATIAL_COLUMNS = ("X", "Y", "R", "G", "B")


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def gain(goal: str, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Score change towards the attack's goal: ``before - after`` for ``decrease``, else ``after - before``.

    Parameters
    ----------
    goal : {"decrease", "increase"}
    before, after : ndarray, (N,)

    Returns
    -------
    ndarray, (N,) float64; positive means the attack moved the score the way it wanted.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    return before - after if lowers_score(goal) else after - before


@dataclass(frozen=True)
class EarlyConvergence:
    """Attacks that stopped after their first generation (failed attacks in the papers).

    ``mean_gain_early`` is the mean score change towards the goal of those attacks (the paper's
    "only 0.06 change on mean"); ``median_gain_rest`` the median change of the others (0.81);
    ``split`` tests whether the two groups' changes differ (Mann-Whitney U).
    """

    n: int
    early: int
    mean_gain_early: float
    median_gain_rest: float
    split: Evidence | None = None

    @property
    def percent(self) -> float:
        return percent(self.early, self.n)


def early_convergence(goal: str, before: np.ndarray, after: np.ndarray,
                      early: np.ndarray) -> EarlyConvergence:
    """Early-convergence count and the score changes with and without it.

    Parameters
    ----------
    goal : {"decrease", "increase"}
    before, after : ndarray, (N,)
        Original and attacked scores of attacked images.
    early : ndarray, (N,) bool
        ``early_converged`` flags.
    """
    early = np.asarray(early, dtype=bool)
    g = gain(goal, before, after)
    ge, gr = g[early], g[~early]
    return EarlyConvergence(int(early.size), int(early.sum()),
                            float(ge.mean()) if ge.size else float("nan"),
                            float(np.median(gr)) if gr.size else float("nan"), compare_groups(ge, gr))


@dataclass(frozen=True)
class NitStats:
    """Distribution of the number of DE generations run (``nit``)."""

    n: int
    mean: float
    median: float
    min: float
    q25: float
    q75: float
    max: float
    at_limit: int
    maxiter: int


def nit_stats(nit: np.ndarray, maxiter: int = 100) -> NitStats:
    """Mean, quartiles and extremes of ``nit`` (N,), and how many attacks reached ``maxiter``."""
    v = np.asarray(nit, dtype=np.float64)
    if v.size == 0:
        nan = float("nan")
        return NitStats(0, nan, nan, nan, nan, nan, nan, 0, int(maxiter))
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return NitStats(int(v.size), float(v.mean()), float(med), float(v.min()), float(q25), float(q75),
                    float(v.max()), int((v >= maxiter).sum()), int(maxiter))


def nit_distribution(nit: np.ndarray, maxiter: int = 100) -> list[tuple[str, int]]:
    """Counts of ``nit`` in the bins 1 (early convergence), 2-10, 11-25, 26-50, 51..maxiter-1, maxiter.

    Returns
    -------
    list of (label, count); with a small ``maxiter`` the bins are cut at it (the last bin
    also holds any value above ``maxiter``).
    """
    v = np.asarray(nit, dtype=np.int64)
    maxiter = max(int(maxiter), 1)
    starts = sorted({c for c in (1, 2, 11, 26, 51) if c < maxiter} | {maxiter})
    bins = [(lo, nxt - 1) for lo, nxt in itertools.pairwise(starts)]
    out = [(str(lo) if lo == hi else f"{lo}-{hi}", int(((v >= lo) & (v <= hi)).sum())) for lo, hi in bins]
    out.append((str(maxiter), int((v >= maxiter).sum())))
    below = int((v < 1).sum())
    if below:
        out.insert(0, ("0", below))
    return out


@dataclass(frozen=True)
class ColourCount:
    """One attack colour and how often it was used."""

    rgb: tuple[int, int, int]
    count: int
    percent: float

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


_NAMED = {(255, 255, 0): "pure yellow", (255, 255, 255): "pure white", (0, 0, 0): "pure black",
          (255, 0, 0): "pure red", (0, 255, 0): "pure green", (0, 0, 255): "pure blue",
          (0, 255, 255): "pure cyan", (255, 0, 255): "pure magenta"}


def colour_name(rgb: Sequence[int]) -> str:
    """``"pure yellow"`` for (255, 255, 0) and the other corners of the RGB cube, else ``""``."""
    return _NAMED.get(tuple(int(c) for c in rgb), "")


def top_colours(rgb: np.ndarray, k: int = 10) -> tuple[ColourCount, ...]:
    """The ``k`` most common attack colours.

    Parameters
    ----------
    rgb : ndarray, (N, 3) int
        Attack colours 0..255.
    k : int

    Returns
    -------
    tuple of ColourCount, most common first; ties by colour value (r, g, b ascending).
    """
    rgb = np.asarray(rgb, dtype=np.int64).reshape(-1, 3)
    if rgb.shape[0] == 0:
        return ()
    codes = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((values, -counts))[:k]
    total = rgb.shape[0]
    return tuple(ColourCount((int(v >> 16), int((v >> 8) & 255), int(v & 255)), int(c),
                             percent(int(c), total))
                 for v, c in zip(values[order], counts[order], strict=True))


@dataclass(frozen=True)
class SpatialStats:
    """Mean, median and sample SD of the attack vectors' X, Y, R, G, B (chromatic paper, Tables 1-2).

    ``mean``, ``median`` and ``sd`` are tuples of 5 floats in :data:`SPATIAL_COLUMNS` order.
    """

    n: int
    mean: tuple[float, ...]
    median: tuple[float, ...]
    sd: tuple[float, ...]


def spatial_stats(vectors: np.ndarray) -> SpatialStats:
    """Statistics of attack vectors.

    Parameters
    ----------
    vectors : ndarray, (N, 5)
        Columns ``x, y, r, g, b``.
    """
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, 5)
    if v.shape[0] == 0:
        nan = (float("nan"),) * 5
        return SpatialStats(0, nan, nan, nan)
    sd = tuple(_sd(v[:, i]) for i in range(5))
    return SpatialStats(int(v.shape[0]), tuple(float(a) for a in v.mean(axis=0)),
                        tuple(float(a) for a in np.median(v, axis=0)), sd)


@dataclass(frozen=True)
class ParityCounts:
    """Even/odd coordinates of attack pixels (chromatic paper, section 3.3)."""

    n: int
    both_even: int
    one_odd: int
    both_odd: int
    x_even: int
    x_odd: int
    y_even: int
    y_odd: int

    FIELDS = (("both_even", "both coordinates even"), ("one_odd", "exactly one coordinate odd"),
              ("both_odd", "both coordinates odd"), ("x_even", "x even"), ("x_odd", "x odd"),
              ("y_even", "y even"), ("y_odd", "y odd"))

    def percent(self, name: str) -> float:
        """Percentage of ``n`` for one of the count fields."""
        return percent(getattr(self, name), self.n)


def parity_counts(x: np.ndarray, y: np.ndarray) -> ParityCounts:
    """Count attack pixels by coordinate parity.

    Parameters
    ----------
    x, y : ndarray, (N,) int
        Column and row of each attack pixel.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    xe, ye = x % 2 == 0, y % 2 == 0
    return ParityCounts(int(x.size), int((xe & ye).sum()), int((xe ^ ye).sum()), int((~xe & ~ye).sum()),
                        int(xe.sum()), int((~xe).sum()), int(ye.sum()), int((~ye).sum()))


def expected_parity(width: int = 64, height: int = 64) -> dict[str, float]:
    """Fractions expected if attack pixels were placed uniformly at random on a ``width x height`` image.

    Returns
    -------
    dict
        Keys as :class:`ParityCounts` fields; values in [0, 1] (0.25 for ``both_even`` at 64x64).
    """
    px = (width + 1) // 2 / width  # columns 0, 2, ... are even
    py = (height + 1) // 2 / height
    return {"both_even": px * py, "one_odd": px * (1 - py) + (1 - px) * py,
            "both_odd": (1 - px) * (1 - py), "x_even": px, "x_odd": 1 - px,
            "y_even": py, "y_odd": 1 - py}


def location_map(x: np.ndarray, y: np.ndarray, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """How many attack pixels fell on each image position.

    Parameters
    ----------
    x, y : ndarray, (N,) int
        Column and row, ``0 <= x < W``, ``0 <= y < H``; others are ignored.
    shape : (H, W)

    Returns
    -------
    ndarray, (H, W) int64; ``map[y, x]`` is the count at column x, row y.
    """
    h, w = int(shape[0]), int(shape[1])
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return np.bincount(y[ok] * w + x[ok], minlength=h * w).reshape(h, w).astype(np.int64)


def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1, dtype=np.float64)
    _, inverse, counts = np.unique(sorted_vals, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = np.bincount(inverse, weights=np.arange(1, values.size + 1, dtype=np.float64))
        ranks[order] = (sums / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (N,) arrays (pairs with a ``nan`` dropped).

    Returns ``nan`` for fewer than 3 pairs or a constant input.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if a.size < 3:
        return float("nan")
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- k pixels, classes


def attack_pixels(pixels: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray, g: np.ndarray,
                  b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of every attack, from attacks.csv's ``pixels`` column.

    ``pixels`` holds ``x,y,r,g,b`` groups joined by ``;`` (``--pixels K``); an empty cell (RUNs
    written before the column existed) falls back to the row's ``x, y, r, g, b``. Where two
    pixels of one attack share a position only the later one is kept: it is the one the image
    got (the attack applies them in order).

    Parameters
    ----------
    pixels : ndarray, (M,) str
    x, y, r, g, b : ndarray, (M,) int
        The first pixel of each attack.

    Returns
    -------
    vectors : ndarray, (P,) x 5 int64
        ``x, y, r, g, b`` of each pixel, attacks in order, pixels in their order.
    owner : ndarray, (P,) int64
        The attack (row index 0..M-1) each pixel belongs to.

    Raises
    ------
    ValueError
        A group that is not five integers (the message quotes the cell).
    """
    vectors: list[tuple[int, ...]] = []
    owner: list[int] = []
    for i, cell in enumerate(np.asarray(pixels, dtype=object)):
        text = str(cell or "").strip()
        if not text:
            groups = [(int(x[i]), int(y[i]), int(r[i]), int(g[i]), int(b[i]))]
        else:
            try:
                groups = [tuple(int(v) for v in part.split(",")) for part in text.split(";")]
            except ValueError:
                raise ValueError(f"attack {i}: pixels cell {text!r} is not x,y,r,g,b groups "
                                 f"joined by ';'") from None
            if any(len(gr) != 5 for gr in groups):
                raise ValueError(f"attack {i}: pixels cell {text!r} has a group without 5 values")
        last = {(gr[0], gr[1]): gr for gr in groups}  # later pixels at one position win
        kept = [gr for gr in groups if last[(gr[0], gr[1])] is gr]
        vectors += kept
        owner += [i] * len(kept)
    return (np.asarray(vectors, dtype=np.int64).reshape(-1, 5), np.asarray(owner, dtype=np.int64))


@dataclass(frozen=True)
class ClassSuccess:
    """Attacks on the images of one true class (towards one target class, for targeted runs).

    Attributes
    ----------
    source : str
        The true class of the attacked images.
    target : str
        The target class, or ``"other"`` for untargeted attacks.
    attacked, success, strong : int
    mean_before, mean_after : float
        Mean recorded probability (of the true class, or of the target) before / after.
    """

    source: str
    target: str
    attacked: int
    success: int
    strong: int
    mean_before: float
    mean_after: float

    @property
    def success_percent(self) -> float:
        return percent(self.success, self.attacked)

    @property
    def strong_percent(self) -> float:
        return percent(self.strong, self.attacked)


def class_success(source: np.ndarray, target: np.ndarray, success: np.ndarray, strong: np.ndarray,
                  before: np.ndarray, after: np.ndarray,
                  order: Sequence[str] = ()) -> tuple[ClassSuccess, ...]:
    """Success per true class (and target class) of a multi-class campaign.

    Parameters
    ----------
    source, target : ndarray, (N,) str
        True class and target class (``"other"`` when untargeted) of each attacked image.
    success, strong : ndarray, (N,) bool
        The RUN's success flags (judged from the predicted class by the campaign).
    before, after : ndarray, (N,) float
        Recorded probability before / after the attack.
    order : sequence of str
        Class names in the model's output order (config.json's ``classes``); classes not in it
        come after, sorted.

    Returns
    -------
    tuple of ClassSuccess, one per (source, target) pair present, by ``order``.
    """
    source = np.asarray(source).astype(str)
    target = np.asarray(target).astype(str)
    success = np.asarray(success, dtype=bool)
    strong = np.asarray(strong, dtype=bool)
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    rank = {name: i for i, name in enumerate(order)}

    def key(name: str) -> tuple[int, str]:
        return (rank.get(name, len(rank)), name)

    out = []
    for src, tgt in sorted(set(zip(source.tolist(), target.tolist(), strict=True)),
                           key=lambda p: (key(p[0]), key(p[1]))):
        m = (source == src) & (target == tgt)
        out.append(ClassSuccess(src, tgt, int(m.sum()), int(success[m].sum()), int(strong[m].sum()),
                                float(before[m].mean()), float(after[m].mean())))
    return tuple(out)
