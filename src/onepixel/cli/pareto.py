"""``onepixel pareto``: per image, the (score, visibility h) Pareto front of one-pixel attacks."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o
from onepixel.errors import OnepixelError

RESUME = "run the same command again to resume {out}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.attack.config import CampaignConfig
    from onepixel.detection.calibration import DEFAULT_FPR
    from onepixel.pareto.config import ParetoConfig

    g = parser.add_argument_group("input")
    g.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    g.add_argument("--dataset", default=None, metavar="DATASET",
                   help="a dataset instead of IMAGE...: 'mitosis'/'normal' sub-folders for a "
                        "binary model, class folders (ImageFolder) for a K-class one")
    o.add_limit(g)
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="front.csv, figures/, budget_curve.csv/.png, summary.json")
    o.add_progress(g)
    g = parser.add_argument_group("search (NSGA-II, docs/pareto.md)")
    pop, gens = o.add_search_size(g, (ParetoConfig, "population"), (ParetoConfig, "generations"),
                                  what="NSGA-II ")
    o.deprecated(g, "--pop", pop)
    o.deprecated(g, "--gens", gens)
    o.add_seed(g, ParetoConfig)
    o.add_evaluator(g, field=(CampaignConfig, "evaluator"),
                    help="how candidates are scored (as for attack; default: %(default)s)")
    g.add_argument("--campaign", default=None, metavar="RUN",
                   help="a one-pixel campaign of the same images (no colour budget): compare its "
                        "pixel with each front's lowest-score end (summary.json 'campaign')")
    g.add_argument("--campaign-seed", action="store_true",
                   help="also put the --campaign pixel into each search's first population, so "
                        "the front is at least as good as the campaign")
    o.add_classes(parser.add_argument_group("multi-class models"),
                  default_help="the dataset's class folder names, sorted; for IMAGE... the indices")
    # run_pareto's errors name its arguments: shown to the user as the flags that fill them.
    for action in parser._actions:
        for flag, name in (("--target", "target"), ("--classes", "classes"), ("--dataset", "dataset"),
                           ("--campaign", "campaign"), ("--campaign-seed", "campaign_seed")):
            if flag in action.option_strings:
                action.field = f"run_pareto({name})"
    g = parser.add_argument_group("detector")
    fpr = g.add_argument("--detector-fpr", type=float, default=DEFAULT_FPR,
                   help="run the detector, calibrated on clean H&E tiles to this false-positive "
                        "rate, on the successful front points; RGB models only (default: "
                        "%(default)s)")
    fpr.field = "fpr"  # calibrate()'s parameter, as its errors name it
    g.add_argument("--no-detector", action="store_true", help="skip the detector")
    o.add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.pareto.config import ParetoConfig
    from onepixel.pareto.runner import Detector, run_pareto

    if bool(args.images) == (args.dataset is not None):
        raise OnepixelError("give IMAGE... or --dataset DATASET (one of them)")
    refuse_run_folders([*args.images, args.dataset], "pareto")

    def detector() -> Detector:
        # Called by run_pareto only where the detector applies (RGB models).
        from onepixel.detection.calibration import calibrate, image_statistic

        calibration = calibrate(args.detector_fpr, "h", assets_dir=args.assets)
        return Detector(lambda images: calibration.flag(image_statistic(images, "h")),
                        calibration.to_dict())

    config = ParetoConfig(population=args.popsize, generations=args.maxiter, seed=args.seed)
    summary = run_pareto(args.out, images=args.images, dataset=args.dataset, config=config,
                         model=args.model, model_options=o.model_options(args), defence=args.defence,
                         evaluator_kind=args.evaluator, limit=args.limit,
                         detector=None if args.no_detector else detector,
                         progress=not args.no_progress, campaign=args.campaign,
                         campaign_seed=args.campaign_seed, target=args.target, classes=args.classes)
    for im in summary["images"]:
        low = im["lowest_flip_h"]
        about = f" p[{im['goal_class']}]" if "goal_class" in im else ""
        print(f"{im['image']} ({im['goal']}{about}, {im['original_score']:.4g}): front of "
              f"{im['front_size']}, best {im['best_score']:.4g}; lowest flipping h "
              f"{'none' if low is None else f'{low:.3f}'}")
    if summary.get("detector_skipped"):
        print(summary["detector_skipped"])
    det = summary.get("detector")
    if det and det["successful_points"]:
        print(f"detector flags {det['successful_points_flagged']:.1%} of "
              f"{det['successful_points']} successful front points, "
              f"{det['stealthiest_success_flagged']:.1%} of the stealthiest per image, "
              f"{det['originals_flagged']:.1%} of the originals")
    ref = summary.get("campaign")
    if ref:
        print(f"front at least as good as the campaign's pixel on {ref['front_at_least_as_good']} "
              f"of {ref['compared']} images ({'seeded' if ref['seeded'] else 'not seeded'})")
    print(f"wrote {Path(args.out) / 'front.csv'} and {Path(args.out) / 'summary.json'}")
    return 0
