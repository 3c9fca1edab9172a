"""Each defence's clean cost next to the attack it stops: ``DIR/robustness.{csv,json,png}``.

For every defence (``none`` included, as the baseline) the dataset's clean images are scored
through the defended model and compared with the undefended model (the clean cost), and a
campaign attacks the defended model (the black box the attack queries) into
``DIR/runs/<folder>/``. Campaigns resume as any campaign does, so a rerun only attacks what is
missing; the clean scores are recomputed (one model call per image and defence: cheap).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.campaign import run_campaign
from onepixel.attack.config import CampaignConfig
from onepixel.audit.store import AUDIT_CSV, VULNERABLE
from onepixel.datasets.images import limit_items, load_image, scan_dataset
from onepixel.defences.wrapper import defend
from onepixel.fileio import atomic_open, write_csv_atomic, write_json_atomic
from onepixel.models.base import Classifier
from onepixel.plotting import figure, png_bytes
from onepixel.progress import progress_bar
from onepixel.robustness.config import RobustnessConfig, run_folder_name
from onepixel.runs.reader import read_attacks_csv
from onepixel.runs.schema import ATTACKS, SUCCESS_THRESHOLD
from onepixel.scoring.policy import load_scoring_classifier

log = logging.getLogger(__name__)

ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_PNG = "robustness.png"
RUNS_DIR = "runs"
AUDIT_DIR = "audit"

ROBUSTNESS_COLUMNS = ("defence", "run", "images", "clean_mean_abs_change", "clean_max_abs_change",
                      "label_agreement", "accuracy", "attacked", "skipped", "success_rate",
                      "strong_success_rate", "median_score_change", "median_queries",
                      "even_even_share", "audit_success_rate", "new_evaluations", "seconds")


@dataclass(frozen=True)
class DefenceRow:
    """One row of ``robustness.csv``: a defence's clean cost and the attack through it.

    Rates are fractions on [0, 1]; None where nothing was there to count (no image attacked, no
    audit). Score changes are absolute: ``|attacked - original|`` per attacked image, as the
    defended model scores it. ``even_even_share``: the attack pixels (the first, for k-pixel
    runs) with x and y both even, the papers' stride-2 checkerboard (chance: 0.25).
    """

    defence: str
    run: str
    images: int
    clean_mean_abs_change: float
    clean_max_abs_change: float
    label_agreement: float
    accuracy: float | None
    attacked: int
    skipped: int
    success_rate: float | None
    strong_success_rate: float | None
    median_score_change: float | None
    median_queries: float | None
    even_even_share: float | None
    audit_success_rate: float | None
    new_evaluations: int
    seconds: float


@dataclass(frozen=True)
class CleanCost:
    """The clean cost of one defence on N images (``scores``: the defended model's, (N,))."""

    scores: np.ndarray
    mean_abs_change: float
    max_abs_change: float
    label_agreement: float
    accuracy: float | None


def clean_cost(defended: np.ndarray, undefended: np.ndarray,
               positive: np.ndarray | None = None) -> CleanCost:
    """Compare a defended model's clean scores with the undefended model's.

    Parameters
    ----------
    defended, undefended : ndarray, (N,), float
        Positive-class probabilities of the same N images.
    positive : ndarray, (N,), bool, optional
        The images' folder labels; gives the defended model's accuracy (label = score > 0.5).
    """
    defended = np.asarray(defended, dtype=np.float64)
    undefended = np.asarray(undefended, dtype=np.float64)
    change = np.abs(defended - undefended)
    labels = defended > SUCCESS_THRESHOLD
    accuracy = None if positive is None else float(np.mean(labels == np.asarray(positive, bool)))
    return CleanCost(defended, float(change.mean()), float(change.max()),
                     float(np.mean(labels == (undefended > SUCCESS_THRESHOLD))), accuracy)


def _audit_success_rate(run_dir: Path) -> float | None:
    """Share of audited images the audit found vulnerable, from ``RUN/audit/audit.csv``."""
    path = run_dir / AUDIT_DIR / AUDIT_CSV
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        status = [row["status"] for row in csv.DictReader(fh)]
    return sum(s == VULNERABLE for s in status) / len(status) if status else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _defence_row(defence: str, run_dir: Path, cost: CleanCost, evaluations: int,
                 seconds: float) -> DefenceRow:
    table = read_attacks_csv(run_dir / ATTACKS)
    attacked = table.select(table.attacked)
    n = len(attacked)
    change = np.abs(attacked.attacked_score - attacked.original_score)
    return DefenceRow(
        defence=defence, run=str(Path(RUNS_DIR) / run_dir.name), images=len(cost.scores),
        clean_mean_abs_change=cost.mean_abs_change, clean_max_abs_change=cost.max_abs_change,
        label_agreement=cost.label_agreement, accuracy=cost.accuracy, attacked=n,
        skipped=len(table) - n,
        success_rate=float(attacked.success.mean()) if n else None,
        strong_success_rate=float(attacked.strong_success.mean()) if n else None,
        median_score_change=_median(change), median_queries=_median(attacked.nfev.astype(float)),
        even_even_share=float(np.mean((attacked.x % 2 == 0) & (attacked.y % 2 == 0))) if n else None,
        audit_success_rate=_audit_success_rate(run_dir), new_evaluations=evaluations,
        seconds=seconds)


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_tradeoff_figure(rows: list[DefenceRow], path: Path) -> None:
    """Clean cost (x) against attack success (y), one labelled point per defence."""
    with figure(5.5, 4.0) as fig:
        _draw_tradeoff(fig, rows)
        data = png_bytes(fig)
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def _draw_tradeoff(fig, rows: list[DefenceRow]) -> None:
    ax = fig.add_subplot()
    for row in rows:
        if row.success_rate is None:
            continue
        x, y = row.clean_mean_abs_change, 100 * row.success_rate
        ax.scatter([x], [y], color="tab:red" if row.defence == "none" else "tab:blue")
        ax.annotate(row.defence, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("clean cost: mean |score change| vs the undefended model")
    ax.set_ylabel("attack success (% of attacked images)")
    ax.set_ylim(-5, 105)
    ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    ax.grid(alpha=0.3)


def run_robustness(cfg: RobustnessConfig, classifier: Classifier | None = None) -> list[DefenceRow]:
    """Measure every defence of ``cfg`` (resumable); write the CSV, JSON and figure; return the rows.

    Parameters
    ----------
    classifier : Classifier, optional
        The undefended model (default: ``cfg.model`` loaded with ``cfg.model_options``); each
        defence wraps it.
    """
    base = classifier if classifier is not None else load_scoring_classifier(cfg.model, cfg.model_options)
    dataset = scan_dataset(cfg.dataset, cfg.positive_label, cfg.negative_label)
    items = limit_items(dataset.items, cfg.limit)
    images = np.stack([load_image(it.path, base.input_shape) for it in items])
    positive = np.array([it.positive for it in items], dtype=bool)
    undefended = base.scores(images)
    out = Path(cfg.out)
    rows: list[DefenceRow] = []
    bar = progress_bar(cfg.defences, unit="defence", desc="robustness", disable=not cfg.progress,
               dynamic_ncols=True)
    for defence in bar:
        bar.set_postfix(defence=defence, refresh=True)
        started = time.perf_counter()
        model = defend(base, defence)
        cost = clean_cost(model.scores(images) if defence != "none" else undefended, undefended,
                          positive)
        run_dir = out / RUNS_DIR / run_folder_name(defence)
        campaign = CampaignConfig(dataset=Path(cfg.dataset), out=run_dir, model=cfg.model,
                                  model_options=cfg.model_options, attack=cfg.attack,
                                  batch_images=cfg.batch_images, limit=cfg.limit,
                                  positive_label=cfg.positive_label,
                                  negative_label=cfg.negative_label, progress=cfg.progress,
                                  evaluator="full")
        summary = run_campaign(campaign, classifier=model)
        row = _defence_row(defence, run_dir, cost, int(summary.get("evaluations_this_session", 0)),
                           time.perf_counter() - started)
        log.info("%s: clean cost %.4f, attack success %s", defence, row.clean_mean_abs_change,
                 row.success_rate)
        rows.append(row)
    bar.close()
    write_csv_atomic(out / ROBUSTNESS_CSV, ROBUSTNESS_COLUMNS,
                     [[_csv_value(getattr(r, c)) for c in ROBUSTNESS_COLUMNS] for r in rows])
    write_json_atomic(out / ROBUSTNESS_JSON, {
        "dataset": str(Path(cfg.dataset).resolve()), "model": cfg.model,
        "attack": cfg.attack.to_dict(), "limit": cfg.limit,
        "defences": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                      for k, v in asdict(r).items()} for r in rows]})
    write_tradeoff_figure(rows, out / ROBUSTNESS_PNG)
    return rows


def format_robustness(rows: list[DefenceRow]) -> str:
    """The terminal table: one line per defence."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [f"{'defence':<16} {'clean |d|':>9} {'agree':>7} {'acc':>7} {'attacked':>8} "
             f"{'success':>8} {'strong':>7} {'med |d|':>8} {'queries':>8} {'even-even':>9}"]
    for r in rows:
        med = "-" if r.median_score_change is None else f"{r.median_score_change:.4f}"
        q = "-" if r.median_queries is None else f"{r.median_queries:.0f}"
        lines.append(f"{r.defence:<16} {r.clean_mean_abs_change:>9.4f} {pct(r.label_agreement):>7} "
                     f"{pct(r.accuracy):>7} {r.attacked:>8} {pct(r.success_rate):>8} "
                     f"{pct(r.strong_success_rate):>7} {med:>8} {q:>8} {pct(r.even_even_share):>9}")
    return "\n".join(lines)
