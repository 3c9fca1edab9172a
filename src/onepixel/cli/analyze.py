"""``onepixel analyze RUN``: the papers' tables and figures of a RUN, into ``RUN/analysis``.

No ``-o/--out``: the analysis is part of its RUN (``onepixel report`` reads ``RUN/analysis``).
"""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib needed)")
    processes = parser.add_argument(
        "--processes", type=int, default=None,
        help="processes reading the original images (default: one per CPU, at most 8)")
    # --workers means Ray actors in the commands that scale out.
    o.deprecated(parser, "--workers", processes)


def run(args: argparse.Namespace) -> int:
    from onepixel.report import analyze_run, format_main_tables

    result = analyze_run(args.run, figures=not args.no_figures, workers=args.processes)
    print(format_main_tables(result))
    return 0
