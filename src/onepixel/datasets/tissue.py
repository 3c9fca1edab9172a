"""Which pixels of an H&E image are tissue (not glass background, not black fill).

Tissue test
-----------
A pixel is *tissue* when its HSV saturation ``(max(R,G,B) - min(R,G,B)) / max(R,G,B)`` is at
least ``min_saturation`` (default 0.1) and its HSV value ``max(R,G,B)`` is at least ``min_value``
(default 30 of 255). Glass background is near-white and grey (saturation about 0), so it fails
the first test; black (empty slide areas, scanner fill) fails the second. A tile is kept when
the fraction of its pixels that are tissue is at least ``tissue_threshold`` (default 0.5);
``tissue_threshold=0`` keeps every tile. Coloured pen marks pass the test (they are saturated):
the test is for background, not for artefacts.
"""

from __future__ import annotations

import numpy as np

from onepixel.errors import ImageError

DEFAULT_MIN_SATURATION = 0.1
DEFAULT_MIN_VALUE = 30


def tissue_mask(
    image: np.ndarray,
    min_saturation: float = DEFAULT_MIN_SATURATION,
    min_value: int = DEFAULT_MIN_VALUE,
) -> np.ndarray:
    """Per-pixel tissue test (see the module docstring).

    Parameters
    ----------
    image : ndarray, shape (..., 3), uint8
        RGB pixels (an image, a tile, or a batch of tiles).
    min_saturation : float
        Smallest HSV saturation, in [0, 1], that counts as tissue.
    min_value : int
        Smallest ``max(R, G, B)``, in [0, 255], that counts as tissue.

    Returns
    -------
    ndarray, shape (...), bool
    """
    rgb = np.asarray(image)
    if rgb.shape[-1] != 3:
        raise ImageError(f"tissue test needs RGB pixels (..., 3), got shape {rgb.shape}")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # elementwise max/min of the planes: much faster than a reduction over a length-3 axis
    hi = np.maximum(np.maximum(r, g), b).astype(np.int32)
    lo = np.minimum(np.minimum(r, g), b).astype(np.int32)
    # saturation >= s  <=>  hi - lo >= s * hi  (hi > 0); avoids a division per pixel
    return (hi >= min_value) & ((hi - lo) >= min_saturation * hi) & (hi > 0)


def tissue_fraction(
    image: np.ndarray,
    min_saturation: float = DEFAULT_MIN_SATURATION,
    min_value: int = DEFAULT_MIN_VALUE,
) -> float:
    """Fraction in [0, 1] of the pixels of ``image`` (shape (H, W, 3), uint8) that are tissue."""
    mask = tissue_mask(image, min_saturation, min_value)
    return float(mask.mean()) if mask.size else 0.0


