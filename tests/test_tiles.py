"""Tiling of large images and whole slides (``onepixel.datasets.tiles``).

The real-image tests use the shared H&E images (two TUPAC16 tiles, a JPEG and an Aperio SVS) in
``$ONEPIXEL_ASSETS/he-images``; they skip with a reason when that variable is unset. The rest use
small synthetic images written into a temporary folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.datasets.slides import probe_image, read_slide
from onepixel.datasets.tiles import (
    TileConfig,
    grid_positions,
    iter_slide_tiles,
    iter_tiles,
    tile_images,
    tile_name,
)
from onepixel.datasets.tissue import tissue_mask
from onepixel.errors import ImageError, OnepixelError

tifffile = pytest.importorskip("tifffile", reason="tiling SVS/TIFF needs tifffile (and imagecodecs)")

SVS = "cmu-small-region.svs"
JPG = "stardist-histo.jpg"
TUPAC = ("tupac-tr-002-tile-r34-c34.png", "tupac-tr-002-tile-r35-c37.png")


@pytest.fixture(scope="module")
def svs_array(he_dir) -> np.ndarray:
    return tifffile.imread(he_dir / SVS)  # the reference: tifffile's own whole-level read


def _pink(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Saturated pink/purple noise: passes the tissue test everywhere."""
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3), dtype=np.uint8)
    img[..., 0] = rng.integers(150, 230, shape)
    img[..., 1] = rng.integers(40, 110, shape)
    img[..., 2] = rng.integers(120, 200, shape)
    return img


def _reference_fractions(image: np.ndarray, size: int, stride: int) -> dict[tuple[int, int], float]:
    """Tissue fraction per grid position, written out independently of the module."""
    hi = image.max(-1).astype(np.float32)
    lo = image.min(-1).astype(np.float32)
    sat = (hi - lo) / np.maximum(hi, 1)
    mask = (sat >= 0.1 - 1e-6) & (hi >= 30)
    # summed-area table: tissue pixels in any window in O(1)
    sat_table = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    out = {}
    for r in range(0, image.shape[0] - size + 1, stride):
        for c in range(0, image.shape[1] - size + 1, stride):
            count = (sat_table[r + size, c + size] - sat_table[r, c + size]
                     - sat_table[r + size, c] + sat_table[r, c])
            out[(r, c)] = count / (size * size)
    return out


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------------------ in-memory grid


def test_iter_tiles_positions_content_and_order():
    img = _pink((200, 300))
    got = list(iter_tiles(img, size=64, stride=64, tissue_threshold=0.0))
    assert [(r, c) for r, c, _ in got] == [(r, c) for r in (0, 64, 128) for c in (0, 64, 128, 192)]
    for r, c, tile in got:
        assert tile.shape == (64, 64, 3)
        np.testing.assert_array_equal(tile, img[r:r + 64, c:c + 64])
    overlapping = list(iter_tiles(img, size=64, stride=32, tissue_threshold=0.0))
    assert len(overlapping) == grid_positions(200, 300, 64, 32) == 5 * 8
    assert overlapping[-1][:2] == (128, 224)  # last full window; the 8-px remainder is dropped


def test_tissue_test_skips_white_and_black_keeps_tissue():
    white = np.full((256, 320, 3), 245, dtype=np.uint8)
    white[..., 2] = 250  # faintly tinted glass: saturation 0.02
    assert list(iter_tiles(white, 64, 64, 0.5)) == []
    black = np.full((128, 128, 3), 8, dtype=np.uint8)
    black[..., 0] = 20  # saturated but too dark
    assert list(iter_tiles(black, 64, 64, 0.5)) == []
    img = white.copy()
    img[64:128, 128:192] = _pink((64, 64))
    img[128:160, 0:64] = _pink((32, 64), 1)  # half a tile of tissue: exactly at a 0.5 threshold
    kept = [(r, c) for r, c, _ in iter_tiles(img, 64, 64, 0.5)]
    assert kept == [(64, 128), (128, 0)]
    assert [(r, c) for r, c, _ in iter_tiles(img, 64, 64, 0.51)] == [(64, 128)]
    assert len(list(iter_tiles(img, 64, 64, 0.0))) == 4 * 5  # 0 keeps every tile


def test_tissue_mask_thresholds():
    px = np.array([[[255, 255, 255], [240, 200, 230], [20, 5, 15], [60, 30, 90], [0, 0, 0]]],
                  dtype=np.uint8)
    # white, pale pink (sat 0.17), near-black, dark purple nucleus, black
    assert tissue_mask(px).tolist() == [[False, True, False, True, False]]
    assert tissue_mask(px, min_saturation=0.5).tolist() == [[False, False, False, True, False]]
    assert tissue_mask(px, min_value=0).tolist() == [[False, True, True, True, False]]


def test_bad_grid_options_are_errors():
    img = _pink((64, 64))
    with pytest.raises(OnepixelError, match="TileConfig.size"):
        iter_tiles(img, size=0)
    with pytest.raises(OnepixelError, match="stride"):
        TileConfig(stride=-1)
    with pytest.raises(OnepixelError, match="TileConfig.tissue_threshold"):
        TileConfig(tissue_threshold=1.5)
    with pytest.raises(ImageError, match="uint8 RGB"):
        iter_tiles(img.astype(np.float32))


# ------------------------------------------------------------------------------ TIFF reading


@pytest.mark.parametrize("kind", ["strips", "tiled-jpeg", "grey-tiled", "planar", "rgba"])
def test_read_slide_and_streaming_agree_on_tiff_variants(tmp_path, kind):
    rgb = _pink((300, 500), seed=3)
    path = tmp_path / f"{kind}.tif"
    if kind == "strips":
        tifffile.imwrite(path, rgb, rowsperstrip=37)
        expected = rgb
    elif kind == "tiled-jpeg":
        tifffile.imwrite(path, rgb, tile=(64, 128), compression="jpeg")
        expected = None  # lossy
    elif kind == "grey-tiled":
        tifffile.imwrite(path, rgb[..., 0], tile=(64, 64))
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "planar":
        tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
        expected = rgb
    else:
        rgba = np.concatenate([rgb, np.full((300, 500, 1), 255, np.uint8)], axis=2)
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(64, 64))
        expected = rgb
    whole = read_slide(path)
    assert whole.shape == (300, 500, 3) and whole.dtype == np.uint8
    if expected is not None:
        np.testing.assert_array_equal(whole, expected)
    streamed = list(iter_slide_tiles(path, size=50, stride=30, tissue_threshold=0.0))
    in_memory = list(iter_tiles(whole, size=50, stride=30, tissue_threshold=0.0))
    assert [(r, c) for r, c, _ in streamed] == [(r, c) for r, c, _ in in_memory]
    for (_, _, a), (_, _, b) in zip(streamed, in_memory, strict=True):
        np.testing.assert_array_equal(a, b)


def test_read_slide_refuses_too_large(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, _pink((100, 100)))
    with pytest.raises(ImageError, match=r"big\.tif.*iter_slide_tiles"):
        read_slide(path, max_pixels=5000)


# ------------------------------------------------------------------------------ real H&E images


@pytest.mark.slow
def test_svs_base_level_and_streaming(he_dir, svs_array):
    info = probe_image(he_dir / SVS)
    assert (info.height, info.width, info.reader, info.streamed) == (2967, 2220, "tifffile", True)
    np.testing.assert_array_equal(read_slide(he_dir / SVS), svs_array)
    # patch rows that straddle the SVS's 240-px JPEG tiles, overlapping windows
    got = list(iter_slide_tiles(he_dir / SVS, size=100, stride=70, tissue_threshold=0.3))
    ref = _reference_fractions(svs_array, 100, 70)
    assert [(r, c) for r, c, _ in got] == [k for k, f in ref.items() if f >= 0.3]
    for r, c, tile in got[::25]:
        np.testing.assert_array_equal(tile, svs_array[r:r + 100, c:c + 100])


@pytest.mark.slow
def test_tile_images_on_he_folder(he_dir, svs_array, tmp_path):
    out = tmp_path / "tiles"
    result = tile_images([he_dir], out)  # a folder: all four images, sorted
    by_name = {s.path.name: s for s in result.sources}
    assert list(by_name) == sorted([SVS, JPG, *TUPAC])
    assert (by_name[JPG].positions, by_name[JPG].tiles) == (7 * 4, 28)  # 500x300, all tissue
    for name in TUPAC:
        assert (by_name[name].positions, by_name[name].tiles) == (9 * 9, 81)  # 600x600
    ref = _reference_fractions(svs_array, 64, 64)
    kept = [k for k, f in ref.items() if f >= 0.5]
    assert by_name[SVS].positions == len(ref) == 46 * 34
    assert by_name[SVS].tiles == len(kept)
    assert 0.2 * len(ref) < len(kept) < 0.6 * len(ref)  # the slide is mostly glass

    with open(out / "tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == result.n_tiles == len(list(out.glob("*.png")))
    svs_rows = [r for r in rows if r["source"].endswith(SVS)]
    assert [(int(r["row"]), int(r["col"])) for r in svs_rows] == kept  # row-major order
    for r in svs_rows:
        assert r["tile"] == f"cmu-small-region_r{int(r['row']):04d}_c{int(r['col']):04d}.png"
    for r in svs_rows[::40]:
        row, col = int(r["row"]), int(r["col"])
        tile = np.asarray(Image.open(out / r["tile"]))
        np.testing.assert_array_equal(tile, svs_array[row:row + 64, col:col + 64])
    jpg = np.asarray(Image.open(he_dir / JPG).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "stardist-histo_r192_c384.png")),
                                  jpg[192:256, 384:448])
    assert (out / "tupac-tr-002-tile-r34-c34_r512_c512.png").is_file()
    assert _leftovers(tmp_path, {"tiles"}) == []


def test_tile_name_padding():
    assert tile_name("s", 64, 1024, 2967, 2220) == "s_r0064_c1024.png"
    assert tile_name("s", 0, 0, 300, 500) == "s_r000_c000.png"


# ------------------------------------------------------------------------------ bad input


def test_non_image_among_inputs_names_it_and_writes_nothing(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_pink((128, 128))).save(good)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(ImageError, match=r"notes\.txt is not an image"):
        tile_images([good, notes], out)
    fake = tmp_path / "fake.png"
    fake.write_text("also not an image")
    with pytest.raises(ImageError, match=r"fake\.png"):
        tile_images([good, fake], out)
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageError, match=r"broken\.svs"):
        tile_images([good, broken], out)
    with pytest.raises(ImageError, match="image not found"):
        tile_images([tmp_path / "missing.png"], out)
    assert _leftovers(tmp_path, {"good.png", "notes.txt", "fake.png", "broken.svs"}) == []


def test_slide_without_tissue_is_a_clear_error(tmp_path):
    good = tmp_path / "a-good.png"
    Image.fromarray(_pink((128, 128))).save(good)
    blank = tmp_path / "blank.svs"
    glass = np.full((512, 480, 3), 242, dtype=np.uint8)
    tifffile.imwrite(blank, glass, tile=(240, 240), compression="jpeg", photometric="rgb")
    out = tmp_path / "out"
    # the good image's tiles are written first; the error must remove them
    with pytest.raises(ImageError) as info:
        tile_images([good, blank], out)
    msg = str(info.value)
    assert "no tissue found in" in msg and "blank.svs" in msg
    assert "--tissue-threshold" in msg and "all 56 tiles" in msg
    assert _leftovers(tmp_path, {"a-good.png", "blank.svs"}) == []


def test_real_svs_with_impossible_test_reports_no_tissue(he_dir, tmp_path):
    config = TileConfig(size=256, tissue_threshold=1.0, min_saturation=0.9)
    with pytest.raises(ImageError, match=r"no tissue found in .*cmu-small-region\.svs.*"
                                         r"lower --tissue-threshold"):
        tile_images([he_dir / SVS], tmp_path / "out", config)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_rules(tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(_pink((64, 128))).save(img)
    out = tmp_path / "out"
    out.mkdir()
    tile_images([img], out)  # an existing empty folder is fine
    assert sorted(p.name for p in out.iterdir()) == ["img_r000_c000.png", "img_r000_c064.png",
                                                     "tiles.csv"]
    with pytest.raises(OnepixelError, match="not empty.*overwrite=True"):
        tile_images([img], out)
    tile_images([img], out, TileConfig(size=32, overwrite=True))
    assert len(list(out.glob("*.png"))) == 2 * 4
    twin = tmp_path / "sub" / "img.jpg"
    twin.parent.mkdir()
    Image.fromarray(_pink((64, 64))).save(twin)
    with pytest.raises(ImageError, match="same name stem"):
        tile_images([img, twin], tmp_path / "other")
    small = tmp_path / "small.png"
    Image.fromarray(_pink((32, 32))).save(small)
    with pytest.raises(ImageError, match=r"small\.png is 32x32, smaller than one 64x64 tile"):
        tile_images([small], tmp_path / "other")
    with pytest.raises(OnepixelError, match="holds the input"):
        tile_images([tmp_path / "sub"], tmp_path, TileConfig(overwrite=True))
    assert _leftovers(tmp_path, {"img.png", "out", "sub", "small.png"}) == []
