"""TUPAC16 auxiliary mitosis layout → deep-histopath patch folders (``onepixel.datasets.tupac``).

The fixture dataset is built here, in the TUPAC layout, from the shared real H&E images
(``$ONEPIXEL_ASSETS/he-images``: two TUPAC16 tiles, a JPEG and crops of an Aperio SVS), cut into
region ``.tif`` files written with tifffile and Pillow. The annotation CSVs are MADE UP: they mark
arbitrary pixels (a few of them near the borders on purpose), not real mitoses. Tests that need
the images skip with a reason when ``ONEPIXEL_ASSETS`` is unset; the error-handling tests use
synthetic images and always run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.datasets.images import scan_dataset
from onepixel.datasets.tissue import tissue_fraction
from onepixel.datasets.tupac import (
    TupacConfig,
    extract_patch,
    find_regions,
    normal_centres,
    preprocess_tupac,
    read_annotations,
    rotated_patch,
    split_cases,
)
from onepixel.errors import ConfigError, DatasetError, OnepixelError

tifffile = pytest.importorskip("tifffile", reason="writing the TUPAC .tif fixture needs tifffile")

# made-up annotations (row, col) per (case, region); regions not listed have no CSV (no mitoses)
ANNOTATIONS: dict[tuple[str, str], list[tuple[int, int]]] = {
    ("01", "01"): [(300, 300), (5, 590), (120, 450)],  # (5, 590): near the top-right corner
    ("01", "02"): [(598, 2)],  # bottom-left corner
    ("02", "01"): [(150, 250), (40, 60)],
    ("03", "01"): [(310, 290)],
    ("05", "01"): [(200, 200), (230, 260)],  # two close together
}


def _write_csv(path: Path, coords) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r},{c}\n" for r, c in coords))


@pytest.fixture(scope="module")
def tupac_src(tmp_path_factory, he_dir) -> tuple[Path, dict[tuple[str, str], np.ndarray]]:
    """SRC/mitoses_image_data/<case>/<region>.tif + SRC/mitoses_ground_truth/<case>/<region>.csv."""
    he = he_dir
    svs = tifffile.imread(he / "cmu-small-region.svs")
    tile1 = np.asarray(Image.open(he / "tupac-tr-002-tile-r34-c34.png").convert("RGB"))
    tile2 = np.asarray(Image.open(he / "tupac-tr-002-tile-r35-c37.png").convert("RGB"))
    jpg = np.asarray(Image.open(he / "stardist-histo.jpg").convert("RGB"))
    regions = {
        ("01", "01"): tile1,
        ("01", "02"): tile2,
        ("02", "01"): jpg,  # 500x300
        ("03", "01"): svs[1400:2000, 700:1300],
        ("04", "01"): svs[2000:2400, 900:1300],  # no CSV: no mitoses
        ("05", "01"): np.ascontiguousarray(tile1[::-1, ::-1]),
    }
    src = tmp_path_factory.mktemp("tupac")
    images = {}
    for (case, region), image in regions.items():
        path = src / "mitoses_image_data" / case / f"{region}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        if case == "02":
            Image.fromarray(image).save(path)  # a Pillow-written TIFF
        else:
            tifffile.imwrite(path, image, photometric="rgb")
        images[(case, region)] = image
    for key, coords in ANNOTATIONS.items():
        _write_csv(src / "mitoses_ground_truth" / key[0] / f"{key[1]}.csv", coords)
    return src, images


CONFIG = TupacConfig(seed=7, rotations=3, shifts=2)


@pytest.fixture(scope="module")
def processed(tupac_src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "patches"
    preprocess_tupac(tupac_src[0], out, CONFIG)
    return out


def _table(out: Path) -> list[dict]:
    with open(out / "patches.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------------------ on the fixture


def test_layout_and_counts(tupac_src, processed):
    _, images = tupac_src
    settings = json.loads((processed / "preprocess.json").read_text())
    n_ann = sum(len(v) for v in ANNOTATIONS.values())
    assert settings["annotations"] == n_ann and settings["regions"] == len(images)
    on_disk = {(s, lab): len(list((processed / s / lab).glob("*.png")))
               for s in ("train", "val") for lab in ("mitosis", "normal")}
    assert {(s, lab): settings["counts"][s][lab] for s, lab in on_disk} == on_disk
    # centred + 3 rotations + 2 shifts per annotation, all kept (border=reflect)
    assert on_disk["train", "mitosis"] + on_disk["val", "mitosis"] == n_ann * (1 + 3 + 2)
    # normals: brute force, every pixel of a 64x64 grid patch >= 32 px from every annotation
    expected_normals = 0
    for key, image in images.items():
        ann = np.array(ANNOTATIONS.get(key, []), dtype=float).reshape(-1, 2)
        for top in range(0, image.shape[0] - 63, 64):
            for left in range(0, image.shape[1] - 63, 64):
                rr, cc = np.mgrid[top:top + 64, left:left + 64]
                ok = all(np.hypot(rr - r, cc - c).min() >= 32 for r, c in ann)
                expected_normals += ok
    assert on_disk["train", "normal"] + on_disk["val", "normal"] == expected_normals
    # the output is a dataset the attack command reads
    dataset = scan_dataset(processed)
    assert len(dataset) == sum(on_disk.values())
    assert sum(item.positive for item in dataset.items) == n_ann * 6
    assert not any(p.name.startswith(".") for p in processed.parent.iterdir())


def test_mitosis_patches_are_centred(tupac_src, processed):
    _, images = tupac_src
    rows = [r for r in _table(processed) if r["label"] == "mitosis"]
    seen = set()
    for rec in rows:
        key = (rec["case"], rec["region"])
        r, c = int(rec["row"]), int(rec["col"])
        assert (r, c) in ANNOTATIONS[key]
        image = images[key]
        patch = _png(processed / rec["file"])
        assert patch.shape == (64, 64, 3)
        assert Path(rec["file"]).name.startswith(f"{key[0]}_{key[1]}_{r}_{c}")
        padded = np.pad(image, ((64, 64), (64, 64), (0, 0)), mode="reflect")
        if rec["copy"] == "centre":
            np.testing.assert_array_equal(patch[32, 32], image[r, c])
            # the window rows r-32..r+31, reflected at the border
            np.testing.assert_array_equal(patch, padded[r + 32:r + 96, c + 32:c + 96])
            seen.add((key, r, c))
        elif rec["copy"].startswith("rot"):
            angle = int(rec["copy"][3:])
            assert angle in (90, 180, 270)
            np.testing.assert_array_equal(patch[32, 32], image[r, c])  # rotation centre stays
            if angle == 180 and 40 < r < image.shape[0] - 40 and 40 < c < image.shape[1] - 40:
                i, j = np.mgrid[0:64, 0:64]
                np.testing.assert_array_equal(patch, image[r - (i - 32), c - (j - 32)])
        else:
            dr, dc = (int(v) for v in rec["copy"][5:].split("_"))
            assert 0 < max(abs(dr), abs(dc)) <= 16
            np.testing.assert_array_equal(
                patch, padded[r + dr + 32:r + dr + 96, c + dc + 32:c + dc + 96])
    assert len(seen) == sum(len(v) for v in ANNOTATIONS.values())
    shifts = {}
    for rec in rows:
        if rec["copy"].startswith("shift"):
            shifts.setdefault((rec["case"], rec["region"], rec["row"], rec["col"]), set()).add(
                rec["copy"])
    assert all(len(v) == 2 for v in shifts.values())  # two distinct offsets each


def test_normals_keep_their_distance(tupac_src, processed):
    _, images = tupac_src
    normals = [r for r in _table(processed) if r["label"] == "normal"]
    assert normals
    for rec in normals[::3]:
        key = (rec["case"], rec["region"])
        r, c = int(rec["row"]), int(rec["col"])
        top, left = r - 32, c - 32
        assert top % 64 == 0 and left % 64 == 0  # on the grid
        np.testing.assert_array_equal(_png(processed / rec["file"]),
                                      images[key][top:top + 64, left:left + 64])
        rr, cc = np.mgrid[top:top + 64, left:left + 64]
        for ar, ac in ANNOTATIONS.get(key, []):
            assert np.hypot(rr - ar, cc - ac).min() >= 32
    # a region without annotations gives its whole grid: 400x400 -> 6x6
    assert sum(1 for r in normals if (r["case"], r["region"]) == ("04", "01")) == 36


def test_split_is_by_case(processed):
    settings = json.loads((processed / "preprocess.json").read_text())
    train, val = settings["split"]["train"], settings["split"]["val"]
    assert sorted(train + val) == ["01", "02", "03", "04", "05"]
    assert len(val) == 1 and not set(train) & set(val)  # round(5 * 0.2)
    for rec in _table(processed):
        assert rec["case"] in (val if rec["split"] == "val" else train)
        assert rec["file"].startswith(f"{rec['split']}/{rec['label']}/{rec['case']}_")


def test_preprocess_json_records_every_option(tupac_src, processed):
    settings = json.loads((processed / "preprocess.json").read_text())
    config = settings["config"]
    assert config == {
        "patch_size": 64, "val_fraction": 0.2, "val_cases": None, "seed": 7, "rotations": 3,
        "shifts": 2, "max_shift": 16, "normal_stride": 64, "exclusion_radius": 32.0,
        "normal_fraction": 1.0, "normal_tissue_threshold": 0.0, "border": "reflect",
        "overwrite": False, "rotation_angles": [90.0, 180.0, 270.0],
    }
    assert settings["skipped"] == []
    assert Path(settings["source"]) == tupac_src[0].resolve()
    # the documented rule: the first round(5 * 0.2) = 1 of a seed-7 permutation of sorted cases
    first = int(np.random.default_rng(7).permutation(5)[0])
    assert settings["split"]["val"] == [["01", "02", "03", "04", "05"][first]]


def test_deterministic_for_a_seed(tupac_src, processed, tmp_path):
    again = tmp_path / "again"
    preprocess_tupac(tupac_src[0], again, CONFIG)
    files = sorted(p.relative_to(processed).as_posix() for p in processed.rglob("*.png"))
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*.png"))
    for name in files[::7]:
        assert (processed / name).read_bytes() == (again / name).read_bytes()
    assert (processed / "patches.csv").read_text() == (again / "patches.csv").read_text()
    other = preprocess_tupac(tupac_src[0], tmp_path / "other",
                             TupacConfig(seed=8, rotations=0, shifts=2, val_cases=("03",)))
    assert other.val_cases == ("03",)
    shifted = {p.name for p in (tmp_path / "other").rglob("*shift*.png")}
    assert shifted != {p.name for p in processed.rglob("*shift*.png")}


def test_border_skip_and_sampling(tupac_src, processed, tmp_path):
    result = preprocess_tupac(tupac_src[0], tmp_path / "skip",
                              TupacConfig(border="skip", rotations=1, normal_fraction=0.5,
                                          normal_tissue_threshold=0.5))
    skipped = {(s["case"], s["region"], s["row"], s["col"], s["copy"]) for s in result.skipped}
    # corner annotations lose both patches; (40, 60) keeps its centred patch but its rotation
    # needs a 95-px bounding patch that reaches outside the image
    assert skipped == {("01", "01", 5, 590, "centre"), ("01", "01", 5, 590, "rot180"),
                       ("01", "02", 598, 2, "centre"), ("01", "02", 598, 2, "rot180"),
                       ("02", "01", 40, 60, "rot180")}
    n_mitosis = sum(result.counts[s]["mitosis"] for s in ("train", "val"))
    assert n_mitosis == 2 * sum(len(v) for v in ANNOTATIONS.values()) - 5
    settings = json.loads((tmp_path / "skip" / "preprocess.json").read_text())
    assert len(settings["skipped"]) == 5
    # normal sampling: about half of the eligible patches that hold >= 50% tissue
    eligible = {p.name: p for p in processed.glob("*/normal/*.png")}
    tissue = {n for n, p in eligible.items() if tissue_fraction(_png(p)) >= 0.5}
    sampled = {p.name for p in (tmp_path / "skip").glob("*/normal/*.png")}
    assert sampled <= tissue
    assert 0.3 * len(tissue) < len(sampled) < 0.7 * len(tissue)


# ------------------------------------------------------------------------------ synthetic, always run


def _synthetic_src(root: Path, csv_text: dict[tuple[str, str], str]) -> Path:
    rng = np.random.default_rng(0)
    for case in ("01", "02"):
        path = root / "mitoses_image_data" / case / "01.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
    for (case, region), text in csv_text.items():
        path = root / "mitoses_ground_truth" / case / f"{region}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_malformed_csv_names_file_and_line_and_leaves_nothing(tmp_path):
    src = _synthetic_src(tmp_path / "src", {("01", "01"): "10,20\n", ("02", "01"): "50,60\n\n70,abc\n"})
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"02/01\.csv, line 3: expected 'row,col'.*'70,abc'"):
        preprocess_tupac(src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (src / "mitoses_ground_truth" / "02" / "01.csv").write_text("50,60,7\n")
    with pytest.raises(DatasetError, match=r"01\.csv, line 1"):
        preprocess_tupac(src, out)
    (src / "mitoses_ground_truth" / "02" / "01.csv").write_text("row,col\n50,60\n250,10\n")
    with pytest.raises(DatasetError, match=r"01\.csv, line 3: annotation \(row 250, col 10\) lies "
                                           r"outside the 200x200"):
        preprocess_tupac(src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (src / "mitoses_ground_truth" / "02" / "01.csv").write_text("row,col\n50,60\n50,60\n")
    result = preprocess_tupac(src, out, TupacConfig(val_fraction=0.5))
    assert sum(result.counts[s]["mitosis"] for s in ("train", "val")) == 2  # duplicate dropped
    assert len(result.train_cases) == len(result.val_cases) == 1


def test_failure_mid_run_leaves_nothing(tmp_path, monkeypatch):
    import onepixel.datasets.tupac as tupac

    src = _synthetic_src(tmp_path / "src", {("01", "01"): "10,20\n"})
    calls = []
    real = tupac.read_slide

    def flaky(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the first region's patches are written
        return real(path)

    monkeypatch.setattr(tupac, "read_slide", flaky)
    with pytest.raises(KeyboardInterrupt):
        preprocess_tupac(src, tmp_path / "out")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="TUPAC folder not found"):
        find_regions(tmp_path / "nope")
    (tmp_path / "mitoses_image_data").mkdir()
    with pytest.raises(DatasetError, match="mitoses_ground_truth"):
        find_regions(tmp_path)
    (tmp_path / "mitoses_ground_truth").mkdir()
    with pytest.raises(DatasetError, match="no region images"):
        find_regions(tmp_path)
    with pytest.raises(ConfigError, match="TupacConfig.val_cases names 09, which are not cases"):
        split_cases(["01", "02"], val_cases=["09"])
    with pytest.raises(OnepixelError, match="shifts"):
        TupacConfig(shifts=9, max_shift=1)
    with pytest.raises(OnepixelError, match="border"):
        TupacConfig(border="wrap")


def test_read_annotations_and_helpers(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("row,col\n1,2\n\n3.0,4\n")
    np.testing.assert_array_equal(read_annotations(path), [[1, 2], [3, 4]])
    path.write_text("")
    assert read_annotations(path).shape == (0, 2)
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    patch = extract_patch(image, 0, 11, 4)
    assert patch.shape == (4, 4, 3)
    np.testing.assert_array_equal(patch[2, 2], image[0, 11])
    assert extract_patch(image, 0, 11, 4, border="skip") is None
    centres = normal_centres((10, 12), np.array([[0, 0]]), 4, 4, radius=3)
    # grid tops 0,4 / lefts 0,4,8; the patch at (0,0) contains the annotation, (0,4) and (4,0)
    # are 4 px away (kept), (4,4) is sqrt(32) away
    assert centres.tolist() == [[2, 6], [2, 10], [6, 2], [6, 6], [6, 10]]
    assert split_cases(["b", "a", "c"], 0.34, seed=1) == split_cases(["c", "b", "a"], 0.34, seed=1)
    # bilinear rotations turn about the annotated pixel and hold no fill in the corners
    bright = np.random.default_rng(0).integers(100, 256, (120, 130, 3), dtype=np.uint8)
    for angle in (22.5, 45.0, 120.0):
        rot = rotated_patch(bright, 60, 61, 64, angle)
        assert rot.shape == (64, 64, 3) and rot.min() >= 100
        np.testing.assert_array_equal(rot[32, 32], bright[60, 61])
