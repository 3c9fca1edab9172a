"""``onepixel demo``: the main job on the built-in model and images.

For now it scores the two MAX sample patches and the 8 rotations/flips of ``true.png``
(the demo dataset's mitosis class); attacks, analysis and the report join as they land.
"""

from __future__ import annotations

import logging

import numpy as np

from onepixel import assets
from onepixel.data import load_image
from onepixel.demo_dataset import dihedral_variants
from onepixel.models import ModelOptions, load_classifier

log = logging.getLogger(__name__)


def score_samples(model: str = "max-mitosis",
                  options: ModelOptions | None = None) -> list[tuple[str, float]]:
    """Score the sample patches and the rotations/flips of true.png.

    Returns
    -------
    list of (name, score)
    """
    options = options or ModelOptions()
    classifier = load_classifier(model, options)
    names, images = [], []
    for asset in assets.SAMPLE_IMAGES:
        path = assets.ensure(asset, options.assets_dir)
        names.append(path.name)
        images.append(load_image(path, classifier.input_shape))
    for key, variant in dihedral_variants(images[0]).items():
        if key != "rot0":
            names.append(f"true.png:{key}")
            images.append(variant)
    scores = classifier.scores(np.stack(images))
    return list(zip(names, (float(s) for s in scores), strict=True))
