"""Cut large images and whole-slide files into fixed-size tissue patches.

Inputs are PNG, JPEG, BMP and TIFF images and whole-slide TIFF files such as Aperio ``.svs``
(read with ``tifffile``; JPEG-compressed tiles need ``imagecodecs``). For slides the base
(full-resolution) level is used.

Grid and names
--------------
Tiles are ``size`` x ``size`` windows whose top-left corners are at rows ``0, stride, 2*stride,
...`` and columns likewise, for every window that lies entirely inside the image (a strip narrower
than ``size`` at the bottom/right edge is dropped, never padded). The order is row-major (top row
first, left to right). A tile is written as ``<stem>_r<row>_c<col>.png`` with the pixel
coordinates of its top-left corner, zero-padded to the digits of the image's larger side so that
sorting the names sorts the positions.

The tissue test is :mod:`onepixel.datasets.tissue`; reading slides, :mod:`onepixel.datasets.slides`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from onepixel.datasets.images import expand_image_paths
from onepixel.datasets.slides import (
    TILE_SUFFIXES,
    ArrayBands,
    Bands,
    ImageInfo,
    open_bands,
    probe_image,
)
from onepixel.datasets.tissue import (
    DEFAULT_MIN_SATURATION,
    DEFAULT_MIN_VALUE,
    tissue_mask,
)
from onepixel.errors import ConfigError, ImageError, is_integer, is_real
from onepixel.fileio import atomic_output_dir

log = logging.getLogger(__name__)


DEFAULT_SIZE = 64
DEFAULT_TISSUE_THRESHOLD = 0.5
MANIFEST = "tiles.csv"



def _check_grid(size: int, stride: int, tissue_threshold: float, min_saturation: float,
                min_value: int) -> None:
    # The fields of TileConfig, which every tiling function shares.
    if not is_integer(size) or size < 1:
        raise ConfigError(f"TileConfig.size must be a positive integer (pixels), got {size!r}",
                          field="TileConfig.size")
    if not is_integer(stride) or stride < 1:
        raise ConfigError(f"TileConfig.stride must be a positive integer (pixels), got {stride!r}",
                          field="TileConfig.stride")
    if not is_real(tissue_threshold) or not 0.0 <= float(tissue_threshold) <= 1.0:
        raise ConfigError(f"TileConfig.tissue_threshold is a fraction of the tile's pixels in [0, 1], "
                          f"got {tissue_threshold!r} (0 keeps every tile)",
                          field="TileConfig.tissue_threshold")
    if not is_real(min_saturation) or not 0.0 <= float(min_saturation) <= 1.0:
        raise ConfigError(f"TileConfig.min_saturation is in [0, 1], got {min_saturation!r}",
                          field="TileConfig.min_saturation")
    if not is_integer(min_value) or not 0 <= int(min_value) <= 255:
        raise ConfigError(f"TileConfig.min_value is an integer in [0, 255], got {min_value!r}",
                          field="TileConfig.min_value")


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
        ArrayBands(image), size, stride, tissue_threshold, min_saturation, min_value))


def _grid_tiles(bands: Bands, size: int, stride: int, tissue_threshold: float,
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
        bands = open_bands(path)
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
            raise ConfigError(f"the output folder {out} holds the input {raw}; choose an output "
                              f"folder outside the inputs", field="tile_images(out)")


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
                             f"{size}x{size} tile; lower TileConfig.size or remove it from the inputs")

    bar = None
    if progress:
        from onepixel.progress import progress_bar

        total = sum((i.height - size) // stride + 1 for i in infos)
        bar = progress_bar(total=total, unit="row", desc="tiles", leave=False)
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
    bands = open_bands(info.path)
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
