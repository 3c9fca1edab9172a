"""TUPAC16 auxiliary mitosis data → deep-histopath's labelled patch folders.

Input layout (``SRC``), as distributed by TUPAC16 and read by deep-histopath's
``preprocess_mitoses.py``::

    SRC/mitoses_image_data/<case>/<region>.tif       region images (any image suffix is accepted)
    SRC/mitoses_ground_truth/<case>/<region>.csv     one annotation per line: ``row,col``

(``mitoses_train_image_data`` / ``mitoses_train_ground_truth`` are accepted too.) A region with
no CSV has no mitoses.

Output layout (``DIR``)::

    DIR/{train,val}/{mitosis,normal}/<case>_<region>_<row>_<col>[_<copy>].png
    DIR/preprocess.json     every option (defaults resolved), the split, counts, skipped items
    DIR/patches.csv         one line per patch: file, split, label, case, region, row, col, copy

``row``/``col`` in a name are the image pixel that the patch is centred on: with ``size`` = 64 the
patch covers rows ``row-32 .. row+31`` and that pixel is at index ``[32, 32]`` (``size // 2``) of
the patch. For mitosis patches they are the annotation; ``_rot<deg>`` copies are the centred patch
rotated counter-clockwise about the annotation pixel, ``_shift<dr>_<dc>`` copies are centred on
``(row+dr, col+dc)``. Normal patches lie on a grid (step ``normal_stride``) and are kept only when
every one of their pixels is at least ``exclusion_radius`` pixels away from every annotation of the
region. The train/val split is by case (every region of a case goes to the same side).

Everything is deterministic for a given ``seed``: the split is a seeded permutation of the sorted
case names, and the random shifts / normal sampling of each region use a generator seeded by
``(seed, case, region)``, so they do not depend on which other cases are present.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from onepixel.datasets.images import IMAGE_SUFFIXES
from onepixel.datasets.slides import TIFF_SUFFIXES, probe_image, read_slide
from onepixel.datasets.tiles import check_output_outside
from onepixel.datasets.tissue import DEFAULT_MIN_SATURATION, DEFAULT_MIN_VALUE, tissue_fraction
from onepixel.errors import ConfigError, DatasetError, is_integer
from onepixel.fileio import atomic_output_dir
from onepixel.version import __version__

log = logging.getLogger(__name__)

IMAGE_DIRS = ("mitoses_image_data", "mitoses_train_image_data")
LABEL_DIRS = ("mitoses_ground_truth", "mitoses_train_ground_truth")
SPLITS = ("train", "val")
LABELS = ("mitosis", "normal")
SETTINGS_FILE = "preprocess.json"
PATCH_TABLE = "patches.csv"
_REGION_SUFFIXES = IMAGE_SUFFIXES | TIFF_SUFFIXES


@dataclass(frozen=True)
class TupacConfig:
    """Options of :func:`preprocess_tupac` (``onepixel preprocess-tupac``).

    Attributes
    ----------
    patch_size : int
        Side of the square patches (default 64, the MAX model's input).
    val_fraction : float
        Fraction of the cases put in ``val`` (default 0.2, deep-histopath's ``train_size=0.8``);
        rounded to whole cases, at least one on each side when there are two cases or more and
        the fraction is strictly between 0 and 1.
    val_cases : tuple of str, optional
        Exactly these cases go to ``val`` (``val_fraction`` is then ignored).
    seed : int
        Seed of the split, the shifts and the normal sampling (default 0).
    rotations : int
        Rotated copies per annotation (default 0), at angles ``360 * k / (rotations + 1)``,
        ``k = 1..rotations``; 3 gives the exact 90/180/270 degree rotations, other angles are
        bilinear.
    shifts : int
        Randomly shifted copies per annotation (default 0), each with a distinct non-zero offset
        ``(dr, dc)`` drawn uniformly from ``[-max_shift, max_shift]^2``.
    max_shift : int, optional
        Largest shift in pixels; default ``patch_size // 4`` (deep-histopath's).
    normal_stride : int, optional
        Step of the normal-patch grid; default ``patch_size`` (non-overlapping patches).
    exclusion_radius : float
        A normal patch is kept only if each of its pixels is at least this many pixels
        (Euclidean) from every annotation of its region; default ``patch_size / 2`` = 32 for 64.
        0 disables the exclusion.
    normal_fraction : float
        Probability of keeping each eligible normal patch (seeded); default 1.0 keeps all.
    normal_tissue_threshold : float
        Smallest tissue fraction (the test of :mod:`onepixel.datasets.tiles`) of a normal patch; default 0
        keeps background patches too (TUPAC regions are tissue already).
    border : {"reflect", "skip"}
        Mitosis patches that reach outside the image: ``reflect`` (default, as deep-histopath)
        pads them by mirror reflection; ``skip`` leaves them out (listed in preprocess.json).
        Normal patches always lie inside the image.
    overwrite : bool
        Replace a non-empty output folder (only once the new one is complete).
    """

    patch_size: int = 64
    val_fraction: float = 0.2
    val_cases: tuple[str, ...] | None = None
    seed: int = 0
    rotations: int = 0
    shifts: int = 0
    max_shift: int | None = None
    normal_stride: int | None = None
    exclusion_radius: float | None = None
    normal_fraction: float = 1.0
    normal_tissue_threshold: float = 0.0
    border: str = "reflect"
    overwrite: bool = False

    def __post_init__(self) -> None:
        bad = ConfigError
        if not is_integer(self.patch_size) or self.patch_size < 2:
            raise bad(f"TupacConfig.patch_size must be an integer >= 2, got {self.patch_size!r}",
                      field="TupacConfig.patch_size")
        if not 0.0 <= float(self.val_fraction) <= 1.0:
            raise bad(f"TupacConfig.val_fraction must be in [0, 1], got {self.val_fraction!r}",
                      field="TupacConfig.val_fraction")
        if self.val_cases is not None:
            object.__setattr__(self, "val_cases", tuple(str(c) for c in self.val_cases))
        if not is_integer(self.seed) or self.seed < 0:
            raise bad(f"TupacConfig.seed must be a non-negative integer, got {self.seed!r}",
                      field="TupacConfig.seed")
        if not is_integer(self.rotations) or self.rotations < 0:
            raise bad(f"TupacConfig.rotations must be a non-negative integer, got {self.rotations!r}",
                      field="TupacConfig.rotations")
        if not is_integer(self.shifts) or self.shifts < 0:
            raise bad(f"TupacConfig.shifts must be a non-negative integer, got {self.shifts!r}",
                      field="TupacConfig.shifts")
        if self.max_shift is not None and (not is_integer(self.max_shift) or self.max_shift < 1):
            raise bad(f"TupacConfig.max_shift must be a positive integer (pixels), got {self.max_shift!r}",
                      field="TupacConfig.max_shift")
        side = 2 * self.resolved_max_shift + 1
        if self.shifts > side * side - 1:
            raise bad(f"TupacConfig.shifts: {self.shifts} distinct shifts do not fit in "
                      f"+-{self.resolved_max_shift} pixels ({side * side - 1} offsets); raise "
                      "TupacConfig.max_shift or lower shifts", field="TupacConfig.shifts")
        if self.normal_stride is not None and (not is_integer(self.normal_stride)
                                               or self.normal_stride < 1):
            raise bad(f"TupacConfig.normal_stride must be a positive integer, got {self.normal_stride!r}",
                      field="TupacConfig.normal_stride")
        if self.exclusion_radius is not None and not float(self.exclusion_radius) >= 0:
            raise bad(f"TupacConfig.exclusion_radius must be >= 0 pixels, got {self.exclusion_radius!r}",
                      field="TupacConfig.exclusion_radius")
        if not 0.0 <= float(self.normal_fraction) <= 1.0:
            raise bad(f"TupacConfig.normal_fraction must be in [0, 1], got {self.normal_fraction!r}",
                      field="TupacConfig.normal_fraction")
        if not 0.0 <= float(self.normal_tissue_threshold) <= 1.0:
            raise bad(f"TupacConfig.normal_tissue_threshold must be in [0, 1], got "
                      f"{self.normal_tissue_threshold!r}", field="TupacConfig.normal_tissue_threshold")
        if self.border not in ("reflect", "skip"):
            raise bad(f"TupacConfig.border must be 'reflect' or 'skip', got {self.border!r}",
                      field="TupacConfig.border")

    @property
    def resolved_max_shift(self) -> int:
        return self.patch_size // 4 if self.max_shift is None else int(self.max_shift)

    @property
    def resolved_normal_stride(self) -> int:
        return self.patch_size if self.normal_stride is None else int(self.normal_stride)

    @property
    def resolved_exclusion_radius(self) -> float:
        return self.patch_size / 2 if self.exclusion_radius is None else float(self.exclusion_radius)

    def resolved(self) -> dict:
        """All options with their defaults filled in (what preprocess.json records)."""
        out = asdict(self)
        out["val_cases"] = list(self.val_cases) if self.val_cases is not None else None
        out["max_shift"] = self.resolved_max_shift
        out["normal_stride"] = self.resolved_normal_stride
        out["exclusion_radius"] = self.resolved_exclusion_radius
        out["rotation_angles"] = [float(a) for a in rotation_angles(self.rotations)]
        return out


@dataclass(frozen=True)
class Region:
    """One region image of a case, with its ground-truth CSV (None: no mitoses)."""

    case: str
    region: str
    image: Path
    csv: Path | None


@dataclass(frozen=True)
class TupacResult:
    """What :func:`preprocess_tupac` wrote.

    Attributes
    ----------
    out : Path
    train_cases, val_cases : tuple of str
    counts : dict
        ``counts[split][label]`` = number of patches.
    skipped : tuple of dict
        Mitosis patches left out at the border (``border="skip"``).
    """

    out: Path
    train_cases: tuple[str, ...]
    val_cases: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    skipped: tuple[dict, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# input


def find_regions(src: str | Path) -> tuple[Region, ...]:
    """List the region images of a TUPAC-layout folder, sorted by (case, region).

    Raises
    ------
    DatasetError
        ``src`` or its image folder is missing, or holds no region images.
    """
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"TUPAC folder not found: {src} (expected a folder holding "
                           f"{IMAGE_DIRS[0]}/ and {LABEL_DIRS[0]}/)")
    image_root = next((src / d for d in IMAGE_DIRS if (src / d).is_dir()), None)
    label_root = next((src / d for d in LABEL_DIRS if (src / d).is_dir()), None)
    if image_root is None:
        raise DatasetError(f"{src} has no {IMAGE_DIRS[0]}/ folder; point SRC at the folder that "
                           f"holds {IMAGE_DIRS[0]}/<case>/<region>.tif and "
                           f"{LABEL_DIRS[0]}/<case>/<region>.csv")
    if label_root is None:
        raise DatasetError(f"{src} has no {LABEL_DIRS[0]}/ folder (the mitosis annotations); "
                           f"without it every patch would be labelled normal. Put the "
                           f"<case>/<region>.csv files there")
    regions: list[Region] = []
    for case_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        for image in sorted(case_dir.iterdir()):
            if (not image.is_file() or image.name.startswith(".")
                    or image.suffix.lower() not in _REGION_SUFFIXES):
                continue
            csv_path = label_root / case_dir.name / f"{image.stem}.csv"
            regions.append(Region(case_dir.name, image.stem, image,
                                  csv_path if csv_path.is_file() else None))
    if not regions:
        raise DatasetError(f"no region images under {image_root}: expected "
                           f"{image_root.name}/<case>/<region>.tif")
    seen: dict[tuple[str, str], Path] = {}
    for r in regions:
        other = seen.setdefault((r.case, r.region), r.image)
        if other != r.image:
            raise DatasetError(f"{other} and {r.image} are the same region {r.case}/{r.region}; "
                               f"keep one of them")
    images = {(r.case, r.region) for r in regions}
    for csv_path in sorted(label_root.glob("*/*.csv")):
        if (csv_path.parent.name, csv_path.stem) not in images:
            log.warning("%s has no region image in %s; its annotations are ignored", csv_path,
                        image_root)
    return tuple(regions)


def read_annotations(path: str | Path, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a TUPAC ground-truth CSV: one ``row,col`` per line.

    Blank lines are ignored, and a first line ``row,col`` (any case) is taken as a header. Values
    must be integers (``12`` or ``12.0``); duplicates are dropped with a warning.

    Parameters
    ----------
    path : path
    shape : (H, W), optional
        If given, every annotation must lie inside ``0 <= row < H``, ``0 <= col < W``.

    Returns
    -------
    ndarray, shape (N, 2), int64
        ``(row, col)`` pairs in file order.

    Raises
    ------
    DatasetError
        A malformed row or an annotation outside the image; the message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read annotations {path}: {exc}") from exc
    coords: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        fields = [f.strip() for f in stripped.split(",")]
        if lineno == 1 and [f.lower() for f in fields] == ["row", "col"]:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path}, line {lineno}: expected 'row,col' (two integers), got "
                               f"{stripped!r}; fix or delete that line")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DatasetError(f"{path}, line {lineno}: expected 'row,col' (two integers), got "
                               f"{stripped!r}; fix or delete that line") from None
        if not all(math.isfinite(v) and v == int(v) for v in values):
            raise DatasetError(f"{path}, line {lineno}: coordinates must be whole pixel numbers, "
                               f"got {stripped!r}")
        row, col = int(values[0]), int(values[1])
        if shape is not None and not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise DatasetError(f"{path}, line {lineno}: annotation (row {row}, col {col}) lies "
                               f"outside the {shape[1]}x{shape[0]} (WxH) region image; check that "
                               f"the columns are row,col (not x,y) and the CSV matches the image")
        if (row, col) in seen:
            log.warning("%s, line %d: duplicate annotation (%d, %d) ignored", path, lineno, row,
                        col)
            continue
        seen.add((row, col))
        coords.append((row, col))
    return np.asarray(coords, dtype=np.int64).reshape(-1, 2)


def split_cases(
    cases: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    val_cases: Sequence[str] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split case names into (train, val), each sorted.

    ``val_cases`` fixes the validation cases; otherwise ``round(n * val_fraction)`` cases chosen by
    a permutation of the sorted names seeded with ``seed`` (at least one case on each side when
    ``n >= 2`` and ``0 < val_fraction < 1``).

    Raises
    ------
    DatasetError
        A ``val_cases`` name that is not a case.
    """
    names = sorted(set(cases))
    if val_cases is not None:
        unknown = sorted(set(val_cases) - set(names))
        if unknown:
            raise ConfigError(f"TupacConfig.val_cases names {', '.join(unknown)}, which are not cases "
                              f"of this dataset (cases: {', '.join(names)})", field="TupacConfig.val_cases")
        val = set(val_cases)
    else:
        n = len(names)
        n_val = round(n * val_fraction)
        if n >= 2 and 0 < val_fraction < 1:
            n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        val = {names[i] for i in order[:n_val]}
    train = tuple(c for c in names if c not in val)
    return train, tuple(c for c in names if c in val)


# --------------------------------------------------------------------------------------------
# patches


def extract_patch(image: np.ndarray, row: int, col: int, size: int, border: str = "reflect",
                  ) -> np.ndarray | None:
    """The ``size`` x ``size`` patch centred on pixel ``(row, col)``.

    The patch covers rows ``row - size//2 .. row - size//2 + size - 1`` (columns likewise), so
    ``patch[size // 2, size // 2] == image[row, col]``.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3)
    row, col : int
    size : int
    border : {"reflect", "skip"}
        Outside the image: mirror-reflect the whole image about its edge pixels (as
        ``numpy.pad(image, mode="reflect")``), or return None.

    Returns
    -------
    ndarray, shape (size, size, 3), or None
    """
    h, w = image.shape[:2]
    top, left = row - size // 2, col - size // 2
    bottom, right = top + size, left + size
    if top >= 0 and left >= 0 and bottom <= h and right <= w:
        return image[top:bottom, left:right]
    if border == "skip":
        return None
    rows = _reflect(np.arange(top, bottom), h)
    cols = _reflect(np.arange(left, right), w)
    return image[rows[:, None], cols[None, :]]


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside ``[0, n)`` into it by mirror reflection about the edge pixels."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m >= n, period - m, m)


def rotation_angles(n: int) -> np.ndarray:
    """Angles in degrees of ``n`` evenly spaced rotations: ``360 * k / (n + 1)``, k = 1..n."""
    return np.array([360.0 * k / (n + 1) for k in range(1, n + 1)])


def rotated_patch(image: np.ndarray, row: int, col: int, size: int, angle: float,
                  border: str = "reflect") -> np.ndarray | None:
    """The patch centred on ``(row, col)`` of the image rotated by ``angle`` degrees (CCW).

    The rotation is about the centre of pixel ``(row, col)``, which stays at ``[size//2,
    size//2]``. Multiples of 90 degrees are exact (``numpy.rot90``); other angles are bilinear on a
    larger bounding patch, so the corners hold real pixels rather than fill.
    """
    half = math.ceil(size * math.sqrt(2) / 2) + 1
    bound = 2 * half + 1  # odd: its centre pixel is the rotation centre
    big = extract_patch(image, row, col, bound, border)
    if big is None:
        return None
    quarter = angle / 90.0
    if quarter == int(quarter):
        rotated = np.rot90(big, k=int(quarter) % 4)
    else:
        rotated = np.asarray(Image.fromarray(np.ascontiguousarray(big)).rotate(
            angle, resample=Image.Resampling.BILINEAR))
    start = half - size // 2
    return rotated[start:start + size, start:start + size]


def shift_offsets(n: int, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct non-zero offsets ``(dr, dc)`` in ``[-max_shift, max_shift]^2``, shape (n, 2)."""
    side = 2 * max_shift + 1
    centre = max_shift * side + max_shift
    choices = rng.choice(side * side - 1, size=n, replace=False)
    flat = choices + (choices >= centre)  # skip the (0, 0) offset
    return np.stack([flat // side - max_shift, flat % side - max_shift], axis=1).astype(np.int64)


def normal_centres(
    shape: Sequence[int],
    annotations: np.ndarray,
    size: int,
    stride: int,
    radius: float,
) -> np.ndarray:
    """Centres of the grid patches that stay ``radius`` pixels away from every annotation.

    Grid patches have top-left corners at ``0, stride, 2*stride, ...`` and lie entirely inside
    the image; a patch is kept when the Euclidean distance from each annotation to the nearest
    pixel of the patch is at least ``radius``.

    Parameters
    ----------
    shape : (H, W)
    annotations : ndarray, shape (N, 2), int
    size, stride : int
    radius : float

    Returns
    -------
    ndarray, shape (M, 2), int64
        ``(row, col)`` patch centres (``top + size // 2``) in row-major order.
    """
    h, w = int(shape[0]), int(shape[1])
    tops = np.arange(0, h - size + 1, stride)
    lefts = np.arange(0, w - size + 1, stride)
    if tops.size == 0 or lefts.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    keep = np.ones((tops.size, lefts.size), dtype=bool)
    if radius > 0 and len(annotations):
        for r, c in np.asarray(annotations, dtype=np.float64):
            # per-axis distance from the annotation to each patch's pixel span [top, top+size-1]
            dr = np.maximum(0.0, np.maximum(tops - r, r - (tops + size - 1)))
            dc = np.maximum(0.0, np.maximum(lefts - c, c - (lefts + size - 1)))
            keep &= dr[:, None] ** 2 + dc[None, :] ** 2 >= radius * radius
    rows, cols = np.nonzero(keep)
    return np.stack([tops[rows] + size // 2, lefts[cols] + size // 2], axis=1).astype(np.int64)


def _region_rng(seed: int, case: str, region: str, stream: int) -> np.random.Generator:
    key = [seed, zlib.crc32(case.encode()), zlib.crc32(region.encode()), stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def _angle_text(angle: float) -> str:
    return f"{angle:g}".replace(".", "p")


# --------------------------------------------------------------------------------------------
# the command


def preprocess_tupac(
    src: str | Path,
    out: str | Path,
    config: TupacConfig | None = None,
    *,
    progress: bool = False,
) -> TupacResult:
    """Write deep-histopath's ``{train,val}/{mitosis,normal}`` patch folders from TUPAC16 data.

    Every CSV is parsed and checked against its image size before any patch is written; patches
    go to a temporary folder beside ``out`` renamed to ``out`` at the end, so an error leaves
    nothing behind. See the module docstring for the layouts and :class:`TupacConfig` for the
    options.

    Parameters
    ----------
    src : path
        Folder holding ``mitoses_image_data/`` and ``mitoses_ground_truth/``.
    out : path
        Output folder (must not exist, be empty, or ``config.overwrite``).
    config : TupacConfig, optional
    progress : bool
        Show a progress bar over regions.

    Returns
    -------
    TupacResult

    Raises
    ------
    DatasetError
        Bad layout, malformed CSV (file and line named), annotation outside its image.
    ImageError
        A region image cannot be read.
    """
    config = config or TupacConfig()
    src = Path(src)
    regions = find_regions(src)
    check_output_outside(out, [src])
    train, val = split_cases([r.case for r in regions], config.val_fraction, config.seed,
                             config.val_cases)
    split_of = {c: "train" for c in train} | {c: "val" for c in val}
    size = config.patch_size

    # check every image header and CSV first (cheap), so bad input fails before any patch work
    annotations: dict[tuple[str, str], np.ndarray] = {}
    for r in regions:
        info = probe_image(r.image)
        if info.height < size or info.width < size:
            raise DatasetError(f"{r.image} is {info.width}x{info.height}, smaller than one "
                               f"{size}x{size} patch; lower TupacConfig.patch_size or remove the region")
        if r.csv is not None:
            annotations[(r.case, r.region)] = read_annotations(r.csv, (info.height, info.width))

    counts = {s: dict.fromkeys(LABELS, 0) for s in SPLITS}
    skipped: list[dict] = []
    table: list[tuple] = []
    n_annotations = 0
    bar = None
    if progress:
        from onepixel.progress import progress_bar

        bar = progress_bar(total=len(regions), unit="region", desc="preprocess-tupac", leave=False)
    try:
        with atomic_output_dir(out, config.overwrite) as tmp:
            for s in SPLITS:
                for label in LABELS:
                    (tmp / s / label).mkdir(parents=True)
            for r in regions:
                image = read_slide(r.image)
                coords = annotations.get((r.case, r.region), np.zeros((0, 2), np.int64))
                n_annotations += len(coords)
                split = split_of[r.case]
                written = _write_region(image, r, coords, config, tmp / split, skipped)
                for label, rows in written.items():
                    counts[split][label] += len(rows)
                    table.extend((f"{split}/{label}/{name}", split, label, r.case, r.region, *rest)
                                 for name, *rest in rows)
                if bar is not None:
                    bar.update(1)
            with open(tmp / PATCH_TABLE, "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(("file", "split", "label", "case", "region", "row", "col", "copy"))
                writer.writerows(table)
            settings = {
                "onepixel_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": str(src.resolve()),
                "config": config.resolved(),
                "tissue_test": (f"normal patches: fraction of pixels with HSV saturation >= "
                                f"{DEFAULT_MIN_SATURATION} and max(R,G,B) >= {DEFAULT_MIN_VALUE}"),
                "naming": ("<case>_<region>_<row>_<col>[_rot<deg>|_shift<dr>_<dc>].png; row,col is "
                           "the annotation (mitosis) or the patch centre (normal); the centre pixel "
                           "is at [size//2, size//2]"),
                "split": {"train": list(train), "val": list(val)},
                "regions": len(regions),
                "annotations": n_annotations,
                "counts": counts,
                "skipped": skipped,
            }
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    finally:
        if bar is not None:
            bar.close()
    log.info("wrote %s: train %s, val %s (cases: %d train, %d val)", out, counts["train"],
             counts["val"], len(train), len(val))
    return TupacResult(Path(out), train, val, counts, tuple(skipped))


def _write_region(image: np.ndarray, region: Region, coords: np.ndarray, config: TupacConfig,
                  dest: Path, skipped: list[dict]) -> dict[str, list[tuple]]:
    """Write one region's patches under ``dest/{mitosis,normal}``; return the rows written."""
    size, border = config.patch_size, config.border
    prefix = f"{region.case}_{region.region}"
    written: dict[str, list[tuple]] = {"mitosis": [], "normal": []}

    def save(label: str, patch: np.ndarray, name: str, row: int, col: int, copy: str) -> None:
        Image.fromarray(np.ascontiguousarray(patch)).save(dest / label / name)
        written[label].append((name, row, col, copy))

    def skip(row: int, col: int, copy: str) -> None:
        skipped.append({"case": region.case, "region": region.region, "row": row, "col": col,
                        "copy": copy, "reason": "patch reaches outside the image (border=skip)"})

    angles = rotation_angles(config.rotations)
    for index, (row, col) in enumerate(coords.tolist()):
        base = f"{prefix}_{row}_{col}"
        patch = extract_patch(image, row, col, size, border)
        if patch is None:
            skip(row, col, "centre")
        else:
            save("mitosis", patch, f"{base}.png", row, col, "centre")
        for angle in angles:
            copy = f"rot{_angle_text(angle)}"
            patch = rotated_patch(image, row, col, size, float(angle), border)
            if patch is None:
                skip(row, col, copy)
            else:
                save("mitosis", patch, f"{base}_{copy}.png", row, col, copy)
        if config.shifts:
            rng = _region_rng(config.seed, region.case, region.region, index)
            for dr, dc in shift_offsets(config.shifts, config.resolved_max_shift, rng).tolist():
                copy = f"shift{dr}_{dc}"
                patch = extract_patch(image, row + dr, col + dc, size, border)
                if patch is None:
                    skip(row, col, copy)
                else:
                    save("mitosis", patch, f"{base}_{copy}.png", row, col, copy)

    centres = normal_centres(image.shape[:2], coords, size, config.resolved_normal_stride,
                             config.resolved_exclusion_radius)
    if config.normal_fraction < 1.0:
        rng = _region_rng(config.seed, region.case, region.region, 2**32 - 1)
        centres = centres[rng.random(len(centres)) < config.normal_fraction]
    for row, col in centres.tolist():
        patch = extract_patch(image, row, col, size, "skip")
        assert patch is not None  # grid patches lie inside the image
        if (config.normal_tissue_threshold > 0
                and tissue_fraction(patch) < config.normal_tissue_threshold):
            continue
        save("normal", patch, f"{prefix}_{row}_{col}.png", row, col, "")
    return written
