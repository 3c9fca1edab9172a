"""Reading large images and whole-slide files (SVS/TIFF via tifffile, others via Pillow) as RGB.

Streaming
---------
Tiled or striped TIFF files (all whole-slide formats tifffile reads, SVS included) are read one
band of TIFF tiles at a time: only the TIFF tile rows that the current row of patches touches are
decoded and kept, so memory is ``O(TIFF tile height * slide width)``, not the whole slide. Other
files (PNG, JPEG, TIFF with separate colour planes) are loaded whole.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.datasets.images import IMAGE_SUFFIXES, load_image
from onepixel.errors import ImageError

log = logging.getLogger(__name__)

#: File suffixes read with tifffile (whole-slide and plain TIFF).
TIFF_SUFFIXES = frozenset({".svs", ".tif", ".tiff"})
#: ``read_slide`` refuses base levels larger than this (pixels) unless told otherwise.
DEFAULT_MAX_PIXELS = 1_000_000_000
#: Every suffix ``onepixel tiles`` accepts.
TILE_SUFFIXES = IMAGE_SUFFIXES | TIFF_SUFFIXES

_INSTALL_HINT = "install them with: pip install 'tifffile>=2024.7.2' 'imagecodecs>=2024.6.1'"


def _tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


class Bands:
    """A source of full-width row bands of an RGB image."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArrayBands(Bands):
    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class TiffBands(Bands):
    """Rows of a TIFF page's base level, decoding only the TIFF tiles/strips they touch.

    Decoded chunk rows (one row of TIFF tiles, or one strip, across the full width) are kept in
    a small LRU cache, so with patch rows read top to bottom every chunk is decoded once (twice
    at most when patches overlap a chunk boundary and the cache is full).
    """

    def __init__(self, path: Path, tif, page):
        self.path = path
        self.tif = tif
        self.page = page
        self.shape = (int(page.imagelength), int(page.imagewidth))
        if page.is_tiled:
            self.chunk_h, self.chunk_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.chunk_h = min(int(page.rowsperstrip or self.shape[0]), self.shape[0])
            self.chunk_w = self.shape[1]
        self.n_cols = math.ceil(self.shape[1] / self.chunk_w)
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_size = 2

    def rows(self, start: int, stop: int) -> np.ndarray:
        first, last = start // self.chunk_h, (stop - 1) // self.chunk_h
        self.cache_size = max(self.cache_size, last - first + 2)
        parts = [self._chunk_row(i) for i in range(first, last + 1)]
        band = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        offset = first * self.chunk_h
        return band[start - offset:stop - offset]

    def _chunk_row(self, index: int) -> np.ndarray:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        page = self.page
        top = index * self.chunk_h
        height = min(self.chunk_h, self.shape[0] - top)
        samples = int(page.samplesperpixel)
        out = np.zeros((height, self.shape[1], samples), dtype=page.dtype)
        fh = self.tif.filehandle
        decode = page.decode
        for col in range(self.n_cols):
            seg_index = index * self.n_cols + col
            offset, count = page.dataoffsets[seg_index], page.databytecounts[seg_index]
            if count:
                fh.seek(offset)
                data = fh.read(count)
            else:
                data = None  # a sparse (missing) tile: tifffile fills it
            try:
                segment, indices, _ = decode(data, seg_index, jpegtables=page.jpegtables)
            except Exception as exc:
                raise _decode_error(self.path, exc) from exc
            if segment is None:
                continue
            x = int(indices[3])
            seg = np.asarray(segment)[0]
            seg = seg.reshape(seg.shape[0], seg.shape[1], -1)
            h = min(seg.shape[0], height)
            w = min(seg.shape[1], self.shape[1] - x)
            out[:h, x:x + w] = seg[:h, :w]
        rgb = _tiff_to_rgb(out, page, self.path)
        self.cache[index] = rgb
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return rgb

    def close(self) -> None:
        self.tif.close()


def _decode_error(path: Path, exc: BaseException) -> ImageError:
    text = str(exc)
    if "imagecodecs" in text or isinstance(exc, ImportError):
        return ImageError(f"cannot decode {path}: {text}. Its tiles are compressed with a codec "
                          f"that needs the imagecodecs package; {_INSTALL_HINT}")
    return ImageError(f"cannot decode {path}: {type(exc).__name__}: {text} (is the file complete?)")


def _tiff_to_rgb(array: np.ndarray, page, path: Path) -> np.ndarray:
    """Convert decoded TIFF samples (H, W, S) to uint8 RGB (H, W, 3)."""
    photometric = int(page.photometric)
    if array.ndim == 2:
        array = array[:, :, None]
    if photometric == 3:  # palette
        cmap = np.asarray(page.colormap)  # (3, 2**bits), uint16
        lut = np.clip(np.round(cmap.T / 257.0), 0, 255).astype(np.uint8)
        return lut[array[:, :, 0]]
    if array.dtype == np.uint16:
        array = np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise ImageError(f"{path}: {array.dtype} TIFF samples are not supported; convert the "
                         f"image to 8-bit RGB first")
    samples = array.shape[2]
    if photometric in (0, 1):  # min-is-white / min-is-black greyscale (+ optional alpha)
        grey = array[:, :, 0]
        if photometric == 0:
            grey = 255 - grey
        return np.repeat(grey[:, :, None], 3, axis=2)
    if samples >= 3:
        if samples > 3:
            log.debug("%s: dropping %d extra sample(s) (alpha)", path, samples - 3)
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageError(f"{path}: cannot convert a TIFF with photometric {photometric} and "
                     f"{samples} sample(s) to RGB; convert it to an RGB TIFF or PNG first")


_SUPPORTED_PHOTOMETRIC = {0, 1, 2, 3, 6}


def _open_tiff(path: Path):
    """Open a TIFF and return (TiffFile, base-level page); ImageError naming the file if not."""
    tifffile = _tifffile()
    if tifffile is None:
        raise ImageError(f"reading {path} needs the tifffile package; {_INSTALL_HINT}")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise ImageError(f"cannot read {path} as a TIFF/SVS file: {exc}. Check that it is an "
                         f"image and complete, or convert it to PNG") from exc
    try:
        if not tif.series:
            raise ImageError(f"{path}: the TIFF file holds no image")
        level = tif.series[0].levels[0]
        page = level.keyframe
        if len(level.pages) > 1:
            log.warning("%s: the first image series has %d planes; using the first", path,
                        len(level.pages))
        photometric = int(page.photometric)
        if photometric not in _SUPPORTED_PHOTOMETRIC:
            raise ImageError(f"{path}: TIFF photometric {photometric} ({page.photometric.name}) "
                             f"is not supported; convert the image to RGB first")
        if photometric == 6 and int(page.compression) not in (6, 7):
            raise ImageError(f"{path}: uncompressed YCbCr TIFF is not supported; convert the image "
                             f"to RGB first")
        if page.imagedepth != 1:
            raise ImageError(f"{path}: volumetric TIFF (depth {page.imagedepth}) is not supported")
    except ImageError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise ImageError(f"cannot read {path} as a TIFF/SVS file: {exc}") from exc
    return tif, page


@dataclass(frozen=True)
class ImageInfo:
    """What a cheap look at an input file found.

    Attributes
    ----------
    path : Path
    height, width : int
        Base-level size in pixels.
    reader : str
        ``"tifffile"`` or ``"pillow"``.
    streamed : bool
        Whether :func:`iter_slide_tiles` reads it band by band (tiled/striped TIFF).
    """

    path: Path
    height: int
    width: int
    reader: str
    streamed: bool


def probe_image(path: str | Path) -> ImageInfo:
    """Check that ``path`` is a readable image or slide and return its size, without decoding it.

    Raises
    ------
    ImageError
        Missing file, a folder, an unsupported suffix, or a file that is not an image; the
        message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file but {path} is a folder")
    suffix = path.suffix.lower()
    if suffix not in TILE_SUFFIXES:
        known = ", ".join(sorted(TILE_SUFFIXES))
        raise ImageError(f"{path} is not an image this command reads (suffix {suffix or 'none'!r}); "
                         f"give files ending in {known}, or remove it from the inputs")
    if suffix in TIFF_SUFFIXES and (_tifffile() is not None or suffix == ".svs"):
        tif, page = _open_tiff(path)
        try:
            streamed = int(page.planarconfig) == 1 and len(page.dataoffsets) > 0
            return ImageInfo(path, int(page.imagelength), int(page.imagewidth), "tifffile", streamed)
        finally:
            tif.close()
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}. Check that it is an image and "
                         f"complete, or remove it from the inputs") from exc
    return ImageInfo(path, int(height), int(width), "pillow", False)


def open_bands(path: Path) -> Bands:
    info = probe_image(path)
    if info.reader == "tifffile":
        tif, page = _open_tiff(path)
        if info.streamed:
            return TiffBands(path, tif, page)
        try:
            return ArrayBands(_read_tiff_page(path, page))
        finally:
            tif.close()
    return ArrayBands(load_image(path))


def _read_tiff_page(path: Path, page) -> np.ndarray:
    try:
        array = page.asarray()
    except Exception as exc:
        raise _decode_error(path, exc) from exc
    array = np.asarray(array)
    if int(page.planarconfig) == 2 and array.ndim == 3:  # (S, H, W) -> (H, W, S)
        array = np.moveaxis(array, 0, -1)
    return _tiff_to_rgb(array, page, path)


def read_slide(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read the base (full-resolution) level of an image or whole-slide file as uint8 RGB.

    SVS and TIFF files are read with tifffile (JPEG-compressed tiles need imagecodecs); PNG,
    JPEG and BMP with Pillow (via :func:`onepixel.datasets.images.load_image`). Alpha is dropped, greyscale
    repeated to 3 channels, 16-bit samples scaled to 8 bits.

    Parameters
    ----------
    path : path
    max_pixels : int or None
        Refuse base levels with more pixels than this (the whole level is held in memory, 3 bytes
        a pixel); use :func:`iter_slide_tiles` or ``onepixel tiles`` for bigger slides. None
        disables the check.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8

    Raises
    ------
    ImageError
        Unreadable or unsupported file, or a level larger than ``max_pixels``; the message names
        the file.
    """
    path = Path(path)
    info = probe_image(path)
    if max_pixels is not None and info.height * info.width > max_pixels:
        raise ImageError(
            f"{path}: the base level is {info.width}x{info.height} pixels, more than max_pixels="
            f"{max_pixels} ({info.height * info.width * 3 / 2**30:.1f} GiB as RGB); stream it with "
            f"iter_slide_tiles() / `onepixel tiles` instead, or raise max_pixels")
    if info.reader == "pillow":
        return load_image(path)
    tif, page = _open_tiff(path)
    try:
        return _read_tiff_page(path, page)
    finally:
        tif.close()


