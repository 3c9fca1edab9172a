"""``onepixel attack DATASET -o RUN``: a one-pixel campaign over a dataset (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o

#: What ``main()`` says after Ctrl-C.
RESUME = "run the same command again to continue {out}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.attack.config import METHODS, AttackConfig, CampaignConfig

    parser.add_argument("dataset", help="folder with 'mitosis'/'normal' sub-folders (at any depth), "
                                        "or class folders for a K-class model")
    g = o.output_group(parser)
    o.add_out(g, metavar="RUN", required=True, help="RUN folder (resumed if it exists)")
    o.add_progress(g)
    o.add_de_options(parser)
    g = parser.add_argument_group("campaign")
    o.add_limit(g)
    o.add(g, "--batch-images", type=int, field=(CampaignConfig, "batch_images"),
          help="images attacked at once (default: all, up to 256 on CPU and 2048 on CUDA)")
    o.add_evaluator(g, field=(CampaignConfig, "evaluator"),
                    help="how candidates are scored: incremental recomputes only what the pixel "
                         "changes (Keras/built-in models); auto = incremental on CPU with "
                         "--updating deferred, else full")
    o.add_labels(g)
    o.add(g, "--skip-positive-below", type=float, field=(AttackConfig, "skip_positive_below"),
          help="positives scoring below this are ambiguous, not attacked (default: %(default)s)")
    o.add(g, "--skip-negative-above", type=float, field=(AttackConfig, "skip_negative_above"),
          help="negatives scoring above this are ambiguous, not attacked (default: %(default)s)")
    o.add(g, "--pixels", type=int, field=(AttackConfig, "pixels"),
          help="pixels changed per attack (Su et al. use 1, 3, 5; default: %(default)s)")
    o.add(g, "--stop-on-success", action="store_true", field=(AttackConfig, "stop_on_success"),
          help="stop each image's evolution once its goal is met (torchattacks' and ART's "
               "behaviour: fewer queries); the papers ran every generation")
    o.add(g, "--max-colour-diff", type=float, field=(AttackConfig, "max_colour_diff"), metavar="H",
          help="colour budget: keep every attack pixel's h (the chromatic paper's RMSE in [0, 1] "
               "between its colour and its neighbours' mean) <= H; candidates are repaired into "
               "the budget before scoring (default: no budget)")
    g = parser.add_argument_group("attack method (docs/attack.md)")
    o.add(g, "--method", choices=METHODS, field=(AttackConfig, "method"),
          help="de: the papers' differential evolution; scan: the audit's exhaustive colour-grid "
               "scan + integer refinement; rs: query-efficient random search with a campaign "
               "prior (default: %(default)s)")
    o.add(g, "--max-queries", type=int, field=(AttackConfig, "max_queries"), metavar="N",
          help="--method scan / rs: queries per image (scan: scan, refinement and re-scoring, "
               "default no cap; rs: default 10000)")
    o.add(g, "--labels-only", action="store_true", field=(AttackConfig, "labels_only"),
          help="--method rs: the search sees only the predicted class (a service that answers "
               "with labels) and stops at the first flip")
    o.add(g, "--scan-step", type=int, field=(AttackConfig, "scan_step"), metavar="S",
          help="--method scan: colour step of the scan (default: the finest grid that fits "
               "--max-queries, else 85: 64 colours)")
    o.add_classes(parser.add_argument_group("multi-class models (class folders, ImageFolder layout)"))
    o.add_model_options(parser)
    o.add_executor_options(parser)


def run(args: argparse.Namespace) -> int:
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.runs.summary import format_summary

    refuse_run_folders([args.dataset], "attack")
    de = o.de_config(args)
    attack = AttackConfig(de=de, skip_positive_below=args.skip_positive_below,
                          skip_negative_above=args.skip_negative_above, pixels=args.pixels,
                          stop_on_success=args.stop_on_success,
                          max_colour_diff=args.max_colour_diff, method=args.method,
                          max_queries=args.max_queries, scan_step=args.scan_step,
                          labels_only=args.labels_only)
    config = CampaignConfig(dataset=Path(args.dataset), out=Path(args.out), model=args.model,
                            model_options=o.model_options(args), attack=attack,
                            batch_images=args.batch_images, limit=args.limit,
                            positive_label=args.positive_label,
                            negative_label=args.negative_label, progress=not args.no_progress,
                            evaluator=args.evaluator, classes=args.classes, target=args.target)
    executor = o.executor_config(args)
    # run_campaign builds the search from AttackConfig.method on whichever executor runs it.
    classifier = None
    if args.defence and attack.method != "scan":
        from onepixel.scoring.policy import load_attack_evaluator

        # The defended pipeline is the black box the attack queries.
        classifier = load_attack_evaluator(args.model, config.model_options, args.evaluator,
                                           de.updating, args.pixels, defence=args.defence).classifier
    scan = None
    if attack.method == "scan":
        from onepixel.audit.method import ScanOptions
        from onepixel.scoring.policy import load_confmap_classifier

        # Loaded for the scan's exact fast path (brute force behind a --defence).
        classifier = load_confmap_classifier(args.model, config.model_options, defence=args.defence)
        scan = ScanOptions()
        scan.check(classifier.input_shape, attack)  # a budget too small: before the RUN exists
    if executor.kind == "ray":
        from onepixel.scaleout import RayExecutor

        # Ray workers build the same search (the scan with these options, on their own model).
        runner = RayExecutor(executor, scan=scan)
    elif scan is not None:
        from onepixel.audit.method import ScanExecutor

        runner = ScanExecutor(scan.top, scan.rounds, scan.pixels)
    else:
        runner = None
    summary = run_campaign(config, classifier=classifier, executor=runner)
    print(format_summary(summary))
    print(f"results in {args.out}/attacks.csv, summary in {args.out}/summary.json")
    return 0
