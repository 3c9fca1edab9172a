"""Image loading and dataset folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from onepixel.datasets.images import load_image, load_images, scan_dataset
from onepixel.errors import DatasetError, ImageError


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_rgb_png_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path / "a.png", arr), (64, 64))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_tiff_is_read(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(load_image(_save(tmp_path / "a.tif", arr)), arr)


def test_greyscale_and_rgba_are_converted_with_a_note(tmp_path, caplog):
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    rgba = np.dstack([np.full((64, 64, 3), 7, np.uint8), np.zeros((64, 64), np.uint8)])
    with caplog.at_level(logging.INFO):
        g = load_image(_save(tmp_path / "g.png", grey))
        a = load_image(_save(tmp_path / "a.png", rgba, "RGBA"))
    assert g.shape == (64, 64, 3) and np.array_equal(g[..., 0], grey) and np.array_equal(g[..., 2], grey)
    assert a.shape == (64, 64, 3) and np.all(a == 7)  # alpha dropped, colour kept
    assert "alpha dropped" in caplog.text and "converting L image" in caplog.text


def test_wrong_size_names_file_and_both_sizes(tmp_path):
    path = _save(tmp_path / "small.png", np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ImageError) as info:
        load_image(path, (64, 64))
    assert "small.png" in str(info.value) and "48x32" in str(info.value) and "64x64" in str(info.value)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageError, match="bad.png"):
        load_image(bad)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="no images"):
        load_images([])


def test_dataset_labels_at_any_depth_in_sorted_order(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    for rel in ["train/mitosis/b.png", "train/mitosis/a.png", "val/normal/c.png",
                "train/normal/z.png", "unlabelled/x.png", "train/mitosis/notes.txt"]:
        if rel.endswith(".png"):
            _save(tmp_path / rel, img)
        else:
            (tmp_path / rel).write_text("x")
    ds = scan_dataset(tmp_path)
    names = [ds.relative_name(i) for i in ds.items]
    assert names == ["train/mitosis/a.png", "train/mitosis/b.png", "train/normal/z.png",
                     "val/normal/c.png"]
    assert [i.positive for i in ds.items] == [True, True, False, False]


def test_dataset_custom_labels(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    _save(tmp_path / "tumour" / "a.png", img)
    _save(tmp_path / "benign" / "b.png", img)
    ds = scan_dataset(tmp_path, positive_label="tumour", negative_label="benign")
    assert [(i.label, i.positive) for i in ds.items] == [("benign", False), ("tumour", True)]


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "mitosis").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no labelled images"):
        scan_dataset(tmp_path / "empty")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="got a file"):
        scan_dataset(tmp_path / "f.png")
