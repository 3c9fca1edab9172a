"""The demo dataset, built from the built-in assets.

- ``mitosis/``: the 8 rotations/flips of the MAX sample ``true.png`` (all score 0.96-0.998);
- ``normal/``: ``false.png`` and 64x64 tissue tiles of the real H&E images that the model scores
  at most 0.1: the ``n_normal - 1`` highest-scoring of them (ties by name). Almost every tile
  scores below 1e-4; the papers' normals averaged 0.048, so the tiles nearest the threshold are
  the ones where a normal-to-mitosis attack has a chance, as in the papers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

import onepixel.assets as assets
from onepixel.datasets.images import load_image
from onepixel.datasets.tiles import iter_slide_tiles
from onepixel.fileio import atomic_output_dir

if TYPE_CHECKING:  # the dataset is built with a model, but datasets sit below models
    from onepixel.models.base import Classifier

log = logging.getLogger(__name__)


def dihedral_variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """The 8 rotations/flips of an (H, W, 3) image, keyed ``rot0``..``rot270``, ``flip-rot0``..."""
    out = {}
    for flip in (False, True):
        base = image[:, ::-1] if flip else image
        for k in range(4):
            out[f"{'flip-' if flip else ''}rot{90 * k}"] = np.ascontiguousarray(np.rot90(base, k))
    return out


@dataclass(frozen=True)
class DemoDataset:
    """Where the dataset is and what went into it."""

    root: Path
    n_mitosis: int
    n_normal: int
    candidate_tiles: int
    qualifying_tiles: int


def build_demo_dataset(out: str | Path, classifier: Classifier, n_normal: int = 40,
                       assets_dir: str | None = None, normal_below: float = 0.1) -> DemoDataset:
    """Write the demo dataset into ``out`` (replaced if it exists) and describe it.

    The folder is built beside ``out`` and renamed into place, so it is never half written.
    """
    out = Path(out)
    true_img = load_image(assets.ensure("true.png", assets_dir), classifier.input_shape)
    false_img = load_image(assets.ensure("false.png", assets_dir), classifier.input_shape)
    size = classifier.input_shape[0]
    names, tiles = [], []
    for name in assets.HE_IMAGES:
        path = assets.ensure(name, assets_dir)
        for row, col, tile in iter_slide_tiles(path, size=size):
            names.append(f"{path.stem}_r{row:04d}_c{col:04d}.png")
            tiles.append(np.array(tile))
    scores = classifier.scores(np.stack(tiles))
    keep = [i for i in sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
            if scores[i] <= normal_below]
    chosen = sorted(keep[: max(n_normal - 1, 0)], key=lambda i: names[i])
    log.info("demo dataset: %d tissue tiles, %d score <= %g, %d chosen", len(tiles), len(keep),
             normal_below, len(chosen))

    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "mitosis").mkdir()
        (tmp / "normal").mkdir()
        for key, variant in dihedral_variants(true_img).items():
            Image.fromarray(variant).save(tmp / "mitosis" / f"true_{key}.png")
        Image.fromarray(false_img).save(tmp / "normal" / "false.png")
        for i in chosen:
            Image.fromarray(tiles[i]).save(tmp / "normal" / names[i])
        (tmp / "dataset.json").write_text(json.dumps({
            "mitosis": "8 rotations/flips of the MAX sample true.png",
            "normal": f"false.png and {len(chosen)} tiles of {', '.join(assets.HE_IMAGES)} "
                      f"scoring <= {normal_below}",
            "tiles": {names[i]: float(scores[i]) for i in chosen}}, indent=2))
    return DemoDataset(out, 8, len(chosen) + 1, len(tiles), len(keep))
