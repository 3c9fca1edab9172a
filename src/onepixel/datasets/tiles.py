"""Cut large images and whole-slide files into fixed-size tissue patches.

Inputs are PNG, JPEG, BMP and TIFF images and whole-slide TIFF files such as Aperio ``.svs``
(read with ``tifffile``; JPEG-compressed tiles need ``imagecodecs``). For slides the base
(full-resolution) level is used.

Tissue test
-----------
A pixel is *tissue* when its HSV saturation ``(max(R,G,B) - min(R,G,B)) / max(R,G,B)`` is at
least ``min_saturation`` (default 0.1) and its HSV value ``max(R,G,B)`` is at least ``min_value``
(default 30 of 255). Glass background is near-white and grey (saturation about 0), so it fails
the first test; black (empty slide areas, scanner fill) fails the second. A tile is kept when
the fraction of its pixels that are tissue is at least ``tissue_threshold`` (default 0.5);
``tissue_threshold=0`` keeps every tile. Coloured pen marks pass the test (they are saturated):
the test is for background, not for artefacts.

Grid and names
--------------
Tiles are ``size`` x ``size`` windows whose top-left corners are at rows ``0, stride, 2*stride,
...`` and columns likewise, for every window that lies entirely inside the image (a strip narrower
than ``size`` at the bottom/right edge is dropped, never padded). The order is row-major (top row
first, left to right). A tile is written as ``<stem>_r<row>_c<col>.png`` with the pixel
coordinates of its top-left corner, zero-padded to the digits of the image's larger side so that
sorting the names sorts the positions.

Streaming
---------
Tiled or striped TIFF files (all whole-slide formats tifffile reads, SVS included) are read one
band of TIFF tiles at a time: only the TIFF tile rows that the current row of patches touches are
decoded and kept, so memory is ``O(TIFF tile height * slide width)``, not the whole slide. Other
files (PNG, JPEG, TIFF with separate colour planes) are loaded whole.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.datasets.images import IMAGE_SUFFIXES, expand_image_paths, load_image
from onepixel.errors import ImageError, OnepixelError
from onepixel.fileio import atomic_output_dir

log = logging.getLogger(__name__)

#: File suffixes read with tifffile (whole-slide and plain TIFF).
TIFF_SUFFIXES = frozenset({".svs", ".tif", ".tiff"})
#: Every suffix ``onepixel tiles`` accepts.
TILE_SUFFIXES = IMAGE_SUFFIXES | TIFF_SUFFIXES

DEFAULT_SIZE = 64
DEFAULT_TISSUE_THRESHOLD = 0.5
DEFAULT_MIN_SATURATION = 0.1
DEFAULT_MIN_VALUE = 30
#: ``read_slide`` refuses base levels larger than this (pixels) unless told otherwise.
DEFAULT_MAX_PIXELS = 1_000_000_000
MANIFEST = "tiles.csv"

_INSTALL_HINT = "install them with: pip install 'tifffile>=2024.7.2' 'imagecodecs>=2024.6.1'"


# --------------------------------------------------------------------------------------------
# tissue test


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


def _check_grid(size: int, stride: int, tissue_threshold: float, min_saturation: float,
                min_value: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise OnepixelError(f"tile size must be a positive integer (pixels), got {size!r}")
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise OnepixelError(f"tile stride must be a positive integer (pixels), got {stride!r}")
    if not 0.0 <= float(tissue_threshold) <= 1.0:
        raise OnepixelError(f"tissue threshold is a fraction of the tile's pixels in [0, 1], got "
                            f"{tissue_threshold!r} (0 keeps every tile)")
    if not 0.0 <= float(min_saturation) <= 1.0:
        raise OnepixelError(f"minimum saturation is in [0, 1], got {min_saturation!r}")
    if not 0 <= int(min_value) <= 255:
        raise OnepixelError(f"minimum value is in [0, 255], got {min_value!r}")


def iter_tiles(
    image: np.ndarray,
    size: int = DEFAULT_SIZE,
    stride: int | None = None,
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD,
    *,
    min_saturation: float = DEFAULT_MIN_SATURATION,
    min_value: int = DEFAULT_MIN_VALUE,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield the tissue tiles of an in-memory image in row-major order.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    size : int
        Tile side in pixels.
    stride : int, optional
        Step between tile corners; defaults to ``size`` (no overlap).
    tissue_threshold : float
        Smallest fraction of tissue pixels for a tile to be yielded; 0 yields every tile.
    min_saturation, min_value
        The per-pixel tissue test (:func:`tissue_mask`).

    Yields
    ------
    row, col : int
        Pixel coordinates of the tile's top-left corner.
    tile : ndarray, shape (size, size, 3), uint8
        A view into ``image``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"iter_tiles needs a uint8 RGB image (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    stride = size if stride is None else stride
    _check_grid(size, stride, tissue_threshold, min_saturation, min_value)
    # validated now, iterated lazily
    return ((row, col, tile) for row, col, tile, _ in _grid_tiles(
        _ArrayBands(image), size, stride, tissue_threshold, min_saturation, min_value))


def _grid_tiles(bands: _Bands, size: int, stride: int, tissue_threshold: float,
                min_saturation: float, min_value: int,
                ) -> Iterator[tuple[int, int, np.ndarray, float]]:
    """Row-major tiles of a band source with their tissue fraction (kept tiles only)."""
    height, width = bands.shape
    cols = range(0, width - size + 1, stride)
    for row in range(0, height - size + 1, stride):
        band = bands.rows(row, row + size)
        mask = tissue_mask(band, min_saturation, min_value)
        for col in cols:
            frac = float(mask[:, col:col + size].mean())
            if frac >= tissue_threshold:
                yield row, col, band[:, col:col + size], frac


def grid_positions(height: int, width: int, size: int, stride: int) -> int:
    """Number of full ``size`` x ``size`` windows at ``stride`` in an image of (height, width)."""
    if height < size or width < size:
        return 0
    return ((height - size) // stride + 1) * ((width - size) // stride + 1)


# --------------------------------------------------------------------------------------------
# reading images and slides


def _tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


class _Bands:
    """A source of full-width row bands of an RGB image."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ArrayBands(_Bands):
    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class _TiffBands(_Bands):
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


def _open_bands(path: Path) -> _Bands:
    info = probe_image(path)
    if info.reader == "tifffile":
        tif, page = _open_tiff(path)
        if info.streamed:
            return _TiffBands(path, tif, page)
        try:
            return _ArrayBands(_read_tiff_page(path, page))
        finally:
            tif.close()
    return _ArrayBands(load_image(path))


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


# --------------------------------------------------------------------------------------------
# tiling files into a folder


@dataclass(frozen=True)
class TileConfig:
    """Options of :func:`tile_images` (``onepixel tiles``).

    Attributes
    ----------
    size : int
        Tile side in pixels (default 64, the MAX model's input).
    stride : int or None
        Step between tile corners; None means ``size`` (tiles do not overlap).
    tissue_threshold : float
        Smallest fraction of tissue pixels for a tile to be written (default 0.5); 0 keeps all.
    min_saturation : float
        Per-pixel test: smallest HSV saturation in [0, 1] that counts as tissue (default 0.1).
    min_value : int
        Per-pixel test: smallest ``max(R, G, B)`` that counts as tissue (default 30; darker is
        treated as black background).
    overwrite : bool
        Replace an existing non-empty output folder (only once the new one is complete).
    """

    size: int = DEFAULT_SIZE
    stride: int | None = None
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD
    min_saturation: float = DEFAULT_MIN_SATURATION
    min_value: int = DEFAULT_MIN_VALUE
    overwrite: bool = False

    def __post_init__(self) -> None:
        _check_grid(self.size, self.effective_stride, self.tissue_threshold, self.min_saturation,
                    self.min_value)

    @property
    def effective_stride(self) -> int:
        return self.size if self.stride is None else self.stride


@dataclass(frozen=True)
class SourceTiles:
    """Per-input result: how many grid positions were tested and how many tiles were written."""

    path: Path
    height: int
    width: int
    positions: int
    tiles: int


@dataclass(frozen=True)
class TilingResult:
    """What :func:`tile_images` wrote.

    Attributes
    ----------
    out : Path
        The output folder: the tiles and ``tiles.csv`` (columns tile, source, row, col,
        tissue_fraction).
    sources : tuple of SourceTiles
        One entry per input file, in input order.
    """

    out: Path
    sources: tuple[SourceTiles, ...]

    @property
    def n_tiles(self) -> int:
        return sum(s.tiles for s in self.sources)


def tile_name(stem: str, row: int, col: int, height: int, width: int) -> str:
    """``<stem>_r<row>_c<col>.png``, coordinates zero-padded to the digits of max(height, width)."""
    digits = len(str(max(height, width)))
    return f"{stem}_r{row:0{digits}d}_c{col:0{digits}d}.png"


def iter_slide_tiles(
    path: str | Path,
    size: int = DEFAULT_SIZE,
    stride: int | None = None,
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD,
    *,
    min_saturation: float = DEFAULT_MIN_SATURATION,
    min_value: int = DEFAULT_MIN_VALUE,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Like :func:`iter_tiles` on ``read_slide(path)``, but streaming tiled/striped TIFF slides.

    Yields the same ``(row, col, tile)`` triples in the same order as
    ``iter_tiles(read_slide(path), ...)``; each ``tile`` is a (size, size, 3) uint8 array (a view
    into a decoded band). The options are checked and the file is probed when this is called;
    the file is opened when iteration starts and closed when it ends.

    Raises
    ------
    ImageError
        Unreadable or unsupported file (the message names it).
    OnepixelError
        Bad size, stride or thresholds.
    """
    stride = size if stride is None else stride
    _check_grid(size, stride, tissue_threshold, min_saturation, min_value)
    path = Path(path)
    probe_image(path)

    def generate() -> Iterator[tuple[int, int, np.ndarray]]:
        bands = _open_bands(path)
        try:
            for row, col, tile, _ in _grid_tiles(bands, size, stride, tissue_threshold,
                                                  min_saturation, min_value):
                yield row, col, tile
        finally:
            bands.close()

    return generate()


def check_output_outside(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output folder that is, or contains, one of the inputs (--overwrite would delete it).

    Raises
    ------
    OnepixelError
    """
    out_abs = Path(os.path.abspath(out))
    for raw in inputs:
        path = Path(os.path.abspath(raw))
        if path == out_abs or out_abs in path.parents:
            raise OnepixelError(f"the output folder {out} holds the input {raw}; choose an --out "
                                f"outside the inputs")


def _no_tissue_message(info: ImageInfo, config: TileConfig, best: float) -> str:
    n = grid_positions(info.height, info.width, config.size, config.effective_stride)
    return (
        f"no tissue found in {info.path}: all {n} tiles of {config.size}x{config.size} are "
        f"background (the most tissue in any tile is {best:.0%}, the threshold is "
        f"{config.tissue_threshold:.0%} of pixels with HSV saturation >= {config.min_saturation:g} "
        f"and max(R,G,B) >= {config.min_value}). If the image does hold tissue, lower "
        f"--tissue-threshold (0 keeps every tile) or --min-saturation; otherwise remove it from "
        f"the inputs")


def tile_images(
    paths: Sequence[str | Path],
    out: str | Path,
    config: TileConfig | None = None,
    *,
    progress: bool = False,
) -> TilingResult:
    """Cut images and slides into tissue tiles written as PNG files in ``out``.

    Every input is checked (readable image, distinct file stems) before anything is written;
    tiles go to a temporary folder beside ``out`` that is renamed to ``out`` at the end, so an
    error leaves nothing behind. ``out`` also gets ``tiles.csv`` (tile, source, row, col,
    tissue_fraction), in the order the tiles were cut.

    Parameters
    ----------
    paths : sequence of path
        Image/slide files, or folders searched recursively for them.
    out : path
        Output folder (must not exist, be empty, or ``config.overwrite``).
    config : TileConfig, optional
    progress : bool
        Show a progress bar over tile rows.

    Returns
    -------
    TilingResult

    Raises
    ------
    ImageError
        A non-image or unreadable input, two inputs with the same file stem, or an input in
        which no tile passes the tissue test (the message suggests the threshold options).
    OnepixelError
        Bad options or output folder.
    """
    config = config or TileConfig()
    if isinstance(paths, str | Path):
        paths = [paths]
    files = expand_image_paths(paths, TILE_SUFFIXES)
    if not files:
        raise ImageError("no images given")
    check_output_outside(out, files)
    infos = [probe_image(p) for p in files]
    stems: dict[str, Path] = {}
    for info in infos:
        other = stems.setdefault(info.path.stem, info.path)
        if other != info.path:
            raise ImageError(f"{other} and {info.path} have the same name stem {info.path.stem!r}, "
                             f"so their tiles would collide; rename one or tile them separately")
    size, stride = config.size, config.effective_stride
    for info in infos:
        if info.height < size or info.width < size:
            raise ImageError(f"{info.path} is {info.width}x{info.height}, smaller than one "
                             f"{size}x{size} tile; lower --size or remove it from the inputs")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum((i.height - size) // stride + 1 for i in infos)
        bar = tqdm(total=total, unit="row", desc="tiles", leave=False)
    results: list[SourceTiles] = []
    try:
        with atomic_output_dir(out, config.overwrite) as tmp:
            manifest: list[tuple[str, str, int, int, str]] = []
            for info in infos:
                results.append(_tile_one(info, config, tmp, manifest, bar))
            with open(tmp / MANIFEST, "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(("tile", "source", "row", "col", "tissue_fraction"))
                writer.writerows(manifest)
    finally:
        if bar is not None:
            bar.close()
    result = TilingResult(Path(out), tuple(results))
    log.info("wrote %d tiles from %d image(s) to %s", result.n_tiles, len(results), out)
    return result


def _tile_one(info: ImageInfo, config: TileConfig, dest: Path, manifest: list, bar) -> SourceTiles:
    size, stride = config.size, config.effective_stride
    bands = _open_bands(info.path)
    if bands.shape != (info.height, info.width):  # pragma: no cover - defensive
        bands.close()
        raise ImageError(f"{info.path}: size changed while reading")
    positions = grid_positions(info.height, info.width, size, stride)
    written = 0
    best = 0.0
    last_row = 0
    try:
        # threshold -1 sees every tile's fraction (for the no-tissue message) in one pass
        for row, col, tile, frac in _grid_tiles(bands, size, stride, -1.0, config.min_saturation,
                                                config.min_value):
            if bar is not None and row != last_row:
                bar.update(1)  # a row of tiles is done
                last_row = row
            best = max(best, frac)
            if frac < config.tissue_threshold:
                continue
            name = tile_name(info.path.stem, row, col, info.height, info.width)
            Image.fromarray(np.ascontiguousarray(tile)).save(dest / name)
            manifest.append((name, str(info.path), row, col, f"{frac:.4f}"))
            written += 1
        if bar is not None:
            bar.update(1)
    finally:
        bands.close()
    if written == 0:
        raise ImageError(_no_tissue_message(info, config, best))
    log.info("%s: %d of %d tiles kept (%dx%d, %s%s)", info.path, written, positions, info.width,
             info.height, info.reader, ", streamed" if info.streamed else "")
    return SourceTiles(info.path, info.height, info.width, positions, written)
