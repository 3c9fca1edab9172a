"""``onepixel evaluate DATASET -o DIR``: rs, then DE, then the exhaustive corner scan, each on
the images still robust (:mod:`onepixel.evaluation`). The model options (``--model``,
``--device``, ``--defence`` ...) are added by the main parser."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from onepixel.evaluation.config import METHODS, EvaluateConfig


def _default(name: str):
    return next(f.default for f in dataclasses.fields(EvaluateConfig) if f.name == name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's own options (light: no torch)."""
    p.add_argument("dataset", help="labelled folder: 'mitosis'/'normal' for a binary model, class "
                                   "folders for a K-class one (as `onepixel attack`)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="evaluation folder: evaluation.csv, evaluation.json, curves.csv/png and "
                        "one resumable RUN per method under runs/")
    g = p.add_argument_group("the ensemble (docs/evaluate.md)")
    g.add_argument("--max-queries", type=int, default=_default("max_queries"), metavar="N",
                   help="queries per image for rs and for DE (population 100) "
                        "(default: %(default)s)")
    g.add_argument("--methods", default=",".join(METHODS), metavar="M,M,...",
                   help="which of rs,de,scan to run, in that order (default: %(default)s)")
    g.add_argument("--scan-max-queries", type=int, default=_default("scan_max_queries"),
                   metavar="N",
                   help="run the exhaustive scan only if it fits N queries per image (it costs "
                        "H x W x 8 plus refinement; default: always)")
    g.add_argument("--pixels", type=int, default=_default("pixels"),
                   help="pixels per attack (the scan runs only for 1; default: %(default)s)")
    g.add_argument("--seed", type=int, default=_default("seed"), help="seed of rs and DE")
    g.add_argument("--positive-label", default=_default("positive_label"))
    g.add_argument("--negative-label", default=_default("negative_label"))
    g.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                   help="K-class models: class names in the model's output order")
    g.add_argument("--target", default=None, metavar="CLASS", help="K-class models: targeted")
    g.add_argument("--limit", type=int, default=None, help="only the first N images")
    g.add_argument("--batch-images", type=int, default=None, help="images attacked at once")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from onepixel.evaluation.runner import evaluate
    from onepixel.models.options import ModelOptions

    options = ModelOptions(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                           engine=args.engine, output=args.output, preprocess=args.preprocess,
                           layout=args.layout, positive_index=args.positive_index,
                           assets_dir=args.assets)
    classifier = None
    if args.defence:
        from onepixel.scoring.policy import load_scoring_classifier

        # The defended pipeline is the black box every method queries.
        classifier = load_scoring_classifier(args.model, options, args.defence)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes \
        else None
    cfg = EvaluateConfig(
        dataset=Path(args.dataset), out=Path(args.out), model=args.model, model_options=options,
        max_queries=args.max_queries,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        scan_max_queries=args.scan_max_queries, pixels=args.pixels, seed=args.seed,
        positive_label=args.positive_label, negative_label=args.negative_label, classes=classes,
        target=args.target, limit=args.limit, batch_images=args.batch_images,
        progress=not args.no_progress)
    summary = evaluate(cfg, classifier=classifier)
    print(summary.headline())
    for method, m in summary.per_method.items():
        if m["ran"]:
            print(f"  {method}: broke {m['broken']} of {m['attacked']} attacked"
                  + (f", median {m['median_queries']:,.0f} queries per success"
                     if m["broken"] else ""))
        else:
            print(f"  {method}: not run (nothing left robust, or skipped by budget)")
    print(f"rows in {args.out}/evaluation.csv, curves in {args.out}/curves.png")
    return 0
