"""The papers' statistics, computed from the files of a RUN folder (never by re-running attacks).

Pure functions on arrays (each tested against hand-computed values):

- scores: :func:`score_stats`, :func:`success_counts`, :func:`early_convergence`, :func:`nit_stats`,
  :func:`nit_distribution` (Tables 1-2 of the breast-cancer paper);
- colours: :func:`top_colours`;
- chromatic: :func:`neighbour_mean`, :func:`chromatic_h`, :func:`paper_filter`, :func:`chromatic_stats`;
- spatial: :func:`spatial_stats` (Tables 1-2 of the chromatic paper);
- periodicity: :func:`parity_counts`, :func:`expected_parity`, :func:`location_map`;
- multi-class and k pixels: :func:`class_success`, :func:`attack_pixels`.

Reading a RUN: :func:`load_run`, :func:`load_history`; everything at once:
:func:`compute_analysis` -> :class:`RunAnalysis`, and :func:`build_tables` -> :class:`Table` s.
Figures, ``analyze_run`` and the HTML report live in :mod:`onepixel.report`.
"""

from onepixel.analysis.chromatic import (
    ChromaticStats,
    OriginalPixels,
    chromatic_h,
    chromatic_stats,
    neighbour_mean,
    paper_filter,
    read_original_pixels,
)
from onepixel.analysis.compute import (
    ALL_CLASSES,
    SECTIONS,
    DirectionAnalysis,
    Note,
    RunAnalysis,
    compute_analysis,
    generalise_reason,
)
from onepixel.analysis.confmaps import ConfidenceMap, ConfmapStats, confmap_stats, load_confmap
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
    colour_name,
    early_convergence,
    expected_parity,
    gain,
    location_map,
    nit_distribution,
    nit_stats,
    parity_counts,
    score_stats,
    spatial_stats,
    spearman,
    success_counts,
    top_colours,
)
from onepixel.analysis.tables import Table, build_tables
from onepixel.runs.reader import (
    ATTACK_COLUMNS,
    HISTORY_COLUMNS,
    AttackTable,
    RunData,
    RunError,
    load_history,
    load_run,
    read_attacks_csv,
)

__all__ = [
    "ALL_CLASSES",
    "ATTACK_COLUMNS",
    "HISTORY_COLUMNS",
    "SECTIONS",
    "AttackTable",
    "ChromaticStats",
    "ClassSuccess",
    "ColourCount",
    "ConfidenceMap",
    "ConfmapStats",
    "DirectionAnalysis",
    "EarlyConvergence",
    "NitStats",
    "Note",
    "OriginalPixels",
    "ParityCounts",
    "RunAnalysis",
    "RunData",
    "RunError",
    "ScoreStats",
    "SpatialStats",
    "SuccessCounts",
    "Table",
    "attack_pixels",
    "build_tables",
    "chromatic_h",
    "chromatic_stats",
    "class_success",
    "colour_name",
    "compute_analysis",
    "confmap_stats",
    "early_convergence",
    "expected_parity",
    "gain",
    "generalise_reason",
    "load_confmap",
    "load_history",
    "load_run",
    "location_map",
    "neighbour_mean",
    "nit_distribution",
    "nit_stats",
    "paper_filter",
    "parity_counts",
    "read_attacks_csv",
    "read_original_pixels",
    "score_stats",
    "spatial_stats",
    "spearman",
    "success_counts",
    "top_colours",
]
