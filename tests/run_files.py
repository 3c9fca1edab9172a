"""Small helpers shared by tests that build datasets and read RUN folders."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from onepixel.datasets.demo import dihedral_variants
from onepixel.datasets.images import load_image


def write_patch_dataset(root: Path, true_png: Path, false_png: Path, mitosis: str = "mitosis",
                        normal: str = "normal", ambiguous: bool = False) -> Path:
    """Real patches: the 8 rotations/flips of true.png as mitosis, false.png and its vertical
    flip as normal; ``ambiguous`` adds false.png filed as mitosis (scores < 0.9: skipped)."""
    (root / mitosis).mkdir(parents=True)
    (root / normal).mkdir(parents=True)
    for key, img in dihedral_variants(load_image(true_png)).items():
        Image.fromarray(img).save(root / mitosis / f"true-{key}.png")
    false = load_image(false_png)
    Image.fromarray(false).save(root / normal / "false.png")
    Image.fromarray(np.ascontiguousarray(false[::-1])).save(root / normal / "false-flip.png")
    if ambiguous:
        Image.fromarray(false).save(root / mitosis / "zz-ambiguous.png")
    return root


def write_pair_dataset(root: Path, true_png: Path, false_png: Path) -> Path:
    """Two real patches: true.png as mitosis, false.png as normal; returns ``root``."""
    (root / "mitosis").mkdir(parents=True)
    (root / "normal").mkdir(parents=True)
    shutil.copy(true_png, root / "mitosis" / "true.png")
    shutil.copy(false_png, root / "normal" / "false.png")
    return root


def attack_rows(run: Path) -> list[dict]:
    """attacks.csv rows sorted by image, without the timing column (which varies by run)."""
    with open(run / "attacks.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["image"])
    for r in rows:
        r.pop("seconds")
    return rows


def history_rows(run: Path) -> list[tuple]:
    with open(run / "history.csv", newline="") as fh:
        return sorted(tuple(r) for r in csv.reader(fh))
