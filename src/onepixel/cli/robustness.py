"""``onepixel robustness DATASET -o DIR``: each defence's clean cost and the attack through it."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o

RESUME = "run the same command again to continue {out}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.attack.config import CampaignConfig
    from onepixel.robustness.config import RobustnessConfig

    g = parser.add_argument_group("input")
    g.add_argument("dataset", help="folder with 'mitosis'/'normal' sub-folders (at any depth)")
    o.add_labels(g)
    o.add_limit(g, RobustnessConfig)
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="robustness.csv, robustness.json, robustness.png and runs/<defence>/")
    o.add_progress(g)
    g = parser.add_argument_group("defences compared (docs/defences.md)")
    # --defence (one chain the model is scored through) is not an option here: the command
    # compares settings, each of which may be a chain ('+' inside one setting).
    compare = g.add_argument(
        "--compare", default=",".join(o.field_default(RobustnessConfig, "defences")),
        metavar="D,D,...",
        help="the defence settings to compare, 'none' the undefended baseline; a chain inside one "
             "setting with '+' (repair+median3); default: %(default)s")
    compare.field, compare.shared = "RobustnessConfig.defences", None
    o.deprecated(g, "--defences", compare)
    g = o.add_de_options(parser, full=False, title="the attack (the same for every defence)")
    o.add(g, "--batch-images", type=int, field=(CampaignConfig, "batch_images"),
          help="images attacked at once (default: all, up to 256 on CPU and 2048 on CUDA)")
    o.add_model_options(parser, defence=False)


def run(args: argparse.Namespace) -> int:
    from onepixel.attack.config import AttackConfig
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.robustness.config import RobustnessConfig, parse_defences
    from onepixel.robustness.runner import format_robustness, run_robustness

    refuse_run_folders([args.dataset], "robustness")
    config = RobustnessConfig(dataset=Path(args.dataset), out=Path(args.out),
                              defences=parse_defences(args.compare), model=args.model,
                              model_options=o.model_options(args),
                              attack=AttackConfig(de=o.de_config(args, full=False)),
                              limit=args.limit, batch_images=args.batch_images,
                              positive_label=args.positive_label,
                              negative_label=args.negative_label, progress=not args.no_progress)
    rows = run_robustness(config)
    print(format_robustness(rows))
    print(f"table in {args.out}/robustness.csv, figure in {args.out}/robustness.png")
    return 0
