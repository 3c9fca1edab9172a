"""Run the detector on image files or on a RUN, and write its files.

For a RUN, each attacked image is scored twice: the ``original`` (from the run's dataset
folder) and its ``adversarial`` version, rebuilt from attacks.csv (``x, y, r, g, b``, or every
pixel of the ``pixels`` column for ``--pixels K`` runs). The TPR is the fraction of adversarial
versions of successful attacks flagged; the FPR the fraction of originals flagged.

Files written into ``out``: ``detections.csv`` (``image, version, flagged, statistic``),
``detection.json`` (the calibration, TPR and FPR, the ROC points) and ``roc.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.analysis.stats import attack_pixels
from onepixel.datasets.images import load_image
from onepixel.detection.calibration import Calibration, image_statistic
from onepixel.errors import ConfigError, RunError
from onepixel.fileio import write_csv_atomic, write_json_atomic
from onepixel.plotting import new_figure, save_png, styled
from onepixel.progress import progress_bar
from onepixel.runs.reader import load_run
from onepixel.runs.schema import image_path, record_text

log = logging.getLogger(__name__)

DETECTIONS = "detections.csv"
COLUMNS = ("image", "version", "flagged", "statistic")


@dataclass(frozen=True)
class Detections:
    """The detector's verdicts.

    Attributes
    ----------
    image, version : tuple of str
        Each scored image and ``original`` / ``adversarial``.
    statistic : ndarray, (N,) float64
    flagged : ndarray, (N,) bool
    success : ndarray, (N,) bool
        For adversarial rows, whether the attack succeeded (False for originals).
    calibration : Calibration
    """

    image: tuple[str, ...]
    version: tuple[str, ...]
    statistic: np.ndarray
    flagged: np.ndarray
    success: np.ndarray
    calibration: Calibration

    def rates(self) -> dict[str, float | int]:
        """TPR on successful adversarial images, on every adversarial image, and FPR on originals."""
        version = np.asarray(self.version)
        orig, adv = version == "original", version == "adversarial"
        succ = adv & self.success

        def rate(mask: np.ndarray) -> float:
            return float(self.flagged[mask].mean()) if mask.any() else float("nan")

        return {"tpr_successful": rate(succ), "n_successful": int(succ.sum()),
                "tpr_all_adversarial": rate(adv), "n_adversarial": int(adv.sum()),
                "fpr_originals": rate(orig), "n_originals": int(orig.sum())}


def detect_images(paths: Sequence[str | Path], calibration: Calibration,
                  progress: bool = False) -> Detections:
    """Score image files (each read at its own size) as ``original`` images (``progress``: a
    progress bar over the files on stderr)."""
    if not paths:
        raise ConfigError("detect_images(paths) is empty: give image files to detect (or scan a RUN "
                          "with scan_run)", field="detect_images(paths)")
    images = [load_image(p) for p in progress_bar(paths, unit="image", desc="detect", disable=not progress,
                                          dynamic_ncols=True)]
    values = np.array([image_statistic(im[None], calibration.statistic)[0] for im in images])
    return Detections(tuple(record_text(str(p)) for p in paths), ("original",) * len(paths), values,
                      calibration.flag(values), np.zeros(len(paths), bool), calibration)


def adversarial_images(run_dir: str | Path, progress: bool = False
                       ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Each attacked image of a RUN, original and rebuilt adversarial version (``progress``: a
    progress bar over the images on stderr).

    Returns
    -------
    names : list of str
        attacks.csv's ``image`` of each attacked row.
    originals, adversarials : ndarray, uint8, (M, H, W, C)
    success : ndarray, (M,) bool
    """
    run = load_run(run_dir)
    root = run.config.dataset
    if root is None:
        raise RunError(f"{run_dir}/config.json names no dataset folder: the originals cannot be read")
    t = run.attacks
    rows = np.nonzero((t.status == "attacked") & (t.x >= 0))[0]
    if len(rows) == 0:
        raise RunError(f"{run_dir}/attacks.csv has no attacked image")
    vectors, owner = attack_pixels(t.pixels[rows], t.x[rows], t.y[rows], t.r[rows], t.g[rows], t.b[rows])
    originals, adversarials = [], []
    for j, i in enumerate(progress_bar(rows, unit="image", desc="detect", disable=not progress,
                               dynamic_ncols=True)):
        path = image_path(root, str(t.image[i]))
        if not path.is_file():
            raise RunError(f"image {t.image[i]} of {run_dir}/attacks.csv is not under the run's "
                           f"dataset folder {root} (moved?)")
        image = load_image(path)
        adv = image.copy()
        for x, y, *rgb in vectors[owner == j]:
            adv[y, x] = rgb[: adv.shape[-1]]
        originals.append(image)
        adversarials.append(adv)
    return ([str(t.image[i]) for i in rows], np.stack(originals), np.stack(adversarials),
            t.success[rows].astype(bool))


def detect_run(run_dir: str | Path, calibration: Calibration, progress: bool = False) -> Detections:
    """Score each attacked image of a RUN: its original and its adversarial version."""
    names, originals, adversarials, success = adversarial_images(run_dir, progress)
    s_orig = image_statistic(originals, calibration.statistic)
    s_adv = image_statistic(adversarials, calibration.statistic)
    n = len(names)
    values = np.concatenate([s_orig, s_adv])
    return Detections(tuple(names) * 2, ("original",) * n + ("adversarial",) * n, values,
                      calibration.flag(values), np.concatenate([np.zeros(n, bool), success]),
                      calibration)


def roc_points(negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of every threshold, from (0, 0) to (1, 1), flagging values above it."""
    thresholds = np.unique(np.concatenate([negatives, positives, [np.inf]]))[::-1]
    fpr = np.array([np.mean(negatives > t) if len(negatives) else np.nan for t in thresholds])
    tpr = np.array([np.mean(positives > t) if len(positives) else np.nan for t in thresholds])
    return np.concatenate([fpr, [1.0]]), np.concatenate([tpr, [1.0]])


def write_detections(out: str | Path, det: Detections, clean_heldout: np.ndarray | None = None) -> dict:
    """Write ``detections.csv``, ``detection.json`` and (with positives) ``roc.png``; return the
    JSON content.

    ``clean_heldout`` (statistics of held-out clean tiles) joins the originals as negatives of
    the ROC curve.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / DETECTIONS, COLUMNS, [
        (im, v, int(f), f"{s:.6f}") for im, v, f, s in
        zip(det.image, det.version, det.flagged, det.statistic, strict=True)])
    version = np.asarray(det.version)
    negatives = det.statistic[version == "original"]
    if clean_heldout is not None:
        negatives = np.concatenate([negatives, clean_heldout])
    positives = det.statistic[(version == "adversarial") & det.success]
    info = {"calibration": det.calibration.to_dict(), **det.rates()}
    if len(positives) and len(negatives):
        fpr, tpr = roc_points(negatives, positives)
        info["roc"] = {"negatives": "run originals" + (" and held-out clean tiles"
                                                       if clean_heldout is not None else ""),
                       "positives": "adversarial versions of successful attacks",
                       "fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(),
                       "auc": float(np.trapezoid(tpr, fpr))}
        _roc_figure(out / "roc.png", fpr, tpr, det)
    write_json_atomic(out / "detection.json", info)
    return info


@styled()
def _roc_figure(path: Path, fpr: np.ndarray, tpr: np.ndarray, det: Detections) -> None:
    fig = new_figure(4.2, 4.0)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, drawstyle="steps-post", color="C0", label="detector")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
    r = det.rates()
    ax.plot([r["fpr_originals"]], [r["tpr_successful"]], "o", color="C3",
            label=f"threshold {det.calibration.threshold:.3f}")
    ax.set_xlabel("false-positive rate (clean)")
    ax.set_ylabel("true-positive rate (successful attacks)")
    ax.set_title(f"one-pixel detector ({det.calibration.statistic})")
    ax.legend(loc="lower right")
    save_png(fig, path)
