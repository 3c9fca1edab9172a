"""``onepixel detect``: the one-pixel attack detector on images, or on a RUN's attacked images."""

from __future__ import annotations

import argparse
from pathlib import Path

from onepixel.cli import options as o
from onepixel.errors import OnepixelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.detection.calibration import DEFAULT_FPR, STATISTICS

    g = parser.add_argument_group("input")
    g.add_argument("images", nargs="*", metavar="IMAGE|RUN",
                   help="image files or folders of images; or one RUN folder (as --run RUN)")
    g.add_argument("--run", default=None, metavar="RUN",
                   help="score a RUN's attacked images (original and adversarial versions)")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="folder for detections.csv, detection.json and roc.png")
    o.add_progress(g)
    g = parser.add_argument_group("detector (docs/defences.md)")
    fpr = g.add_argument("--fpr", type=float, default=DEFAULT_FPR,
                   help="false-positive rate the threshold is calibrated to on clean H&E tiles "
                        "(default: %(default)s)")
    fpr.field = "fpr"  # calibrate()'s parameter, as its errors name it
    g.add_argument("--statistic", choices=STATISTICS, default=STATISTICS[0],
                   help="per-pixel anomaly: h against the 8 neighbours' mean, or residual "
                        "against their median (default: %(default)s)")
    g.add_argument("--threshold", type=float, default=None,
                   help="flag above this statistic instead of calibrating")


def _run_folder(args: argparse.Namespace) -> str | None:
    """The RUN to score: ``--run RUN``, or a RUN folder given as the only IMAGE."""
    from onepixel.cli.inputs import run_folders

    runs = run_folders(args.images)
    if runs and (len(args.images) > 1 or args.run):
        raise OnepixelError(f"{runs[0]} is a RUN folder: give one RUN alone (`onepixel detect "
                            f"RUN --out DIR`), not with images or another RUN")
    if runs:
        return str(runs[0])
    if bool(args.run) == bool(args.images):
        raise OnepixelError("give IMAGE... or --run RUN (a RUN folder alone as IMAGE works too)")
    return args.run


def run(args: argparse.Namespace) -> int:
    from onepixel.detection.calibration import Calibration, calibrate_on_clean_tiles
    from onepixel.detection.scan import detect_images, detect_run, write_detections

    run_dir = _run_folder(args)
    heldout = None
    if args.threshold is not None:
        calibration = Calibration.fixed(args.threshold, args.statistic)
    else:
        calibration, heldout = calibrate_on_clean_tiles(args.fpr, args.statistic, args.assets)
    progress = not args.no_progress
    if run_dir:
        det = detect_run(run_dir, calibration, progress=progress)
    else:
        from onepixel.datasets.images import expand_image_paths

        det = detect_images(expand_image_paths(args.images), calibration, progress=progress)
    info = write_detections(args.out, det, heldout)
    print(f"threshold {calibration.statistic} > {calibration.threshold:.4f} (calibrated FPR "
          f"{calibration.target_fpr:g}; held-out clean tiles flagged: {calibration.heldout_fpr:.3f} "
          f"of {calibration.n_heldout})")
    if run_dir:
        print(f"flagged {info['tpr_successful']:.1%} of {info['n_successful']} successful "
              f"adversarial images, {info['tpr_all_adversarial']:.1%} of {info['n_adversarial']} "
              f"adversarial, {info['fpr_originals']:.1%} of {info['n_originals']} originals")
    else:
        print(f"flagged {int(det.flagged.sum())} of {len(det.flagged)} images")
    print(f"wrote {Path(args.out) / 'detections.csv'}")
    return 0
