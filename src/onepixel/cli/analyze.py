"""``onepixel analyze RUN``: the papers' tables and figures of a RUN, into ``RUN/analysis``.

No ``-o/--out``: the analysis is part of its RUN (``onepixel report`` reads ``RUN/analysis``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib needed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes reading the original images (default: one per CPU, at "
                             "most 8)")


def run(args: argparse.Namespace) -> int:
    from onepixel.report import analyze_run, format_main_tables

    result = analyze_run(args.run, figures=not args.no_figures, workers=args.workers)
    print(format_main_tables(result))
    return 0
