"""``onepixel evaluate DATASET -o DIR``: rs, then DE, then the exhaustive corner scan, each on
the images still robust (:mod:`onepixel.evaluation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.evaluation.config import EvaluateConfig

    g = parser.add_argument_group("input")
    g.add_argument("dataset", metavar="DATASET",
                   help="labelled folder ('mitosis'/'normal' for a binary model, class folders "
                        "for a K-class one), or a flat folder / image file (labels = the model's "
                        "predictions), as `onepixel attack`")
    o.add_labels(g)
    o.add_limit(g, EvaluateConfig)
    o.add(g, "--batch-images", type=int, field=(EvaluateConfig, "batch_images"),
          help="images attacked at once (default: as `onepixel attack`)")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="evaluation folder: evaluation.csv, evaluation.json, curves.csv/png and one "
                   "resumable RUN per method under runs/")
    o.add_progress(g)
    g = parser.add_argument_group("the ensemble (docs/evaluate.md)")
    o.add(g, "--max-queries", type=int, field=(EvaluateConfig, "max_queries"), metavar="N",
          help="queries per image for rs and for DE (default: %(default)s)")
    o.add(g, "--methods", type=o.name_list, field=(EvaluateConfig, "methods"), metavar="M,M,...",
          help="which of rs,de,scan to run, in that order (default: rs,de,scan)")
    o.add(g, "--scan-max-queries", type=int, field=(EvaluateConfig, "scan_max_queries"),
          metavar="N", help="run the exhaustive scan only if it fits N queries per image (it "
                            "costs H x W x 8 plus refinement; default: always)")
    o.add(g, "--pixels", type=int, field=(EvaluateConfig, "pixels"),
          help="pixels per attack (the scan runs only for 1; default: %(default)s)")
    o.add_seed(g, EvaluateConfig, what=" of rs and DE")
    o.add_classes(parser.add_argument_group("multi-class models (class folders, ImageFolder layout)"))
    o.add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.evaluation.config import EvaluateConfig
    from onepixel.evaluation.runner import evaluate

    refuse_run_folders([args.dataset], "evaluate")
    options = o.model_options(args)
    classifier = None
    if args.defence:
        from onepixel.scoring.policy import load_scoring_classifier

        # The defended pipeline is the black box every method queries.
        classifier = load_scoring_classifier(args.model, options, args.defence)
    cfg = EvaluateConfig(
        dataset=Path(args.dataset), out=Path(args.out), model=args.model, model_options=options,
        max_queries=args.max_queries, methods=tuple(args.methods),
        scan_max_queries=args.scan_max_queries, pixels=args.pixels, seed=args.seed,
        positive_label=args.positive_label, negative_label=args.negative_label,
        classes=args.classes, target=args.target, limit=args.limit,
        batch_images=args.batch_images, progress=not args.no_progress)
    summary = evaluate(cfg, classifier=classifier)
    print(summary.headline())
    for method, m in summary.per_method.items():
        if m["ran"]:
            print(f"  {method}: broke {m['broken']} of {m['attacked']} attacked"
                  + (f", median {m['median_queries']:,.0f} queries per success"
                     if m["broken"] else ""))
        else:
            print(f"  {method}: not run (nothing left robust, or skipped by budget)")
    print(f"results in {args.out}/evaluation.csv, curves in {args.out}/curves.png")
    return 0
