"""All statistics of a RUN, per attack direction, computed once from its files.

:func:`compute_analysis` turns a :class:`~onepixel.runs.reader.RunData` into a
:class:`RunAnalysis`: the typed results of every function in :mod:`onepixel.analysis.stats`
and :mod:`onepixel.analysis.chromatic`, plus the arrays the figures need. Tables and figures are
built from it; statistics always use every row (only plots subsample).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onepixel.analysis.chromatic import (
    ChromaticStats,
    OriginalPixels,
    chromatic_h,
    chromatic_stats,
    paper_filter,
    read_original_pixels,
)
from onepixel.analysis.stats import (
    ClassSuccess,
    ColourCount,
    EarlyConvergence,
    NitStats,
    ParityCounts,
    ScoreStats,
    SpatialStats,
    SuccessCounts,
    attack_pixels,
    class_success,
    early_convergence,
    expected_parity,
    location_map,
    nit_distribution,
    nit_stats,
    parity_counts,
    score_stats,
    spatial_stats,
    success_counts,
    top_colours,
)
from onepixel.confmap.result import ConfidenceMap, load_confmap
from onepixel.errors import ConfmapError, RunError
from onepixel.runs.reader import AttackTable, RunData
from onepixel.runs.schema import BINARY_GOALS, judge, lowers_score

#: Goals of K-class models: their success is the RUN's flag (judged from the predicted class).
MULTICLASS_GOALS = ("untargeted", "targeted")
#: The direction name of a multi-class RUN's attacks pooled over every class.
ALL_CLASSES = "all classes"

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SHAPE = (64, 64)

#: Report sections, in order: (key, title).
SECTIONS = (
    ("summary", "Summary"),
    ("classes", "Success per class"),
    ("scores", "Confidence scores before and after the attack"),
    ("convergence", "Early convergence and progress of differential evolution"),
    ("examples", "Adversarial examples"),
    ("colours", "Attack colours"),
    ("chromatic", "Chromatic analysis"),
    ("spatial", "Spatial analysis"),
    ("periodicity", "Periodicity"),
    ("confmaps", "One-pixel confidence maps"),
)


@dataclass(frozen=True)
class Note:
    """A remark attached to a report section (a skipped analysis, an empty selection, ...)."""

    section: str
    text: str


@dataclass(frozen=True, eq=False)
class DirectionAnalysis:
    """Every statistic of one attack direction.

    ``rows`` holds the attacked images of the direction only; ``rest`` marks those that did not
    converge early (the papers' Tables 1-2 and box plots use them). Chromatic and spatial
    statistics are given with the papers' inclusion filter (``filtered``) and for all attacks.

    Attributes
    ----------
    direction, goal : str
    images, skipped : int
        Images of the direction in attacks.csv, and how many of them were skipped.
    skip_reasons : tuple of (reason, count)
        Reasons with the score removed (``positive scored < 0.9``), most common first.
    rows : AttackTable
        The attacked images, (M,) rows.
    rest : ndarray, (M,) bool
        Not early-converged.
    filtered : ndarray, (M,) bool
        The chromatic paper's inclusion filter.
    h : ndarray, (P,) float64 or None
        Chromatic RMSE per attack pixel (``nan`` where the original could not be read); None when
        the dataset was not available.
    location : ndarray, (H, W) int64
        Attack pixel counts over all attacks of the direction.
    pixels : ndarray, (P, 5) int64
        ``x, y, r, g, b`` of every pixel of every attack (P = M for one-pixel attacks; K per
        attack with ``--pixels K``, a position set twice counted once). Colours, spatial,
        periodicity, location and chromatic statistics are over these pixels.
    owner : ndarray, (P,) int64
        The attack (index into ``rows``) of each pixel.
    """

    direction: str
    goal: str
    images: int
    skipped: int
    skip_reasons: tuple[tuple[str, int], ...]
    rows: AttackTable
    rest: np.ndarray
    filtered: np.ndarray
    scores_all: tuple[ScoreStats, ScoreStats]
    scores_rest: tuple[ScoreStats, ScoreStats]
    success_all: SuccessCounts
    success_rest: SuccessCounts
    early: EarlyConvergence
    nit: NitStats
    nit_bins: tuple[tuple[str, int], ...]
    colours: tuple[ColourCount, ...]
    colours_success: tuple[ColourCount, ...]
    spatial_filtered: SpatialStats
    spatial_all: SpatialStats
    parity_all: ParityCounts
    parity_success: ParityCounts
    location: np.ndarray
    h: np.ndarray | None = None
    chromatic_filtered: ChromaticStats | None = None
    chromatic_all: ChromaticStats | None = None
    pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), dtype=np.int64))
    owner: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def attacked(self) -> int:
        return len(self.rows)

    @property
    def multiclass(self) -> bool:
        return self.goal in MULTICLASS_GOALS

    @property
    def success_mask(self) -> np.ndarray:
        """(M,) bool: the attack succeeded (binary goals: crossed the success threshold;
        multi-class goals: the RUN's flag, judged from the predicted class)."""
        if self.multiclass:
            return np.asarray(self.rows.success, dtype=bool)
        s = self.rows.attacked_score
        t = self.success_all.success_threshold
        return s < t if lowers_score(self.goal) else s > t


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """The statistics of a whole RUN.

    Attributes
    ----------
    run : RunData
    directions : tuple of DirectionAnalysis
        Decrease direction(s) first.
    image_shape : (H, W)
        From the original images when readable, else 64x64 (grown to fit the coordinates).
    dataset_available : bool
    notes : tuple of Note
    confmaps : tuple of ConfidenceMap
        The readable maps of ``RUN/confmaps`` (unreadable ones give a note).
    pooled : DirectionAnalysis or None
        Multi-class RUNs: every attack of every class as one direction (:data:`ALL_CLASSES`);
        the pixel statistics and figures use it, as K per-class panels do not fit a page.
        None for binary RUNs.
    classes : tuple of ClassSuccess
        Multi-class RUNs: success per true class (and target); empty for binary RUNs.
    """

    run: RunData
    directions: tuple[DirectionAnalysis, ...]
    image_shape: tuple[int, int]
    dataset_available: bool
    notes: tuple[Note, ...] = field(default=())
    confmaps: tuple[ConfidenceMap, ...] = field(default=())
    pooled: DirectionAnalysis | None = None
    classes: tuple[ClassSuccess, ...] = field(default=())

    @property
    def multiclass(self) -> bool:
        """The RUN attacked a K-class model (goal untargeted or targeted)."""
        return any(d.multiclass for d in self.directions)

    @property
    def stat_directions(self) -> tuple[DirectionAnalysis, ...]:
        """What per-direction pixel statistics and figures are drawn for: the directions of a
        binary RUN, the pooled :data:`ALL_CLASSES` direction of a multi-class one."""
        if self.pooled is not None:
            return (self.pooled,)
        return self.directions

    @property
    def pixels_per_attack(self) -> int:
        """The most pixels one attack set (1 for the papers' one-pixel attacks)."""
        counts = [np.bincount(d.owner).max() for d in self.directions if d.owner.size]
        return int(max(counts)) if counts else 1

    @property
    def target(self) -> str | None:
        """The target class of a targeted RUN, else None."""
        return self.run.config.target

    @property
    def total_images(self) -> int:
        return len(self.run.attacks)

    @property
    def total_attacked(self) -> int:
        return sum(d.attacked for d in self.directions)

    @property
    def total_skipped(self) -> int:
        return sum(d.skipped for d in self.directions)

    def direction(self, name: str) -> DirectionAnalysis:
        for d in self.directions:
            if d.direction == name:
                return d
        raise KeyError(name)


_SCORE_IN_REASON = re.compile(r"\s[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(?=\s*[<>])")


def generalise_reason(reason: str) -> str:
    """``"positive scored 0.85 < 0.9"`` -> ``"positive scored < 0.9"`` (groups skip reasons)."""
    return _SCORE_IN_REASON.sub("", reason).strip() or "(no reason given)"


def dataset_status(run: RunData) -> tuple[Path | None, str]:
    """The dataset root if it is a readable folder, else None and why not."""
    root = run.config.dataset
    if root is None:
        return None, "config.json names no dataset folder"
    if not root.is_dir():
        return None, f"the dataset folder {root} named in config.json is not reachable from this machine"
    return root, ""


def compute_analysis(run: RunData, read_originals: bool = True, workers: int | None = None) -> RunAnalysis:
    """Compute every statistic of a RUN.

    Parameters
    ----------
    run : RunData
        From :func:`onepixel.analysis.load_run`.
    read_originals : bool
        Read the original images from ``config["dataset"]`` for the chromatic analysis. When the
        folder is not reachable the chromatic section is skipped with a logged warning and a note.
    workers : int, optional
        Worker processes for reading the original images (see :func:`read_original_pixels`).

    Returns
    -------
    RunAnalysis
    """
    table = run.attacks
    notes: list[Note] = []
    attacked_mask = table.attacked
    att = table.select(attacked_mask)
    try:
        vectors, owner = attack_pixels(att.pixels, att.x, att.y, att.r, att.g, att.b)
    except ValueError as exc:
        raise RunError(f"{run.run_dir / 'attacks.csv'}: {exc}") from None
    originals: OriginalPixels | None = None
    root, why = dataset_status(run)
    if read_originals and root is not None and len(att):
        originals = read_original_pixels(root, att.image[owner], vectors[:, 0], vectors[:, 1],
                                         workers=workers)
        if originals.image_shape is None:
            why = f"none of the {len(att):,} original images could be read under {root}"
            originals = None
        elif originals.missing:
            notes.append(Note("chromatic", f"{len(set(originals.missing)):,} of {len(att):,} original "
                                           f"images could not be read under {root}; their attacks "
                                           f"are left out of the chromatic statistics."))
    elif not read_originals:
        why = "reading the original images was turned off"
    if originals is None and len(att):
        text = (f"Chromatic analysis and adversarial-example figures skipped: {why}. Re-run "
                f"`onepixel analyze` on a machine that holds the dataset to include them.")
        if read_originals:
            log.warning("%s", text)
        notes.append(Note("chromatic", text))
    shape = originals.image_shape if originals is not None else None
    if shape is None:
        shape = DEFAULT_IMAGE_SHAPE
        if len(att):
            shape = (max(shape[0], int(vectors[:, 1].max()) + 1),
                     max(shape[1], int(vectors[:, 0].max()) + 1))
    h_all = chromatic_h(vectors[:, 2:], originals.neighbours) if originals is not None else None

    def part(name: str, goal: str, in_dir: np.ndarray) -> DirectionAnalysis:
        sel_att = in_dir[attacked_mask]
        sel_px = sel_att[owner]
        new_index = np.cumsum(sel_att) - 1  # row index within the direction's attacks
        return _direction(run, name, goal, table.select(in_dir), att.select(sel_att),
                          None if h_all is None else h_all[sel_px], shape, vectors[sel_px],
                          new_index[owner[sel_px]])

    directions = [part(direction, goal, (table.direction == direction) & (table.goal == goal))
                  for direction, goal in table.directions()]
    pooled = None
    classes: tuple[ClassSuccess, ...] = ()
    multi_goals = [g for g in MULTICLASS_GOALS if (table.goal == g).any()]
    if multi_goals:
        # A RUN has one goal (resuming checks it); the first one present names the pool.
        pooled = part(ALL_CLASSES, multi_goals[0], np.isin(table.goal, MULTICLASS_GOALS))
        rows = pooled.rows
        targets = np.array([d[len(lb) + 4:] if g == "targeted" else "other"
                            for d, lb, g in zip(rows.direction, rows.label, rows.goal, strict=True)],
                           dtype=object)
        classes = class_success(rows.label, targets, rows.success, rows.strong_success,
                                rows.original_score, rows.attacked_score,
                                run.config.classes)
    if not len(table):
        notes.append(Note("summary", "attacks.csv has no rows: the campaign has not finished any "
                                     "image yet."))
    elif not len(att):
        notes.append(Note("summary", f"Every one of the {len(table):,} images was skipped (none was "
                                     f"unambiguous enough to attack), so there are no attack "
                                     f"statistics or figures."))
    confmaps = []
    for path in run.confmap_paths:
        try:
            confmaps.append(load_confmap(path, root))
        except ConfmapError as exc:
            log.warning("%s", exc)
            notes.append(Note("confmaps", f"Left out: {exc}"))
    return RunAnalysis(run, tuple(directions), (int(shape[0]), int(shape[1])), originals is not None,
                       tuple(notes), tuple(confmaps), pooled, classes)


def _direction(run: RunData, direction: str, goal: str, everything: AttackTable, rows: AttackTable,
               h: np.ndarray | None, shape: tuple[int, int], vectors: np.ndarray,
               owner: np.ndarray) -> DirectionAnalysis:
    """Statistics of one direction: ``rows`` (M attacks), their ``vectors`` (P, 5) pixels and
    each pixel's attack ``owner`` (P,); ``h`` (P,) per pixel."""
    skipped = everything.select(~everything.attacked)
    reasons: dict[str, int] = {}
    for reason in skipped.skip_reason:
        key = generalise_reason(str(reason))
        reasons[key] = reasons.get(key, 0) + 1
    rest = ~rows.early_converged
    before, after = rows.original_score, rows.attacked_score
    settings = run.config.attack
    t = settings.success_threshold
    strong = settings.strong_threshold(goal)
    filtered = paper_filter(np.full(len(rows), goal), after, settings.skip_positive_below,
                            settings.skip_negative_above)
    success = judge(goal, after, t, strong, strong)[0] if goal in BINARY_GOALS else rows.success
    px_success = np.asarray(success, dtype=bool)[owner]
    px_filtered = filtered[owner]
    px_x, px_y, px_rgb = vectors[:, 0], vectors[:, 1], vectors[:, 2:]
    maxiter = settings.maxiter
    result = DirectionAnalysis(
        direction=direction, goal=goal, images=len(everything), skipped=len(skipped),
        skip_reasons=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        rows=rows, rest=rest, filtered=filtered,
        scores_all=(score_stats(before), score_stats(after)),
        scores_rest=(score_stats(before[rest]), score_stats(after[rest])),
        success_all=success_counts(goal, after, t, strong, (rows.success, rows.strong_success)),
        success_rest=success_counts(goal, after[rest], t, strong,
                                    (rows.success[rest], rows.strong_success[rest])),
        early=early_convergence(goal, before, after, rows.early_converged),
        nit=nit_stats(rows.nit, maxiter), nit_bins=tuple(nit_distribution(rows.nit, maxiter)),
        colours=top_colours(px_rgb), colours_success=top_colours(px_rgb[px_success]),
        spatial_filtered=spatial_stats(vectors[px_filtered]), spatial_all=spatial_stats(vectors),
        parity_all=parity_counts(px_x, px_y),
        parity_success=parity_counts(px_x[px_success], px_y[px_success]),
        location=location_map(px_x, px_y, shape),
        h=h,
        # Each pixel of a k-pixel attack counts with its attack's scores.
        chromatic_filtered=None if h is None else chromatic_stats(
            h[px_filtered], goal, before[owner][px_filtered], after[owner][px_filtered]),
        chromatic_all=None if h is None else chromatic_stats(h, goal, before[owner], after[owner]),
        pixels=vectors, owner=owner,
    )
    return result


def parity_expected(analysis: RunAnalysis) -> dict[str, float]:
    """Parity fractions expected under uniform placement on this RUN's image size."""
    h, w = analysis.image_shape
    return expected_parity(w, h)
