"""Shared fixtures. Tests that need the real assets skip with a reason when none are available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onepixel import assets
from onepixel.errors import AssetError

SKIP_REASON = ("needs the real assets (MAX model, sample patches, H&E images): set ONEPIXEL_ASSETS "
               "to a folder holding max-mitosis/ and he-images/ (e.g. ../shared/assets), or run "
               "once with internet to fill the cache")


def _asset(name: str) -> Path:
    try:
        return assets.ensure(name, download=False)
    except AssetError:
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def max_model_path() -> Path:
    return _asset("max-mitosis")


@pytest.fixture(scope="session")
def he_dir() -> Path:
    """The folder holding the registered H&E images (he-images/), verified."""
    paths = [_asset(name) for name in assets.HE_IMAGES]
    return paths[0].parent


@pytest.fixture(scope="session")
def true_png() -> Path:
    return _asset("true.png")


@pytest.fixture(scope="session")
def false_png() -> Path:
    return _asset("false.png")


@pytest.fixture(scope="session")
def sample_images(true_png, false_png) -> np.ndarray:
    from onepixel.datasets.images import load_images

    return load_images([true_png, false_png], (64, 64))
