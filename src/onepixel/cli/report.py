"""``onepixel report RUN``: the self-contained HTML report of a RUN."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("input")
    g.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    g.add_argument("--audit", default=None, metavar="DIR",
                   help="an `onepixel audit` folder: adds 'How strong was the attack?' "
                        "(default: RUN/audit when it holds audit.csv)")
    g.add_argument("--robustness", default=None, metavar="DIR",
                   help="an `onepixel robustness` folder (robustness.csv): adds 'Defences'")
    g.add_argument("--pareto", default=None, metavar="DIR",
                   help="an `onepixel pareto` folder: adds 'How visible must the pixel be?' "
                        "(default: RUN/pareto when it holds summary.json and front.csv)")
    g.add_argument("--evaluation", default=None, metavar="DIR",
                   help="an `onepixel evaluate` folder: adds 'Robust accuracy under one-pixel "
                        "attack'")
    g = o.output_group(parser)
    o.add_out(g, metavar="HTML", help="the report file (default: RUN/report.html)")
    g.add_argument("--reanalyze", action="store_true",
                   help="recompute RUN/analysis even if it is up to date")


def run(args: argparse.Namespace) -> int:
    from onepixel.report import write_report

    # write_report logs "wrote PATH (size)": said once.
    write_report(args.run, args.out, reanalyze=args.reanalyze, audit=args.audit,
                 robustness=args.robustness, pareto=args.pareto, evaluation=args.evaluation)
    return 0
