"""``onepixel evaluate``: a fixed ensemble, each method only on the images still robust.

As AutoAttack does for L_p robustness, the methods run in a fixed order with a per-image query
budget, and an image counts as robust only when none of them broke it: first ``rs`` (random
search, the cheapest per flip), then the papers' DE, then the audit's exhaustive corner scan
(every pixel at the 8 corners of the colour cube) with integer refinement. Each method is an
ordinary resumable campaign (``DIR/runs/<method>``), all stopping on success; running the same
command again continues where it stopped.

Writes ``DIR/evaluation.csv`` (one row per image, :data:`~onepixel.evaluation.config.
EVALUATION_COLUMNS`), ``DIR/evaluation.json`` (the headline numbers), ``DIR/curves.csv`` and
``DIR/curves.png`` (success against queries per method and for the ensemble, built from the
rows: :mod:`onepixel.evaluation.curves`).

evaluation.csv: ``status`` is ``broken`` when any method succeeded on the image (``method`` the
first that did; ``queries`` every query the ensemble spent on it up to that success; ``score``
and the pixel that method's), ``robust`` when every method that ran failed (``method`` the one
whose best score came closest, with its score and pixel; ``queries`` all of them), ``skipped``
when the campaign did not attack it (misclassified, ambiguous by the papers' rule, unreadable).

Unlabelled data (a flat folder or one image file, as for ``onepixel attack``): the first method
labels each image by the model's prediction on it, and every later method is pinned to that
label (``run_campaign(labels=...)``), so the whole ensemble attacks away from the same class.
``label`` then holds the predicted class, and the headline is the *prediction stability* (the
share of images whose prediction no method could flip), not an accuracy: there is no ground
truth to be accurate about.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onepixel.attack.campaign import run_campaign
from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.attack.scan import REFINE_RESERVE, scan_cost
from onepixel.datasets.images import is_unlabelled
from onepixel.errors import RunError
from onepixel.evaluation.config import (
    BROKEN,
    CURVES_CSV,
    CURVES_PNG,
    EVALUATION_COLUMNS,
    EVALUATION_CSV,
    EVALUATION_JSON,
    ROBUST,
    RUNS_DIR,
    SKIPPED,
    EvaluateConfig,
)
from onepixel.evaluation.curves import CURVE_COLUMNS, Curve, draw_curves, success_curve
from onepixel.fileio import atomic_open, write_json_atomic
from onepixel.optimize.de import DEConfig
from onepixel.optimize.rs import RSConfig
from onepixel.runs.reader import read_attacks_csv
from onepixel.runs.schema import ATTACKS, lowers_score

log = logging.getLogger(__name__)

#: DE's population in the ensemble (its generations fill ``max_queries``).
DE_POPULATION = 100
#: The scan's colour step: the 8 corners of the colour cube (CornerSearch's first stage).
SCAN_STEP = 255


@dataclass(frozen=True)
class EvaluationSummary:
    """The headline of an evaluation (also ``DIR/evaluation.json``).

    Attributes
    ----------
    images : int
        Images of the dataset (within ``limit``).
    attacked, skipped : int
        Images the ensemble attacked / did not (misclassified, ambiguous, unreadable).
    broken, robust : int
        Attacked images some method broke / none did.
    robust_scanned : int
        Robust images the exhaustive scan also failed on (the others it skipped by budget).
    robust_accuracy : float
        ``robust / images``: correctly classified and not broken by any method (skipped images
        are not counted robust). nan for unlabelled data (``labels == "predicted"``): see
        ``prediction_stability``.
    per_method : dict
        Per method: ``attacked``, ``broken``, ``median_queries`` per success (nan when none),
        ``ran`` (False when skipped by budget).
    labels : {"folders", "predicted"}
        Where ``label`` came from: the dataset's label folders, or (a flat folder / one image)
        the model's own prediction on each image.
    prediction_stability : float
        Unlabelled data only (else nan): ``robust / images``, the share of images whose
        predicted class no method flipped (skipped images count as not stable). Not an
        accuracy: the labels are the model's predictions, not ground truth.
    """

    images: int
    attacked: int
    skipped: int
    broken: int
    robust: int
    robust_scanned: int
    robust_accuracy: float
    per_method: dict
    labels: str = "folders"
    prediction_stability: float = math.nan

    def headline(self) -> str:
        if self.labels == "predicted":
            return (f"prediction stability under one-pixel attack (unlabelled images, labels = "
                    f"the model's predictions; not an accuracy): {self.prediction_stability:.1%} "
                    f"({self.robust} of {self.images} images kept their predicted class; "
                    f"{self.broken} of {self.attacked} attacked flipped, {self.skipped} "
                    f"skipped); {self.robust_scanned} of the {self.robust} stable images "
                    f"exhaustively scanned")
        return (f"robust accuracy under one-pixel attack: {self.robust_accuracy:.1%} "
                f"({self.robust} of {self.images} images; {self.broken} of {self.attacked} "
                f"attacked broken, {self.skipped} skipped); {self.robust_scanned} of the "
                f"{self.robust} robust images exhaustively scanned")

    def to_dict(self) -> dict:
        out = {**self.__dict__, "headline": self.headline()}
        # The measure that does not apply is null (not NaN) in evaluation.json.
        for key in ("robust_accuracy", "prediction_stability"):
            if math.isnan(out[key]):
                out[key] = None
        return out


def method_attack(cfg: EvaluateConfig, method: str) -> AttackConfig:
    """The :class:`AttackConfig` of one method of the ensemble (all stop on success)."""
    if method == "rs":
        return AttackConfig(method="rs", max_queries=cfg.max_queries, stop_on_success=True,
                            pixels=cfg.pixels, rs=RSConfig(seed=cfg.seed))
    if method == "de":
        de = DEConfig(population=DE_POPULATION, maxiter=cfg.max_queries // DE_POPULATION - 1,
                      tol=0.0, seed=cfg.seed)
        return AttackConfig(method="de", de=de, stop_on_success=True, pixels=cfg.pixels)
    return AttackConfig(method="scan", scan_step=SCAN_STEP, max_queries=cfg.scan_max_queries)


def _scan_fits(cfg: EvaluateConfig, input_shape: tuple[int, int, int]) -> bool:
    """Whether the exhaustive scan runs: one pixel, RGB or grey, and within the scan budget."""
    h, w, c = input_shape
    if cfg.pixels != 1 or c not in (1, 3):
        return False
    need = scan_cost(h * w, SCAN_STEP, c) + REFINE_RESERVE
    return cfg.scan_max_queries is None or need <= cfg.scan_max_queries


def _rows(run: Path) -> dict[str, dict]:
    """A method RUN's rows by image: status, success, nfev, scores and pixel."""
    t = read_attacks_csv(run / ATTACKS)
    out = {}
    for i, name in enumerate(t.image):
        out[str(name)] = {
            "label": str(t.label[i]), "status": str(t.status[i]), "goal": str(t.goal[i]),
            "success": bool(t.success[i]), "nfev": int(max(t.nfev[i], 0)),
            "score": float(t.attacked_score[i]), "original": float(t.original_score[i]),
            "pixel": [int(t.x[i]), int(t.y[i]), int(t.r[i]), int(t.g[i]), int(t.b[i])],
            "pixels": str(t.pixels[i])}
    return out


def evaluate(dataset: EvaluateConfig | str | Path, out: str | Path | None = None, *,
             classifier=None, **settings) -> EvaluationSummary:
    """Run (or resume) the ensemble on a dataset into a folder; the headline.

    ``onepixel.evaluate("data", "eval")``, ``onepixel.evaluate("data", "eval",
    max_queries=3000, methods=("rs", "de"))`` or ``onepixel.evaluate(EvaluateConfig(...))``.

    Parameters
    ----------
    dataset : EvaluateConfig or path
        The settings, or the image folder (then ``out`` and any :class:`EvaluateConfig` field
        as keywords): labelled as for a campaign, or a flat folder / one image file, whose
        images are attacked away from the model's prediction (see the module docstring).
    out : path, optional
        The evaluation folder (required with a dataset path).
    classifier : Classifier, optional
        Use this model instead of loading ``model`` (the scan then maps it as given; loaded from
        ``model`` it takes the exact fast path).

    Returns
    -------
    EvaluationSummary
    """
    if isinstance(dataset, EvaluateConfig):
        if out is not None or settings:
            raise TypeError("evaluate(EvaluateConfig) takes no other settings; use "
                            "dataclasses.replace on the config")
        cfg = dataset
    else:
        if out is None:
            raise TypeError("evaluate(dataset, out): give the evaluation folder")
        cfg = EvaluateConfig(dataset=Path(dataset), out=Path(out), **settings)
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise RunError(f"EvaluateConfig.out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, dict]] = {}
    ran: dict[str, bool] = {}
    robust: list[str] | None = None
    predicted = is_unlabelled(cfg.dataset)
    # Unlabelled data: the first method's predicted labels, which every later method attacks
    # away from (a later method's engine could round a near tie the other way).
    pinned: dict[str, str] | None = None
    for method in cfg.methods:
        attack = method_attack(cfg, method)
        if method == "scan":
            shape = _input_shape(cfg, classifier)
            if not _scan_fits(cfg, shape):
                log.info("evaluate: the exhaustive scan is skipped (pixels %d, budget %s)",
                         cfg.pixels, cfg.scan_max_queries)
                ran[method] = False
                continue
        if robust is not None and not robust:
            ran[method] = False
            continue
        campaign = CampaignConfig(
            dataset=cfg.dataset, out=out / RUNS_DIR / method, model=cfg.model,
            model_options=cfg.model_options, attack=attack, batch_images=cfg.batch_images,
            limit=cfg.limit, positive_label=cfg.positive_label, negative_label=cfg.negative_label,
            progress=cfg.progress, classes=cfg.classes, target=cfg.target)
        if method == "scan":
            campaign = replace(campaign, batch_images=1)
        log.info("evaluate: %s on %s images", method, "all" if robust is None else len(robust))
        run_campaign(campaign, classifier=classifier, only=robust, labels=pinned)
        tables[method] = _rows(campaign.out)
        ran[method] = True
        if predicted:
            pinned = _check_labels(method, campaign.out, tables[method], pinned)
        # Still robust: attacked by every method so far and broken by none.
        first = tables[cfg.methods[0]]
        robust = [n for n, r in first.items() if r["status"] == "attacked"
                  and not any(t.get(n, {}).get("success", False) for t in tables.values())]
    summary, rows = _combine(cfg, tables, ran, "predicted" if predicted else "folders")
    _write_rows(out / EVALUATION_CSV, rows)
    curves = _curves(cfg, tables, rows)
    _write_curves(out / CURVES_CSV, curves)
    draw_curves(curves, out / CURVES_PNG, "success against queries per image")
    write_json_atomic(out / EVALUATION_JSON, summary.to_dict())
    log.info("%s", summary.headline())
    return summary


def _input_shape(cfg: EvaluateConfig, classifier) -> tuple[int, int, int]:
    if classifier is None:
        from onepixel.scoring.policy import load_scoring_classifier

        classifier = load_scoring_classifier(cfg.model, cfg.model_options)
    return tuple(int(v) for v in classifier.input_shape)


def _check_labels(method: str, run: Path, table: dict[str, dict],
                  pinned: dict[str, str] | None) -> dict[str, str]:
    """The predicted labels to pin (the first method's rows); a later method's rows must carry
    them (a RUN resumed from before pinning might not).

    Raises
    ------
    RunError
        A row of ``run`` labels an image otherwise than the first method did.
    """
    labels = {n: r["label"] for n, r in table.items() if r["label"]}
    if pinned is None:
        return labels
    for name, label in labels.items():
        if name in pinned and pinned[name] != label:
            raise RunError(f"{run}: {method} attacked {name} away from {label!r} but the first "
                           f"method's prediction was {pinned[name]!r}; remove {run} and run the "
                           "evaluation again")
    return pinned


def _combine(cfg: EvaluateConfig, tables: dict[str, dict[str, dict]], ran: dict[str, bool],
             labels: str = "folders") -> tuple[EvaluationSummary, list[dict]]:
    first = tables.get(cfg.methods[0], {})
    rows, per_method = [], {}
    broken = robust = scanned = skipped = 0
    for name, base in first.items():
        if base["status"] != "attacked":
            skipped += 1
            rows.append({"image": name, "label": base["label"], "status": SKIPPED, "method": "",
                         "queries": 0, "score": base["original"], "pixel": [""] * 5, "pixels": ""})
            continue
        spent, hit, closest = 0, None, None
        for method in cfg.methods:
            row = tables.get(method, {}).get(name)
            if row is None or row["status"] != "attacked":
                continue
            spent += row["nfev"]
            if row["success"]:
                hit = (method, row, spent)
                break
            energy = row["score"] if lowers_score(row["goal"]) else 1.0 - row["score"]
            if closest is None or energy < closest[0]:
                closest = (energy, method, row)
        # Never robust when any method broke it (even one that ran after another failed).
        if hit is None and any(t.get(name, {}).get("success", False) for t in tables.values()):
            method = next(m for m in cfg.methods if tables.get(m, {}).get(name, {}).get("success"))
            hit = (method, tables[method][name], spent)
        if hit is not None:
            method, row, q = hit
            broken += 1
            rows.append({"image": name, "label": base["label"], "status": BROKEN, "method": method,
                         "queries": q, "score": row["score"], "pixel": row["pixel"],
                         "pixels": row["pixels"]})
        else:
            robust += 1
            scanned += int("scan" in tables and name in tables["scan"]
                           and tables["scan"][name]["status"] == "attacked")
            _, method, row = closest
            rows.append({"image": name, "label": base["label"], "status": ROBUST, "method": method,
                         "queries": spent, "score": row["score"], "pixel": row["pixel"],
                         "pixels": row["pixels"]})
    for method in cfg.methods:
        t = tables.get(method, {})
        att = [r for r in t.values() if r["status"] == "attacked"]
        wins = [r["nfev"] for r in att if r["success"]]
        per_method[method] = {"ran": ran.get(method, False), "attacked": len(att),
                              "broken": len(wins),
                              "median_queries": float(np.median(wins)) if wins else math.nan}
    n = len(first)
    rate = robust / n if n else math.nan
    stability = labels == "predicted"
    summary = EvaluationSummary(images=n, attacked=n - skipped, skipped=skipped, broken=broken,
                                robust=robust, robust_scanned=scanned,
                                robust_accuracy=math.nan if stability else rate,
                                per_method=per_method, labels=labels,
                                prediction_stability=rate if stability else math.nan)
    return summary, rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(EVALUATION_COLUMNS)
        for r in rows:
            score = "" if r["score"] is None or math.isnan(r["score"]) else repr(r["score"])
            w.writerow([r["image"], r["label"], r["status"], r["method"], r["queries"], score,
                        *r["pixel"], r["pixels"]])


def _curves(cfg: EvaluateConfig, tables: dict[str, dict[str, dict]], rows: list[dict]) -> list[Curve]:
    """Per method from its RUN's rows; the ensemble from evaluation.csv's rows."""
    curves = []
    for method in cfg.methods:
        att = [r for r in tables.get(method, {}).values() if r["status"] == "attacked"]
        curves.append(success_curve(method, [r["nfev"] for r in att], [r["success"] for r in att]))
    att = [r for r in rows if r["status"] != SKIPPED]
    curves.append(success_curve("ensemble", [r["queries"] for r in att],
                                [r["status"] == BROKEN for r in att]))
    return curves


def _write_curves(path: Path, curves: list[Curve]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CURVE_COLUMNS)
        for c in curves:
            w.writerows(c.rows())


def read_evaluation(folder: str | Path) -> tuple[dict, list[dict[str, str]]]:
    """``(evaluation.json, evaluation.csv rows)`` of an evaluation folder.

    Raises
    ------
    RunError
        A file is missing or malformed (the message names it).
    """
    import json

    folder = Path(folder)
    try:
        summary = json.loads((folder / EVALUATION_JSON).read_text())
        with open(folder / EVALUATION_CSV, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError, csv.Error) as exc:
        raise RunError(f"cannot read the evaluation in {folder} ({exc}); give the folder "
                       "`onepixel evaluate DATASET -o DIR` wrote") from exc
    return summary, rows
