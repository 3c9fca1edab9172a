"""The defences as pure functions on uint8 image batches, and the 8-neighbour statistics they share.

Every function takes and returns uint8 images of shape (N, H, W, C) (C = 3 or 1) and keeps the
shape. Borders are mirrored without repeating the edge (numpy's ``reflect``), so a pixel is
never its own neighbour. Large batches are processed in chunks to bound memory.
"""

from __future__ import annotations

import io

import numpy as np

from onepixel.defences.ranks import select
from onepixel.errors import ConfigError

#: Images processed at once by the neighbour statistics (8 shifted copies live at a time).
CHUNK = 256

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(f"defences take uint8 images of shape (N, H, W, C), got {images.dtype} "
                          f"{images.shape}")
    return images


def _neighbours(images: np.ndarray) -> np.ndarray:
    """(8, N, H, W, C) uint8: each pixel's 8 neighbours (mirrored borders)."""
    _, h, w, _ = images.shape
    p = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    return np.stack([p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _OFFSETS])


def _chunked(fn, images: np.ndarray, dtype) -> np.ndarray:
    out = np.empty(images.shape[:4] if dtype == np.uint8 else images.shape[:3], dtype=dtype)
    for i in range(0, len(images), CHUNK):
        out[i:i + CHUNK] = fn(images[i:i + CHUNK])
    return out


def neighbour_median(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8: per channel, the median of each pixel's 8 neighbours (the mean of the
    4th and 5th values, rounded half up)."""
    images = _check(images)

    def one(chunk: np.ndarray) -> np.ndarray:
        lo, hi = select(list(_neighbours(chunk)), (3, 4))
        return ((lo.astype(np.uint16) + hi + 1) // 2).astype(np.uint8)

    return _chunked(one, images, np.uint8)


def h_map(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64: the chromatic paper's h of every pixel.

    h is the RMSE, on the [0, 1] scale, between a pixel's colour and the mean colour of its 8
    neighbours: ``sqrt(mean_c ((x_c - m_c) / 255) ** 2)``; 0 for a pixel equal to its
    surroundings, 1 for white among black.
    """
    images = _check(images)

    def one(chunk: np.ndarray) -> np.ndarray:
        mean = _neighbours(chunk).astype(np.float64).mean(axis=0)
        d = (chunk.astype(np.float64) - mean) / 255.0
        return np.sqrt((d * d).mean(axis=-1))

    return _chunked(one, images, np.float64)


def residual_map(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64: the largest channel difference, on [0, 1], between each pixel and the
    median of its 8 neighbours."""
    images = _check(images)
    med = neighbour_median(images).astype(np.int16)
    return np.abs(images.astype(np.int16) - med).max(axis=-1) / 255.0


def median(images: np.ndarray, size: int) -> np.ndarray:
    """``median3`` / ``median5``: a ``size`` x ``size`` median filter on each channel."""
    images = _check(images)
    r = size // 2
    _, h, w, _ = images.shape
    p = np.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    return select([p[:, dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size)],
                  (size * size // 2,))[0]


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """``blur:SIGMA``: a Gaussian blur of ``sigma`` pixels on each channel, rounded to uint8."""
    from scipy.ndimage import gaussian_filter

    images = _check(images)
    out = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="mirror")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def repair(images: np.ndarray, h: float) -> np.ndarray:
    """``repair:H``: every pixel whose :func:`h_map` exceeds ``h`` takes the per-channel median of
    its 8 neighbours; other pixels are kept as they are (a smooth image is unchanged)."""
    images = _check(images)
    bad = h_map(images) > h
    if not bad.any():
        return images.copy()
    out = images.copy()
    idx = np.nonzero(bad.any(axis=(1, 2)))[0]
    med = neighbour_median(images[idx])
    sub = out[idx]
    sub[bad[idx]] = med[bad[idx]]
    out[idx] = sub
    return out


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """``jpeg:Q``: each image encoded as JPEG at ``quality`` (Pillow's defaults otherwise: 4:2:0
    chroma subsampling) and decoded."""
    from PIL import Image

    images = _check(images)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if img.shape[-1] == 1 else "RGB"))
        out[i] = dec.reshape(img.shape)
    return out


def bits(images: np.ndarray, n: int) -> np.ndarray:
    """``bits:N``: each channel quantised to ``2**n`` evenly spaced levels of 0..255 (feature
    squeezing), ``round(round(x / 255 * L) / L * 255)`` with ``L = 2**n - 1``."""
    images = _check(images)
    levels = 2 ** int(n) - 1
    lut = np.rint(np.rint(np.arange(256) / 255.0 * levels) / levels * 255.0).astype(np.uint8)
    return lut[images]
