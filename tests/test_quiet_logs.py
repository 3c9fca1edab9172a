"""Library-side log hygiene: no PyTorch "non-writable array" warning for PIL-decoded images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from onepixel.datasets.images import load_image
from onepixel.models.options import ModelOptions
from onepixel.scoring.policy import load_attack_evaluator


@pytest.mark.slow  # loads the real model through torch
def test_read_only_images_score_without_the_torch_warning(false_png):
    image = load_image(false_png)
    assert not image.flags.writeable  # PIL-decoded: the case that made torch warn
    candidates = np.array([[[1, 2, 255, 255, 0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        # The torch classifier and its on-device evaluator: the two paths that warned.
        ev = load_attack_evaluator("max-mitosis", ModelOptions(device="cpu", engine="torch"), "full",
                                   "deferred")
        scores = ev.scores(image[None], candidates)
        assert scores.shape == (1, 1) and 0.0 <= scores[0, 0] <= 1.0
        assert ev.classifier.scores(image[None]).shape == (1,)
    assert not image.flags.writeable  # the caller's array is left as it was
