"""Image loading and validation, and labelled dataset folders.

Images are uint8 arrays of shape (H, W, 3) (RGB), or (H, W, 1) (greyscale) for a model whose
input has one channel. Sizes are never changed silently: a model that wants 64x64 gets 64x64
or an error naming the file.

Two dataset layouts: ``mitosis``/``normal`` folders for binary models (:func:`scan_dataset`) and
class folders for K-class models (:func:`scan_image_folder`, torchvision's ImageFolder
convention), both at any depth; and unlabelled images (:func:`scan_unlabelled`): a flat folder
or one image file, whose labels are the model's own predictions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.errors import ConfigError, DatasetError, ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def load_image(path: str | Path, expected_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (or greyscale, for a one-channel ``expected_shape``).

    Greyscale, palette and RGBA images are converted to RGB (alpha dropped) with a logged note;
    with ``expected_shape`` (H, W, 1) every image is converted to greyscale (PIL's ``L``:
    ``0.299 R + 0.587 G + 0.114 B``).

    Parameters
    ----------
    path : path
        PNG, JPEG, TIFF or BMP file.
    expected_shape : (H, W) or (H, W, C), optional
        If given, an image of another size is an error (no resizing); C is 3 (default) or 1.

    Returns
    -------
    ndarray, shape (H, W, 3) or (H, W, 1), uint8

    Raises
    ------
    ImageError
        Missing or unreadable file, or wrong size; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file but {path} is a folder")
    grey = expected_shape is not None and len(expected_shape) > 2 and int(expected_shape[2]) == 1
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if grey:
                if mode != "L":
                    img = to_rgb(img).convert("L")
                array = np.asarray(img, dtype=np.uint8)[:, :, None]
            else:
                if mode != "RGB":
                    log.info("%s: converting %s image to RGB%s", path, mode,
                             " (alpha dropped)" if "A" in mode else "")
                    img = to_rgb(img)
                array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    if expected_shape is not None:
        check_image_shape(array, expected_shape, source=str(path))
    return array


def to_rgb(img: Image.Image) -> Image.Image:
    # 16-bit greyscale ("I;16", "I") must be scaled to 8 bits, which PIL's convert does not do.
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def expand_image_paths(paths: Iterable[str | Path],
                       suffixes: frozenset[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files as given, folders replaced by the images under them (sorted, recursive).

    Parameters
    ----------
    paths : iterable of path
    suffixes : set of str
        Lower-case file suffixes that count as images inside folders.

    Raises
    ------
    ImageError
        A folder holds no image.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in suffixes
                           and not p.name.startswith("."))
            if not found:
                raise ImageError(f"no images ({', '.join(sorted(suffixes))}) in folder {path}")
            out.extend(found)
        else:
            out.append(path)
    return out


def check_image_shape(array: np.ndarray, expected_shape: Sequence[int], source: str) -> None:
    """Raise :class:`ImageError` if ``array`` is not (H, W, C) uint8 with the expected H, W, C
    (C 3 unless ``expected_shape`` says)."""
    h, w = int(expected_shape[0]), int(expected_shape[1])
    c = int(expected_shape[2]) if len(expected_shape) > 2 else 3
    if array.ndim != 3 or array.shape[2] != c:
        kind = "an RGB image (H, W, 3)" if c == 3 else f"an image of {c} channel(s) (H, W, {c})"
        raise ImageError(f"{source}: expected {kind}, got shape {array.shape}")
    if array.shape[:2] != (h, w):
        raise ImageError(
            f"{source}: image is {array.shape[1]}x{array.shape[0]} (WxH) but the model takes "
            f"{w}x{h}; crop or tile it first (images are never resized)"
        )


def load_images(paths: Iterable[str | Path], expected_shape: Sequence[int] | None = None) -> np.ndarray:
    """Load several images into one array of shape (N, H, W, C), uint8."""
    arrays = [load_image(p, expected_shape) for p in paths]
    if not arrays:
        raise ImageError("no images given")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ImageError(f"images have different sizes {sorted(shapes)}; give a model input size")
    return np.stack(arrays)


def load_readable_images(paths: Iterable[str | Path], expected_shape: Sequence[int] | None = None
                         ) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """Load the images that can be read, skipping (with a logged reason) the ones that cannot,
    as a campaign skips them: ``predict`` and ``attack`` treat a bad file alike.

    Parameters
    ----------
    paths : iterable of path
    expected_shape : (H, W) or (H, W, C), optional
        An image of another size is skipped (reason: its size and the model's).

    Returns
    -------
    kept : list of Path
        The files read, in the given order.
    images : ndarray, (N, H, W, C), uint8
        Their pixels (N = ``len(kept)``).
    skipped : list of (Path, str)
        Each file not read and why (missing, a folder, unreadable or truncated, wrong size).

    Raises
    ------
    ImageError
        No file could be read (the message lists the first reasons).
    """
    kept: list[Path] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    for p in paths:
        try:
            arrays.append(load_image(p, expected_shape))
            kept.append(Path(p))
        except ImageError as exc:
            log.warning("skipping %s", exc)
            skipped.append((Path(p), str(exc)))
    if not arrays:
        why = "; ".join(reason for _, reason in skipped[:3])
        raise ImageError("no readable image" + (f": {why}" if why else " given"))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ImageError(f"images have different sizes {sorted(shapes)}; give a model input size")
    return kept, np.stack(arrays), skipped


@dataclass(frozen=True)
class LabeledImage:
    """One dataset entry: a file, its label name, whether that label is the positive class (binary
    datasets), and its class index in the model's output order (class-folder datasets; -1 else)."""

    path: Path
    label: str
    positive: bool
    class_index: int = -1


@dataclass(frozen=True)
class Dataset:
    """A labelled folder of images in deterministic (sorted relative path) order.

    ``classes`` is empty for a binary (positive/negative) dataset, else the class names in the
    model's output order.
    """

    root: Path
    items: tuple[LabeledImage, ...]
    positive_label: str = "mitosis"
    negative_label: str = "normal"
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def relative_name(self, item: LabeledImage) -> str:
        """The item's path relative to the dataset root, with forward slashes (a stable id)."""
        return item.path.relative_to(self.root).as_posix()


def scan_dataset(
    root: str | Path,
    positive_label: str = "mitosis",
    negative_label: str = "normal",
) -> Dataset:
    """Find the images under ``root`` whose nearest labelled ancestor folder gives their label.

    Sub-folders named ``positive_label`` or ``negative_label`` may sit at any depth (as
    deep-histopath writes ``train/mitosis``, ``val/normal``, ...). Files outside such folders
    and non-image files are ignored (logged).

    Raises
    ------
    DatasetError
        Missing root, or no labelled images found.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset must be a folder with '{positive_label}'/'{negative_label}' "
                           f"sub-folders, got a file: {root}")
    if positive_label == negative_label:
        raise ConfigError(f"scan_dataset: positive_label and negative_label must differ, both are "
                          f"{positive_label!r}", field="CampaignConfig.positive_label")
    labels = {positive_label: True, negative_label: False}
    found, ignored = _labelled_files(
        root, lambda parts: next((p for p in reversed(parts) if p in labels), None))
    items = [LabeledImage(path, label, labels[label]) for path, label in found]
    if ignored:
        log.info("%d images under %s are outside '%s'/'%s' folders and were ignored",
                 ignored, root, positive_label, negative_label)
    if not items:
        raise DatasetError(
            f"no labelled images under {root}: put images in sub-folders named "
            f"'{positive_label}' and '{negative_label}' (at any depth), or name the labels "
            f"(CampaignConfig.positive_label / negative_label)"
        )
    items.sort(key=lambda it: it.path.relative_to(root).as_posix())
    return Dataset(root, tuple(items), positive_label, negative_label)


def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> Dataset:
    """A K-class dataset: images in folders named after their class (torchvision's ImageFolder).

    An image's class is the name of the folder it is in, at any depth (``train/cat/1.png`` is a
    ``cat``). Without ``classes`` the class index is the folder name's position in sorted order,
    as torchvision's ImageFolder numbers them; with ``classes`` (the model's output order) an
    image's class is its nearest ancestor folder named in it, and images under no such folder
    are ignored (logged).

    Raises
    ------
    DatasetError
        Missing root, no images in class folders, or ``classes`` with duplicates.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}" if not root.exists() else
                           f"dataset must be a folder of class sub-folders, got a file: {root}")
    wanted = None if classes is None else tuple(classes)
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise ConfigError(f"scan_image_folder: classes lists a class twice: {', '.join(wanted)}",
                          field="CampaignConfig.classes")
    def label_of(parts: tuple[str, ...]) -> str | None:
        if wanted is None:
            return parts[-1] if parts else None
        return next((p for p in reversed(parts) if p in wanted), None)

    found, ignored = _labelled_files(root, label_of)
    if ignored:
        log.info("%d images under %s are outside class folders and were ignored", ignored, root)
    if not found:
        raise DatasetError(f"no images in class folders under {root}: put each class's images in a "
                           f"folder named after the class (at any depth)")
    names = wanted if wanted is not None else tuple(sorted({label for _, label in found}))
    index = {name: i for i, name in enumerate(names)}
    items = sorted((LabeledImage(path, label, False, index[label]) for path, label in found),
                   key=lambda it: it.path.relative_to(root).as_posix())
    return Dataset(root, tuple(items), positive_label="", negative_label="", classes=names)


def limit_items(items: Sequence[LabeledImage], limit: int | None) -> list[LabeledImage]:
    """The first ``limit`` images taken across labels, round-robin (``--limit``).

    Labels take turns in order of first appearance (``mitosis`` before ``normal`` in the usual
    sorted layout), each contributing its next image in the dataset's order, so ``--limit 2``
    takes one image of each label and no label is left out while another has more than one.
    The result keeps the dataset's order. ``None`` or 0: every image.
    """
    if not limit:
        return list(items)
    queues: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        queues.setdefault(it.label, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues.values()):
        for q in queues.values():
            if depth < len(q) and len(chosen) < limit:
                chosen.append(q[depth])
        depth += 1
    return [items[i] for i in sorted(chosen)]


def count_images(root: str | Path) -> int:
    """How many image files lie under ``root`` (any depth): a cheap upper bound of a dataset's size."""
    root = Path(root)
    if not root.is_dir():
        return 0
    return sum(1 for _dir, _subdirs, files in os.walk(root) for f in files
               if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."))


def _labelled_files(root: Path, label_of) -> tuple[list[tuple[Path, str]], int]:
    """Image files under ``root`` (sorted walk) with the label ``label_of(folder parts)`` gives
    their folder; files whose folder has no label are counted, not listed."""
    found: list[tuple[Path, str]] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        label = label_of(Path(dirpath).relative_to(root).parts)
        for fname in sorted(filenames):
            if Path(fname).suffix.lower() not in IMAGE_SUFFIXES or fname.startswith("."):
                continue
            if label is None:
                ignored += 1
            else:
                found.append((Path(dirpath) / fname, label))
    return found, ignored


def is_unlabelled(root: str | Path) -> bool:
    """Whether ``root`` is one image file, or a folder with images directly in it and none in
    sub-folders (a flat folder): images without labels."""
    root = Path(root)
    if root.is_file():
        return root.suffix.lower() in IMAGE_SUFFIXES
    if not root.is_dir():
        return False
    direct = any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                 for p in root.iterdir())
    return direct and count_images(root) == sum(
        1 for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def scan_unlabelled(root: str | Path, classes: Sequence[str] = ()) -> Dataset:
    """Images without labels: a flat folder of images, or one image file.

    Items get empty labels; a campaign labels each image by the model's prediction (binary: the
    side of 0.5; K-class: the most probable class) and records ``labels: "predicted"`` in the
    RUN. For one file the dataset root is its folder, so the image's name is its file name.

    Parameters
    ----------
    classes : sequence of str
        K-class models: the class names in output order (empty for a binary model).

    Raises
    ------
    DatasetError
        Not an image file nor a flat folder of images.
    """
    root = Path(root)
    if not is_unlabelled(root):
        raise DatasetError(f"{root} is neither an image file nor a flat folder of images")
    files = [root] if root.is_file() else sorted(
        p for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    base = root.parent if root.is_file() else root
    items = tuple(LabeledImage(p, "", False, -1) for p in files)
    return Dataset(base, items, positive_label="", negative_label="", classes=tuple(classes))
