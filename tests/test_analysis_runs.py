"""Builders of small synthetic RUN folders (docs/run-format.md), shared by the analysis/report tests.

Other test modules import these helpers (``from test_analysis_runs import ...``); the tests at the
bottom check that what they write is what ``onepixel attack`` writes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from onepixel.analysis import ATTACK_COLUMNS, load_history, load_run

M2N, N2M = "mitosis-to-normal", "normal-to-mitosis"


def he_like_image(seed: int, size: int = 64) -> np.ndarray:
    """A 64x64 uint8 RGB image that looks vaguely like an H&E patch: pink background, a dark blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(size * 0.35, size * 0.65, size=2)
    radius = rng.uniform(size * 0.08, size * 0.18)
    blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2)))
    base = np.array([225.0, 170.0, 205.0])
    dark = np.array([70.0, 40.0, 110.0])
    img = base * (1 - blob[..., None]) + dark * blob[..., None]
    img += rng.normal(0, 9, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(path)


def attack_row(image: str, goal: str, original: float, attacked: float, x: int, y: int,
               rgb: Sequence[int], nit: int, direction: str | None = None, label: str | None = None,
               seconds: float = 0.5) -> dict:
    """One attacked row, with early/success/strong computed as the campaign does (papers' thresholds)."""
    direction = direction or (M2N if goal == "decrease" else N2M)
    label = label or ("mitosis" if goal == "decrease" else "normal")
    if goal == "decrease":
        success, strong = attacked < 0.5, attacked < 0.05
    else:
        success, strong = attacked > 0.5, attacked > 0.95
    return {"image": image, "label": label, "direction": direction, "goal": goal, "status": "attacked",
            "skip_reason": "", "original_score": repr(float(original)),
            "attacked_score": repr(float(attacked)),
            "x": x, "y": y, "r": rgb[0], "g": rgb[1], "b": rgb[2], "nit": nit, "nfev": 200 * (nit + 1),
            "early_converged": int(nit == 1), "success": int(success), "strong_success": int(strong),
            "seconds": f"{seconds:.4f}"}


def skipped_row(image: str, goal: str, original: float) -> dict:
    if goal == "decrease":
        direction, label, reason = M2N, "mitosis", f"positive scored {original:.4g} < 0.9"
    else:
        direction, label, reason = N2M, "normal", f"negative scored {original:.4g} > 0.1"
    row = dict.fromkeys(ATTACK_COLUMNS, "")
    row.update({"image": image, "label": label, "direction": direction, "goal": goal, "status": "skipped",
                "skip_reason": reason, "original_score": repr(float(original)), "nit": 0, "nfev": 0,
                "early_converged": 0, "success": 0, "strong_success": 0, "seconds": "0.0000"})
    return row


def write_run(run_dir: Path, rows: Iterable[dict], dataset: Path | None,
              history: dict[str, Sequence[float]] | None = None, config: dict | None = None) -> Path:
    """Write config.json, attacks.csv and history.csv as ``onepixel attack`` does.

    ``history`` maps image -> best score after generation 0..nit; by default a curve from the
    original score to the attacked score over ``nit + 1`` points is made up for every attacked row.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    cfg = {
        "format": 1, "onepixel_version": "0.1.0", "created": "2026-11-23T19:30:00+00:00",
        "dataset": str(dataset) if dataset is not None else "/nonexistent/dataset",
        "positive_label": "mitosis", "negative_label": "normal",
        "model": {"spec": "max-mitosis", "name": "max-mitosis", "sha256": "1888ef" + "0" * 58},
        "attack": {"population": 200, "maxiter": 100, "mutation": 0.5, "recombination": 0.7, "tol": 0.01,
                   "atol": 0.0, "updating": "immediate", "seed": 0, "skip_positive_below": 0.9,
                   "skip_negative_above": 0.1, "success_threshold": 0.5, "strong_decrease_below": 0.05,
                   "strong_increase_above": 0.95},
        "device": "cpu", "limit": None, "versions": {"python": "3.11.7"},
    }
    cfg.update(config or {})
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    with (run_dir / "attacks.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ATTACK_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (run_dir / "history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "generation", "best_score"])
        for row in rows:
            if row["status"] != "attacked":
                continue
            curve = (history or {}).get(row["image"])
            if curve is None:
                a, b, n = float(row["original_score"]), float(row["attacked_score"]), int(row["nit"])
                t = np.linspace(0, 1, n + 1) ** 0.5
                curve = a + (b - a) * t
            for g, s in enumerate(curve):
                writer.writerow([row["image"], g, repr(float(s))])
    return run_dir


def small_run(tmp: Path, with_dataset: bool = True) -> tuple[Path, Path]:
    """A RUN with 4 mitosis-to-normal and 3 normal-to-mitosis attacks and 2 skipped images.

    Returns (run_dir, dataset_root). Hand-computed facts are asserted in the tests.
    """
    dataset = tmp / "dataset"
    rows = [
        attack_row("mitosis/m0.png", "decrease", 0.99, 0.02, 32, 30, (255, 255, 0), 40),
        attack_row("mitosis/m1.png", "decrease", 0.97, 0.30, 30, 32, (255, 255, 0), 25),
        attack_row("mitosis/m2.png", "decrease", 0.95, 0.60, 33, 31, (255, 255, 255), 60),
        attack_row("mitosis/m3.png", "decrease", 0.93, 0.92, 0, 0, (10, 20, 30), 1),
        attack_row("normal/n0.png", "increase", 0.05, 0.70, 31, 33, (255, 255, 0), 30),
        attack_row("normal/n1.png", "increase", 0.02, 0.08, 63, 63, (0, 0, 0), 1),
        attack_row("normal/n2.png", "increase", 0.01, 0.30, 62, 0, (255, 255, 0), 12),
        skipped_row("mitosis/m4.png", "decrease", 0.85),
        skipped_row("normal/n3.png", "increase", 0.25),
    ]
    if with_dataset:
        for i, row in enumerate(rows):
            write_png(dataset / row["image"], he_like_image(i))
    return write_run(tmp / "run", rows, dataset if with_dataset else None), dataset


# --------------------------------------------------------------------------- the builders' own tests


def test_small_run_reads_back(tmp_path):
    run_dir, _ = small_run(tmp_path)
    run = load_run(run_dir)
    assert len(run.attacks) == 9
    assert int(run.attacks.attacked.sum()) == 7
    assert run.attacks.directions() == [(M2N, "decrease"), (N2M, "increase")]
    assert run.config.attack.success_threshold == 0.5 and run.config.found
    curves = load_history(run.history_path, ["mitosis/m0.png", "normal/n1.png", "nope.png"])
    assert curves["mitosis/m0.png"].shape == (41,)
    assert curves["mitosis/m0.png"][0] == 0.99 and abs(curves["mitosis/m0.png"][-1] - 0.02) < 1e-12
    assert curves["normal/n1.png"].shape == (2,)
    assert "nope.png" not in curves


def test_he_like_image_is_64x64_rgb():
    img = he_like_image(3)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.min() < 120 < img.max()


def write_confmap(run_dir: Path, name: str, image: str | None = None, original_score: float = 0.98,
                  size: int = 64) -> Path:
    """A confidence map with a checkerboard: even-even pixels reach lower scores (as in the paper)."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2)))
    even = ((yy % 2 == 0) & (xx % 2 == 0)).astype(float)
    low = original_score - 0.7 * centre * (0.4 + 0.6 * even)
    high = np.minimum(original_score + 0.01 * centre, 1.0)
    mean = (low + high) / 2
    argmin = np.zeros((size, size, 3), dtype=np.uint8)
    argmin[..., 0] = 255
    argmin[..., 1] = 255
    argmax = np.zeros((size, size, 3), dtype=np.uint8)
    folder = run_dir / "confmaps" / name
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"image": np.array(image)} if image is not None else {}
    np.savez(folder / "confmap.npz", min=low, max=high, mean=mean, argmin_rgb=argmin, argmax_rgb=argmax,
             original_score=np.array(original_score), step=np.array(5), **extra)
    return folder / "confmap.npz"
