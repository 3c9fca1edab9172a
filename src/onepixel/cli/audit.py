"""``onepixel audit RUN -o DIR``: how strong was the attack? A stronger search per image."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o

RESUME = "run the same command again to resume the audit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.audit.config import AuditConfig

    g = parser.add_argument_group("input")
    g.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    sel = g.add_mutually_exclusive_group()
    o.add_run_images(sel, help="only these attacked images (the 'image' column, file name or stem)")
    sel.add_argument("--failed", action="store_true", help="only the images DE failed on")
    sel.add_argument("--early-converged", action="store_true",
                     help="only the images whose DE converged early")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="output folder: audit.csv, exact.csv, summary.json (rerun to resume)")
    o.add_progress(g)
    g = parser.add_argument_group("search (deterministic: an exhaustive scan, then refinement)")
    o.add(g, "--step", type=int, field=(AuditConfig, "step"),
          help="colour step of the exhaustive scan (default %(default)s: 64 colours)")
    o.add(g, "--top", type=int, field=(AuditConfig, "top"),
          help="refine around this many best scan pixels, plus DE's (default %(default)s)")
    o.add(g, "--rounds", type=int, field=(AuditConfig, "rounds"),
          help="at most this many refinement rounds (default %(default)s)")
    o.add(g, "--exact-positions", default="", metavar="SPEC",
          help="brute force all 16,777,216 colours at 'X,Y;...', 'top:N' (the scan's N best "
               "positions) and/or 'de' (DE's position): minutes per position on CPU")
    o.add_model_options(parser, model_default=None,
                        model_help="the model (default: the RUN's own); as for `onepixel attack`")
    o.add_executor_options(parser)  # --executor ray: each image's scan on Ray actors


def run(args: argparse.Namespace) -> int:
    from onepixel.audit import AuditConfig, audit_run, parse_exact_positions

    selection = "failed" if args.failed else "early-converged" if args.early_converged else "all"
    config = AuditConfig(step=args.step, top=args.top, rounds=args.rounds,
                         exact=parse_exact_positions(args.exact_positions), selection=selection,
                         images=args.images, progress=not args.no_progress)
    executor = o.executor_config(args)
    mapper = None
    if executor.kind == "ray":
        from onepixel.scaleout import RayMapper

        mapper = RayMapper(executor)
    summary = audit_run(args.run, args.out, config, model_options=o.model_options(args),
                        model=args.model, defence=args.defence, mapper=mapper)
    for goal, g in summary["goals"].items():
        print(f"{goal}: {g['vulnerable']} of {g['audited']} vulnerable (DE: {g['de_success']}); "
              f"early-converged: {g['early_converged_vulnerable']} of {g['early_converged']} "
              f"vulnerable; median best score {g['median_best_score']:.4g} (DE "
              f"{g['median_de_score']:.4g})")
    print(f"results in {args.out}/audit.csv, summary in {args.out}/summary.json")
    return 0
