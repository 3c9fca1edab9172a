"""``onepixel predict IMAGE...``: score images, a CSV table on stdout (and in ``-o FILE``)."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onepixel.cli import options as o

log = logging.getLogger("onepixel")

#: Images loaded and scored per step of the progress bar (a few MB of pixels at 64x64).
CHUNK = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    g = o.output_group(parser)
    o.add_out(g, metavar="CSV", help="also write the scores here")
    o.add_progress(g)
    o.add_model_options(parser)


def predict_table(model_spec: str, options, images: Sequence[Path], defence: str | None = None,
                  progress: bool = True) -> tuple[tuple[str, ...], list]:
    """The predict table: ``image,score`` for a binary model; ``image,class,p0,...,pK-1`` (the
    predicted class index and every class probability) for a K-class model."""
    from onepixel.datasets.images import load_image, load_readable_images
    from onepixel.errors import ImageError
    from onepixel.progress import progress_bar
    from onepixel.runs.schema import record_text
    from onepixel.scoring.policy import load_scoring_classifier

    # A model that declares no size takes the first image's.
    classifier = load_scoring_classifier(
        model_spec, options, defence,
        image_shape=lambda: load_image(images[0]).shape)
    parts, kept, unreadable = [], [], []
    with progress_bar(total=len(images), unit="image", disable=not progress or len(images) <= CHUNK,
                      desc="predict") as bar:
        for start in range(0, len(images), CHUNK):
            chunk = images[start:start + CHUNK]
            # Bad files are skipped with a logged reason, as `attack` skips them.
            try:
                readable, batch, _skipped = load_readable_images(chunk, classifier.input_shape)
            except ImageError as exc:  # none of this chunk: the others may still be readable
                readable = []
                unreadable.append(exc)
            if readable:
                parts.append(classifier.scores(batch))
                kept.extend(readable)
            bar.update(len(chunk))
    if not parts:
        raise unreadable[0] if len(unreadable) == 1 else ImageError(
            f"none of the {len(images)} image(s) could be read (see the warnings above)")
    scores = np.concatenate(parts)
    # File names that are not UTF-8 are written with \xNN escapes, as RUN files write them.
    names = [record_text(str(p)) for p in kept]
    if scores.ndim == 1:
        return ("image", "score"), [(n, f"{s:.10g}") for n, s in zip(names, scores, strict=True)]
    header = ("image", "class", *(f"p{k}" for k in range(scores.shape[1])))
    return header, [(n, int(np.argmax(s)), *(f"{v:.10g}" for v in s))
                    for n, s in zip(names, scores, strict=True)]


def run(args: argparse.Namespace) -> int:
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.datasets.images import expand_image_paths
    from onepixel.fileio import write_csv_atomic

    refuse_run_folders(args.images, "predict")
    header, rows = predict_table(args.model, o.model_options(args), expand_image_paths(args.images),
                                 args.defence, progress=not args.no_progress)
    if args.out:
        write_csv_atomic(Path(args.out), header, rows)
        log.info("wrote %d scores to %s", len(rows), args.out)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    sys.stdout.write(buf.getvalue())
    return 0
