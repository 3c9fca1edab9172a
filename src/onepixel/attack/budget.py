"""The colour budget (``--max-colour-diff H``): keep every attack pixel's visibility h <= H.

h is the chromatic paper's visibility of an attack pixel: the RMSE, on the [0, 1] scale, between
its colour ``x`` and the mean colour ``m`` of its neighbours in the ORIGINAL image,
``h = sqrt(mean_c ((x_c - m_c) / 255) ** 2)`` (C = 3 channels, or 1 for greyscale). Inside the
image ``m`` is the mean of the 8 neighbours; at an edge only the neighbours that exist count (5),
in a corner 3, and the pixel itself never does (:func:`onepixel.analysis.chromatic.neighbour_mean`
uses the same rule).

DE keeps its genome ``(x, y, r, g, b)``; each candidate is *repaired* before it is scored: a
colour with ``h > H`` is moved along the line towards ``m`` until ``h = H'``, then each channel is
rounded to whichever of its two neighbouring integers is nearer ``m``. A channel's rounding adds at
most 0.5 to its distance from ``m`` only when ``m`` lies between those integers, so aiming at
``H' = sqrt(H² - (0.5/255)²)`` (a hair below H) keeps the rounded colour within H; this is also
why the smallest budget is :data:`MIN_BUDGET` (below it, a pixel whose neighbour mean is a
half-integer has no integer colour within budget). A feasible colour is left as it is. The
repaired pixel is what the model scores and what the attack reports.
"""

from __future__ import annotations

import numpy as np
import torch

from onepixel.attack.config import MIN_BUDGET
from onepixel.errors import OnepixelError

__all__ = ["MIN_BUDGET", "budget_h", "neighbour_means", "repair_candidates"]


#: The scaled step stops this fraction short of the budget, so float rounding in the scale or in
#: a later recomputation of h can never land just above H.
_MARGIN = 1e-9


def neighbour_means(images: np.ndarray) -> np.ndarray:
    """Mean colour of every pixel's existing neighbours (8 inside, 5 at an edge, 3 in a corner).

    Parameters
    ----------
    images : ndarray, (N, H, W, C) uint8
        Original images.

    Returns
    -------
    ndarray, (N, H, W, C) float64 on the 0..255 scale (the pixel itself excluded).

    Raises
    ------
    OnepixelError
        Not an (N, H, W, C) batch, or a 1x1 image (a pixel without neighbours).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise OnepixelError(f"neighbour_means takes images of shape (N, H, W, C), got {images.shape}")
    _, h, w, _ = images.shape
    if h * w < 2:
        raise OnepixelError(f"a colour budget needs images with more than one pixel, got {h}x{w}")
    # Window sums over the 3x3 box from a zero-padded cumulative sum, minus the pixel itself.
    p = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    s = np.zeros((p.shape[0], h + 3, w + 3, p.shape[3]))
    s[:, 1:, 1:] = p.cumsum(axis=1).cumsum(axis=2)
    box = s[:, 3:, 3:] - s[:, :h, 3:] - s[:, 3:, :w] + s[:, :h, :w]
    ones = np.pad(np.ones((h, w)), 1)
    rows = ones[:-2] + ones[1:-1] + ones[2:]
    counts = (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) - 1.0  # (H, W) neighbours that exist
    return (box - images) / counts[None, :, :, None]


def budget_h(colours: np.ndarray, means: np.ndarray) -> np.ndarray:
    """h of colours against neighbour means, both (..., C) on the 0..255 scale -> (...) in [0, 1]."""
    d = (np.asarray(colours, dtype=np.float64) - np.asarray(means, dtype=np.float64)) / 255.0
    return np.sqrt((d * d).mean(axis=-1))


def repair_candidates(rows, candidates, means, max_diff: float):
    """The feasible candidates: every pixel's colour moved inside the budget (see the module).

    Parameters
    ----------
    rows : ndarray or Tensor, (R,) int
        Which image of ``means`` each row of candidates is on.
    candidates : ndarray or Tensor, (R, P, D) integer-valued
        ``k`` groups of ``(x, y, c_1..c_C)``, ``D = k * (2 + C)``.
    means : ndarray or Tensor, (N, H, W, C) float64
        :func:`neighbour_means` of the original images (a tensor for tensor candidates).
    max_diff : float
        The budget H in [0, 1].

    Returns
    -------
    Same type as ``candidates``, (R, P, D) int64: positions unchanged, each pixel's colour with
    ``h <= max_diff``. Each pixel of a k-pixel candidate is repaired on its own, against its
    neighbours in the original image.
    """
    is_torch = isinstance(candidates, torch.Tensor)
    xp = torch if is_torch else np
    channels = means.shape[-1]
    width = 2 + channels
    r, p, d = candidates.shape
    if d % width:
        raise OnepixelError(f"candidates of {d} values are not groups of (x, y, {channels} colours)")
    pix = candidates.reshape(r, p, d // width, width)
    pix = pix.to(torch.int64) if is_torch else pix.astype(np.int64)
    x, y = pix[..., 0], pix[..., 1]
    idx = rows[:, None, None]
    m = means[idx, y, x]  # (R, P, k, C)
    colour = pix[..., 2:].to(m.dtype) if is_torch else pix[..., 2:].astype(np.float64)
    diff = colour - m
    h = xp.sqrt((diff * diff).mean(-1)) / 255.0  # (R, P, k)
    over = h > max_diff
    if not MIN_BUDGET <= max_diff <= 1.0:
        raise OnepixelError(f"the colour budget must be within [{MIN_BUDGET:.6g}, 1], got {max_diff}")
    target = float(np.sqrt(max_diff ** 2 - MIN_BUDGET ** 2)) * (1.0 - _MARGIN)
    scale = target / xp.where(over, h, xp.ones_like(h))
    moved = m + diff * scale[..., None]
    # Of the two integers around each channel, the one nearer the mean (see the module).
    lo, hi = xp.floor(moved), xp.ceil(moved)
    rounded = xp.where(xp.abs(lo - m) <= xp.abs(hi - m), lo, hi)
    new = xp.where(over[..., None], rounded, colour)
    out = pix.clone() if is_torch else pix.copy()
    out[..., 2:] = new.to(torch.int64) if is_torch else new.astype(np.int64)
    return out.reshape(r, p, d)
