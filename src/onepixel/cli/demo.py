"""``onepixel demo``: the whole study on the built-in model and real images."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.demo import DemoConfig
    from onepixel.optimize.de import DEConfig

    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", default=str(o.field_default(DemoConfig, "out")),
              help="where the dataset, RUN and report go (default: %(default)s)")
    o.add_progress(g)
    g = parser.add_argument_group("study")
    o.add(g, "--n-normal", type=int, field=(DemoConfig, "n_normal"),
          help="normal images in the demo dataset (default: %(default)s)")
    o.add_seed(g, DEConfig, what=" of the attack")
    o.add(g, "--confmap-step", type=int, field=(DemoConfig, "confmap_step"),
          help="confidence-map colour step (default: 85 on CPU, 5 on a GPU)")
    g.add_argument("--no-confmaps", action="store_true", help="skip the confidence maps")
    # The demo studies the undefended model: no --defence (onepixel attack has it).
    o.add_model_options(parser, defence=False)


def run(args: argparse.Namespace) -> int:
    from onepixel.attack.config import AttackConfig
    from onepixel.demo import DemoConfig, run_demo
    from onepixel.optimize.de import DEConfig
    from onepixel.runs.summary import format_summary

    attack = AttackConfig(de=DEConfig(seed=args.seed))
    result = run_demo(DemoConfig(out=Path(args.out), model=args.model,
                                 model_options=o.model_options(args), n_normal=args.n_normal,
                                 confmap_step=args.confmap_step, confmaps=not args.no_confmaps,
                                 progress=not args.no_progress, attack=attack))
    print(format_summary(result.summary))
    print("\nHeadlines:")
    for line in result.headlines:
        print(f"  - {line}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"\nTime: {timing}")
    print(f"Report: {result.report.resolve()}")
    return 0
