"""Command line: argument parsing only; every command is a thin call into the library."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onepixel import __version__
from onepixel.errors import OnepixelError

log = logging.getLogger("onepixel")


def default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls``: each option default is written once,
    in the config dataclass the command builds."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def _mutation(text: str) -> float | tuple[float, float]:
    """``--mutation``: one factor, or ``MIN,MAX`` for dithering."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected a number or MIN,MAX, got {text!r}")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from onepixel.models.options import BUILTIN, ENGINES, ModelOptions

    g = p.add_argument_group("model")
    g.add_argument("--model", default=BUILTIN,
                   help=f"{BUILTIN} (built-in), *.h5/*.hdf5 (Keras), *.onnx, *.pt/*.ts "
                        "(TorchScript), http://HOST:PORT (a MAX-API service; key from "
                        "$ONEPIXEL_API_KEY); default: %(default)s")
    g.add_argument("--device", default=default(ModelOptions, "device"),
                   help="auto, cpu or cuda[:N] (default: %(default)s)")
    g.add_argument("--engine", default=default(ModelOptions, "engine"), choices=ENGINES,
                   help="engine for Keras/built-in models; auto = ONNX Runtime on CPU, torch on CUDA")
    g.add_argument("--dtype", default=default(ModelOptions, "dtype"),
                   help="torch compute dtype: float32, bfloat16, float16 (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=default(ModelOptions, "batch_size"),
                   help="images per model call (default: 32 on CPU, 2048 on CUDA)")
    g.add_argument("--output", choices=["logit", "probability"], default=None,
                   help="what the model returns (default: from the model)")
    g.add_argument("--preprocess", choices=["max", "unit", "raw"], default=None,
                   help="input scaling: max=(x/255-0.5)*2, unit=x/255, raw=x")
    g.add_argument("--layout", choices=["nhwc", "nchw"], default=None, help="input tensor layout")
    g.add_argument("--positive-index", type=int, default=None,
                   help="output column of the positive class for multi-class models")
    g.add_argument("--defence", default=None, metavar="NAME[:ARG][,NAME...]",
                   help="score through defences, applied left to right: median3, median5, "
                        "blur:SIGMA, repair[:H], jpeg:Q, bits:N (docs/defences.md)")


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    from onepixel.scaleout.config import EXECUTORS, ExecutorConfig

    g = p.add_argument_group("scale-out (docs/scale-out.md)")
    g.add_argument("--executor", choices=EXECUTORS, default=default(ExecutorConfig, "kind"),
                   help="local: this process; ray: actors on a Ray runtime (pip install "
                        "'onepixel[ray]'); default: %(default)s")
    g.add_argument("--ray-address", default=default(ExecutorConfig, "address"), metavar="ADDRESS",
                   help="none: start a local Ray runtime; auto: the running cluster; "
                        "ray://HOST:PORT: a remote one")
    g.add_argument("--workers", type=int, default=default(ExecutorConfig, "workers"),
                   help="Ray actors, each holding the model (default: one per CPU, or per "
                        "--gpus-per-worker GPUs)")
    g.add_argument("--cpus-per-worker", type=int, default=default(ExecutorConfig, "cpus_per_worker"),
                   help="CPUs (model threads) per actor (default: %(default)s)")
    g.add_argument("--gpus-per-worker", type=float, default=default(ExecutorConfig, "gpus_per_worker"),
                   help="GPUs per actor, e.g. 1 or 0.5 (default: %(default)s: CPU actors)")


def _executor_config(args: argparse.Namespace):
    from onepixel.scaleout.config import ExecutorConfig

    return ExecutorConfig(kind=args.executor, address=args.ray_address, workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)


def _model_options(args: argparse.Namespace):
    from onepixel.models.options import ModelOptions

    return ModelOptions(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                        engine=args.engine, output=args.output, preprocess=args.preprocess,
                        layout=args.layout, positive_index=args.positive_index,
                        assets_dir=args.assets)


def build_parser() -> argparse.ArgumentParser:
    """The ``onepixel`` parser. Defaults come from the config dataclasses (light modules: no
    torch, no web framework is imported to build it)."""
    from onepixel.attack.config import METHODS as ATTACK_METHODS
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.confmap.config import METHODS, ConfmapConfig
    from onepixel.datasets.tiles import TileConfig
    from onepixel.datasets.tupac import TupacConfig
    from onepixel.demo import DemoConfig
    from onepixel.optimize.de import INITS, STRATEGIES, DEConfig
    from onepixel.scoring.options import EVALUATORS

    parser = argparse.ArgumentParser(
        prog="onepixel",
        description="One-pixel attack robustness assessment for image classifiers.")
    parser.add_argument("--version", action="version", version=f"onepixel {__version__}")
    parser.add_argument("--assets", default=None, metavar="DIR",
                        help="folder with local copies of the assets (else $ONEPIXEL_ASSETS, "
                             "the user cache, then download)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="score images: columns image,score")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("-o", "--out", default=None, metavar="CSV", help="also write the scores here")
    _add_model_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attack", help="one-pixel attack every image of a dataset (resumable)")
    p.add_argument("dataset", help="folder with 'mitosis'/'normal' sub-folders (at any depth)")
    p.add_argument("--out", required=True, metavar="RUN", help="RUN folder (resumed if it exists)")
    g = p.add_argument_group("differential evolution (defaults: the papers')")
    g.add_argument("--popsize", type=int, default=default(DEConfig, "population"),
                   help="population size in total (default: %(default)s)")
    g.add_argument("--maxiter", type=int, default=default(DEConfig, "maxiter"),
                   help="maximum generations (default: %(default)s)")
    g.add_argument("--mutation", type=_mutation, default=default(DEConfig, "mutation"),
                   metavar="F|MIN,MAX",
                   help="mutation factor F, or MIN,MAX for dithering: F drawn in [MIN, MAX) each "
                        "generation (default: %(default)s)")
    g.add_argument("--strategy", choices=STRATEGIES, default=default(DEConfig, "strategy"),
                   help="DE strategy, as scipy's (default: %(default)s)")
    g.add_argument("--init", choices=INITS, default=default(DEConfig, "init"),
                   help="initial population, as scipy's (default: %(default)s)")
    g.add_argument("--recombination", type=float, default=default(DEConfig, "recombination"),
                   help="crossover probability CR (default: %(default)s)")
    g.add_argument("--tol", type=float, default=default(DEConfig, "tol"),
                   help="relative convergence tolerance (default: %(default)s)")
    g.add_argument("--atol", type=float, default=default(DEConfig, "atol"),
                   help="absolute convergence tolerance (default: %(default)s)")
    g.add_argument("--updating", choices=["immediate", "deferred"],
                   default=default(DEConfig, "updating"),
                   help="scipy's updating mode (immediate is scipy's default and the papers')")
    g.add_argument("--seed", type=int, default=default(DEConfig, "seed"),
                   help="random seed (default: %(default)s)")
    g = p.add_argument_group("campaign")
    g.add_argument("--limit", type=int, default=default(CampaignConfig, "limit"),
                   help="only the first N images (sorted)")
    g.add_argument("--batch-images", type=int, default=default(CampaignConfig, "batch_images"),
                   help="images attacked at once (default: all, up to 256 on CPU and 2048 on CUDA)")
    g.add_argument("--evaluator", choices=EVALUATORS, default=default(CampaignConfig, "evaluator"),
                   help="how candidates are scored: incremental recomputes only what the pixel "
                        "changes (Keras/built-in models); auto = incremental on CPU with "
                        "--updating deferred, else full")
    g.add_argument("--positive-label", default=default(CampaignConfig, "positive_label"),
                   help="folder name of positives (default: %(default)s)")
    g.add_argument("--negative-label", default=default(CampaignConfig, "negative_label"),
                   help="folder name of negatives (default: %(default)s)")
    g.add_argument("--skip-positive-below", type=float,
                   default=default(AttackConfig, "skip_positive_below"),
                   help="positives scoring below this are ambiguous, not attacked (default: %(default)s)")
    g.add_argument("--skip-negative-above", type=float,
                   default=default(AttackConfig, "skip_negative_above"),
                   help="negatives scoring above this are ambiguous, not attacked (default: %(default)s)")
    g.add_argument("--pixels", type=int, default=default(AttackConfig, "pixels"),
                   help="pixels changed per attack (Su et al. use 1, 3, 5; default: %(default)s)")
    g.add_argument("--stop-on-success", action="store_true",
                   help="stop each image's evolution once its goal is met (torchattacks' and ART's "
                        "behaviour: fewer queries); the papers ran every generation")
    g.add_argument("--max-colour-diff", type=float, default=default(AttackConfig, "max_colour_diff"),
                   metavar="H",
                   help="colour budget: keep every attack pixel's h (the chromatic paper's RMSE "
                        "in [0, 1] between its colour and its neighbours' mean) <= H; candidates "
                        "are repaired into the budget before scoring (default: no budget)")
    g = p.add_argument_group("attack method (docs/attack.md)")
    g.add_argument("--method", choices=ATTACK_METHODS, default=default(AttackConfig, "method"),
                   help="de: the papers' differential evolution; scan: the audit's exhaustive "
                        "colour-grid scan + integer refinement; rs: query-efficient random "
                        "search with a campaign prior (default: %(default)s)")
    g.add_argument("--max-queries", type=int, default=default(AttackConfig, "max_queries"),
                   metavar="N",
                   help="--method scan / rs: queries per image (scan: scan, refinement and "
                        "re-scoring, default no cap; rs: default 10000)")
    g.add_argument("--labels-only", action="store_true",
                   help="--method rs: the search sees only the predicted class (a service that "
                        "answers with labels) and stops at the first flip")
    g.add_argument("--scan-step", type=int, default=default(AttackConfig, "scan_step"), metavar="S",
                   help="--method scan: colour step of the scan (default: the finest grid that "
                        "fits --max-queries, else 85: 64 colours)")
    g = p.add_argument_group("multi-class models (class folders, ImageFolder layout)")
    g.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                   help="class names in the model's output order (default: the dataset's class "
                        "folder names, sorted)")
    g.add_argument("--target", default=None, metavar="CLASS",
                   help="attack towards this class (targeted); default: untargeted, away from "
                        "the true class")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    _add_executor_options(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("confmap", help="one-pixel confidence map: every pixel x a colour grid")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image of the model's input size")
    p.add_argument("--out", metavar="DIR", help="output folder (confmap.npz, PNGs, checkpoint)")
    p.add_argument("--run", metavar="RUN", help="map selected images of an attack run into RUN/confmaps/")
    p.add_argument("--images", nargs="+", metavar="NAME", default=None,
                   help="with --run: these images (default: most and least successful per direction)")
    p.add_argument("--step", type=int, default=default(ConfmapConfig, "step"),
                   help="colour step per channel, 1..255 (default %(default)s: 52^3 colours)")
    p.add_argument("--method", choices=METHODS, default=default(ConfmapConfig, "method"),
                   help="auto: the exact fast path where it applies, else brute force")
    p.add_argument("--checkpoint-seconds", type=float,
                   default=default(ConfmapConfig, "checkpoint_seconds"),
                   help="save a checkpoint this often (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    _add_executor_options(p)
    # None: max-mitosis for IMAGE, the run's own model for --run
    p.set_defaults(func=cmd_confmap, model=None)

    from onepixel.audit.config import AuditConfig

    p = sub.add_parser("audit", help="how strong was the attack? a stronger search per image of a RUN")
    p.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="output folder: audit.csv, exact.csv, summary.json (rerun to resume)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--images", nargs="+", metavar="NAME", default=None,
                     help="these attacked images (the 'image' column, file name or stem)")
    sel.add_argument("--failed", action="store_true", help="only the images DE failed on")
    sel.add_argument("--early-converged", action="store_true",
                     help="only the images whose DE converged early")
    p.add_argument("--step", type=int, default=default(AuditConfig, "step"),
                   help="colour step of the exhaustive scan (default %(default)s: 64 colours)")
    p.add_argument("--top", type=int, default=default(AuditConfig, "top"),
                   help="refine around this many best scan pixels, plus DE's (default %(default)s)")
    p.add_argument("--rounds", type=int, default=default(AuditConfig, "rounds"),
                   help="at most this many refinement rounds (default %(default)s)")
    p.add_argument("--exact-positions", default="", metavar="SPEC",
                   help="brute force all 16,777,216 colours at 'X,Y;...', 'top:N' (the scan's N "
                        "best positions) and/or 'de' (DE's position): minutes per position on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    _add_executor_options(p)  # --executor ray: each image's scan on Ray actors
    # None: the run's own model
    p.set_defaults(func=cmd_audit, model=None)

    from onepixel.stealth.config import ParetoConfig

    p = sub.add_parser("pareto", help="per image, the (score, visibility h) Pareto front of one-pixel "
                                      "attacks -> DIR/front.csv; for a dataset, the budget curve")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--dataset", default=None, metavar="DATASET",
                   help="a dataset instead of IMAGE...: 'mitosis'/'normal' sub-folders for a binary "
                        "model, class folders (ImageFolder) for a K-class one")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="front.csv, figures/, budget_curve.csv/.png, summary.json")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="K-class models: search towards this class (a name or an index; "
                        "targeted); default: untargeted, away from the true (IMAGE: predicted) class")
    p.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                   help="K-class models: class names in the model's output order (default: the "
                        "dataset's class folder names, sorted; for IMAGE... the indices)")
    p.add_argument("--pop", type=int, default=default(ParetoConfig, "population"),
                   help="NSGA-II population (default: %(default)s)")
    p.add_argument("--gens", type=int, default=default(ParetoConfig, "generations"),
                   help="NSGA-II generations (default: %(default)s)")
    p.add_argument("--seed", type=int, default=default(ParetoConfig, "seed"),
                   help="random seed (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dataset images")
    p.add_argument("--evaluator", choices=EVALUATORS, default="auto",
                   help="how candidates are scored (as for attack; default: %(default)s)")
    p.add_argument("--detector-fpr", type=float, default=0.05,
                   help="run the detector, calibrated on clean H&E tiles to this false-positive "
                        "rate, on the successful front points; RGB models only (default: "
                        "%(default)s)")
    p.add_argument("--no-detector", action="store_true", help="skip the detector")
    p.add_argument("--campaign", default=None, metavar="RUN",
                   help="a one-pixel campaign of the same images (no colour budget): compare its "
                        "pixel with each front's lowest-score end (summary.json 'campaign')")
    p.add_argument("--campaign-seed", action="store_true",
                   help="also put the --campaign pixel into each search's first population, so "
                        "the front is at least as good as the campaign")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("detect", help="one-pixel attack detector: images, or a RUN's originals and "
                                      "adversarial versions -> DIR/detections.csv")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--run", default=None, metavar="RUN", help="score a RUN's attacked images instead")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for detections.csv, "
                                                                "detection.json and roc.png")
    p.add_argument("--fpr", type=float, default=0.05,
                   help="false-positive rate the threshold is calibrated to on clean H&E tiles "
                        "(default: %(default)s)")
    p.add_argument("--statistic", choices=["h", "residual"], default="h",
                   help="per-pixel anomaly: h against the 8 neighbours' mean, or residual "
                        "against their median (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="flag above this statistic instead of calibrating")
    p.set_defaults(func=cmd_detect)

    from onepixel.robustness.config import RobustnessConfig

    p = sub.add_parser("robustness", help="each defence's clean cost and the attack through it "
                                          "-> DIR/robustness.csv (resumable)")
    p.add_argument("dataset", help="folder with 'mitosis'/'normal' sub-folders (at any depth)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="robustness.csv, robustness.json, robustness.png and runs/<defence>/")
    p.add_argument("--defences", default=",".join(default(RobustnessConfig, "defences")),
                   metavar="D,D,...", help="defences to compare, 'none' the baseline; a chain "
                                           "inside one with '+' (repair+median3); default: %(default)s")
    g = p.add_argument_group("the attack (the same for every defence)")
    g.add_argument("--popsize", type=int, default=default(DEConfig, "population"),
                   help="population size in total (default: %(default)s)")
    g.add_argument("--maxiter", type=int, default=default(DEConfig, "maxiter"),
                   help="maximum generations (default: %(default)s)")
    g.add_argument("--seed", type=int, default=default(DEConfig, "seed"),
                   help="random seed (default: %(default)s)")
    g.add_argument("--limit", type=int, default=default(CampaignConfig, "limit"),
                   help="only the first N images (sorted)")
    g.add_argument("--batch-images", type=int, default=default(CampaignConfig, "batch_images"),
                   help="images attacked at once (default: all, up to 256 on CPU and 2048 on CUDA)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("analyze", help="the papers' tables and figures of a RUN -> RUN/analysis")
    p.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    p.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib needed)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for reading the original images")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="self-contained HTML report of a RUN -> RUN/report.html")
    p.add_argument("run", metavar="RUN", help="folder written by `onepixel attack --out RUN`")
    p.add_argument("-o", "--out", default=None, metavar="HTML", help="default: RUN/report.html")
    p.add_argument("--reanalyze", action="store_true",
                   help="recompute RUN/analysis even if it is up to date")
    p.add_argument("--audit", default=None, metavar="DIR",
                   help="an `onepixel audit` folder: adds 'How strong was the attack?' "
                        "(default: RUN/audit when it holds audit.csv)")
    p.add_argument("--robustness", default=None, metavar="DIR",
                   help="an `onepixel robustness` folder (robustness.csv): adds 'Defences'")
    p.add_argument("--pareto", default=None, metavar="DIR",
                   help="an `onepixel pareto` folder: adds 'How visible must the pixel be?' "
                        "(default: RUN/pareto when it holds summary.json and front.csv)")
    p.add_argument("--evaluation", default=None, metavar="DIR",
                   help="an `onepixel evaluate` folder: adds 'Robust accuracy under one-pixel "
                        "attack'")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a Keras/built-in model as a self-contained ONNX file")
    p.add_argument("model", help="max-mitosis or a Keras *.h5/*.hdf5 file")
    p.add_argument("-o", "--out", required=True, metavar="ONNX", help="output .onnx file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tiles", help="cut large images and whole slides (SVS/TIFF) into tissue tiles")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="PNG/JPEG/TIFF images, SVS/TIFF whole slides (base level), or folders of them")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: <stem>_r<row>_c<col>.png tiles and tiles.csv")
    p.add_argument("--size", type=int, default=default(TileConfig, "size"),
                   help="tile side in pixels (default: %(default)s)")
    p.add_argument("--stride", type=int, default=default(TileConfig, "stride"),
                   help="step between tiles in pixels (default: --size, no overlap)")
    p.add_argument("--tissue-threshold", type=float, default=default(TileConfig, "tissue_threshold"),
                   help="keep tiles whose fraction of tissue pixels is at least this; 0 keeps all "
                        "(default: %(default)s)")
    p.add_argument("--min-saturation", type=float, default=default(TileConfig, "min_saturation"),
                   help="a tissue pixel has HSV saturation >= this (default: %(default)s)")
    p.add_argument("--min-value", type=int, default=default(TileConfig, "min_value"),
                   help="a tissue pixel has max(R,G,B) >= this, darker is black background "
                        "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tiles)

    p = sub.add_parser("preprocess-tupac",
                       help="TUPAC16 mitosis data -> train/val mitosis/normal patch folders")
    p.add_argument("src", metavar="SRC",
                   help="folder with mitoses_image_data/<case>/<region>.tif and "
                        "mitoses_ground_truth/<case>/<region>.csv")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: {train,val}/{mitosis,normal}/*.png, preprocess.json")
    p.add_argument("--size", type=int, default=default(TupacConfig, "patch_size"),
                   help="patch side in pixels (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=default(TupacConfig, "val_fraction"),
                   help="fraction of the cases put in val (default: %(default)s)")
    p.add_argument("--val-cases", default=None, metavar="CASE,...",
                   help="exactly these cases in val (overrides --val-fraction)")
    p.add_argument("--seed", type=int, default=default(TupacConfig, "seed"),
                   help="split/shift/sampling seed (default: %(default)s)")
    p.add_argument("--rotations", type=int, default=default(TupacConfig, "rotations"),
                   help="rotated copies per mitosis, evenly spaced angles (default: %(default)s; "
                        "3 = 90/180/270)")
    p.add_argument("--shifts", type=int, default=default(TupacConfig, "shifts"),
                   help="randomly shifted copies per mitosis (default: %(default)s)")
    p.add_argument("--max-shift", type=int, default=default(TupacConfig, "max_shift"),
                   help="largest shift in pixels (default: size/4)")
    p.add_argument("--normal-stride", type=int, default=default(TupacConfig, "normal_stride"),
                   help="step of the normal-patch grid (default: --size)")
    p.add_argument("--exclusion-radius", type=float, default=default(TupacConfig, "exclusion_radius"),
                   help="normal patches keep every pixel this far from every mitosis "
                        "(default: size/2; 0 disables)")
    p.add_argument("--normal-fraction", type=float, default=default(TupacConfig, "normal_fraction"),
                   help="probability of keeping each eligible normal patch (default: %(default)s)")
    p.add_argument("--normal-tissue-threshold", type=float,
                   default=default(TupacConfig, "normal_tissue_threshold"),
                   help="minimum tissue fraction of a normal patch (default: %(default)s, keep all)")
    p.add_argument("--border", choices=["reflect", "skip"], default=default(TupacConfig, "border"),
                   help="mitosis patches reaching outside the image: mirror-pad or skip "
                        "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess_tupac)

    p = sub.add_parser("serve", help="serve a model with the MAX HTTP API (docs/server.md)")
    from onepixel.serving.config import add_server_arguments  # argparse only: no web framework

    add_server_arguments(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_serve)

    from onepixel.cli import evaluate as cli_evaluate

    p = sub.add_parser("evaluate", help="robust accuracy under one-pixel attack: rs, DE, then the "
                                        "exhaustive scan, each on the images still robust")
    cli_evaluate.add_arguments(p)
    _add_model_options(p)
    p.set_defaults(func=cli_evaluate.run)

    p = sub.add_parser("demo", help="the whole study on the built-in model and real images")
    p.add_argument("--out", default=str(default(DemoConfig, "out")), metavar="DIR",
                   help="where the dataset, RUN and report go (default: %(default)s)")
    p.add_argument("--n-normal", type=int, default=default(DemoConfig, "n_normal"),
                   help="normal images in the demo dataset (default: %(default)s)")
    p.add_argument("--confmap-step", type=int, default=default(DemoConfig, "confmap_step"),
                   help="confidence-map colour step (default: 85 on CPU, 5 on a GPU)")
    p.add_argument("--no-confmaps", action="store_true", help="skip the confidence maps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _score_rows(model_spec: str, options, images: Sequence[Path],
                defence: str | None = None) -> tuple[tuple[str, ...], list]:
    """The predict table: ``image,score`` for a binary model; ``image,class,p0,...,pK-1`` (the
    predicted class index and every class probability) for a K-class model."""
    from onepixel.datasets.images import load_images
    from onepixel.runs.schema import record_text
    from onepixel.scoring.policy import load_scoring_classifier

    classifier = load_scoring_classifier(model_spec, options, defence)
    batch = load_images(images, classifier.input_shape)
    scores = classifier.scores(batch)
    # File names that are not UTF-8 are written with \xNN escapes, as RUN files write them.
    names = [record_text(str(p)) for p in images]
    if scores.ndim == 1:
        return ("image", "score"), [(n, f"{s:.10g}") for n, s in zip(names, scores, strict=True)]
    header = ("image", "class", *(f"p{k}" for k in range(scores.shape[1])))
    return header, [(n, int(np.argmax(s)), *(f"{v:.10g}" for v in s))
                    for n, s in zip(names, scores, strict=True)]


def cmd_predict(args: argparse.Namespace) -> int:
    from onepixel.datasets.images import expand_image_paths
    from onepixel.fileio import write_csv_atomic

    header, rows = _score_rows(args.model, _model_options(args), expand_image_paths(args.images),
                               args.defence)
    if args.out:
        write_csv_atomic(Path(args.out), header, rows)
        log.info("wrote %d scores to %s", len(rows), args.out)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    sys.stdout.write(buf.getvalue())
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from onepixel.attack.campaign import run_campaign
    from onepixel.attack.config import AttackConfig, CampaignConfig
    from onepixel.optimize.de import DEConfig
    from onepixel.runs.summary import format_summary

    de = DEConfig(population=args.popsize, maxiter=args.maxiter, mutation=args.mutation,
                  recombination=args.recombination, tol=args.tol, atol=args.atol,
                  updating=args.updating, seed=args.seed, strategy=args.strategy, init=args.init)
    attack = AttackConfig(de=de, skip_positive_below=args.skip_positive_below,
                          skip_negative_above=args.skip_negative_above, pixels=args.pixels,
                          stop_on_success=args.stop_on_success,
                          max_colour_diff=args.max_colour_diff, method=args.method,
                          max_queries=args.max_queries, scan_step=args.scan_step,
                          labels_only=args.labels_only)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    config = CampaignConfig(dataset=Path(args.dataset), out=Path(args.out), model=args.model,
                            model_options=_model_options(args), attack=attack,
                            batch_images=args.batch_images, limit=args.limit,
                            positive_label=args.positive_label,
                            negative_label=args.negative_label, progress=not args.no_progress,
                            evaluator=args.evaluator, classes=classes, target=args.target)
    executor = _executor_config(args)
    classifier = None
    if args.defence and attack.method != "scan":
        from onepixel.scoring.policy import load_attack_evaluator

        # The defended pipeline is the black box the attack queries.
        classifier = load_attack_evaluator(args.model, config.model_options, args.evaluator,
                                           de.updating, args.pixels, defence=args.defence).classifier
    if attack.method == "scan":
        from onepixel.audit.method import ScanExecutor
        from onepixel.scoring.policy import load_confmap_classifier

        if executor.kind == "ray":
            raise OnepixelError("--method scan runs in this process only: drop --executor ray")
        # Loaded for the scan's exact fast path (brute force behind a --defence).
        classifier = load_confmap_classifier(args.model, config.model_options, defence=args.defence)
        runner = ScanExecutor()
        runner.check(classifier.input_shape, attack)  # a budget too small: before the RUN exists
    elif executor.kind == "ray":
        from onepixel.scaleout import RayExecutor

        runner = RayExecutor(executor)
    else:
        runner = None
    try:
        summary = run_campaign(config, classifier=classifier, executor=runner)
    except KeyboardInterrupt:
        print(f"onepixel: interrupted; run the same command again to continue {args.out}",
              file=sys.stderr)
        return 130
    print(format_summary(summary))
    print(f"results in {args.out}/attacks.csv, summary in {args.out}/summary.json")
    return 0


def cmd_confmap(args: argparse.Namespace) -> int:
    from onepixel.confmap.config import ConfmapConfig
    from onepixel.confmap.engine import confmap_image_file
    from onepixel.confmap.runs import confmap_run

    if (args.run is None) == (args.image is None):
        raise OnepixelError("give IMAGE --out DIR, or --run RUN")
    config = ConfmapConfig(step=args.step, method=args.method, batch_size=args.batch_size,
                           device=args.device, dtype=args.dtype,
                           checkpoint_seconds=args.checkpoint_seconds, progress=not args.no_progress)
    options = _model_options(args)
    executor = _executor_config(args)
    defence = _confmap_defence(args)
    mapper = None
    if executor.kind == "ray":
        from onepixel.scaleout import RayMapper

        mapper = RayMapper(executor)
    try:
        if args.run:
            classifier = None
            if defence:
                from onepixel.runs.reader import load_run
                from onepixel.scoring.policy import load_confmap_classifier

                spec = args.model or (load_run(args.run).config.get("model") or {}).get("spec")
                classifier = load_confmap_classifier(spec or "max-mitosis", options, config.method,
                                                     defence)
            for ri, folder, res in confmap_run(args.run, images=args.images, config=config,
                                               classifier=classifier,
                                               model_options=options, model=args.model,
                                               mapper=mapper):
                print(f"{ri.image} ({ri.direction}, {ri.why}): lowest {res.extreme('min')[2]:.4g}, "
                      f"highest {res.extreme('max')[2]:.4g} -> {folder}")
            return 0
        if not args.out:
            raise OnepixelError("--out DIR is required with IMAGE")
        if defence:
            from onepixel.confmap.engine import local_map, save_confmap
            from onepixel.datasets.images import load_image
            from onepixel.scoring.policy import load_confmap_classifier

            spec = args.model or "max-mitosis"
            classifier = load_confmap_classifier(spec, options, config.method, defence)
            array = load_image(args.image, classifier.input_shape)
            result = local_map(array, classifier, config, Path(args.out), spec, options)
            written = save_confmap(result, args.out, image=array)
        else:
            result, written = confmap_image_file(args.image, args.out, args.model or "max-mitosis",
                                                 options, config, mapper=mapper)
    except KeyboardInterrupt:
        print("onepixel: interrupted; run the same command again to resume the map", file=sys.stderr)
        return 130
    x, y, lo, rgb = result.extreme("min")
    print(f"original {result.original_score:.6f}; lowest {lo:.6f} at x={x}, y={y}, rgb={rgb}; "
          f"{result.evaluations:,} evaluations in {result.seconds:.1f} s ({result.method})")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _confmap_defence(args: argparse.Namespace) -> str | None:
    """``--defence``, else for ``--run`` the defence the run attacked through (config.json)."""
    if args.defence or not args.run:
        return args.defence
    from onepixel.runs.reader import load_run

    recorded = load_run(args.run).config.get("defence")
    if recorded and recorded != "none":
        log.info("mapping through the run's defence %s (config.json)", recorded)
        return recorded
    return None


def cmd_detect(args: argparse.Namespace) -> int:
    from onepixel.detection.calibration import Calibration, calibrate, clean_tiles, image_statistic
    from onepixel.detection.scan import detect_images, detect_run, write_detections

    if bool(args.run) == bool(args.images):
        raise OnepixelError("give IMAGE... or --run RUN (not both)")
    heldout = None
    if args.threshold is not None:
        calibration = Calibration(args.statistic, args.threshold, float("nan"), 0, 0, float("nan"), ())
    else:
        cal, held, sources = clean_tiles(args.assets)
        calibration = calibrate(args.fpr, args.statistic, tiles=(cal, held))
        calibration = dataclasses.replace(calibration, sources=sources)
        heldout = image_statistic(held, args.statistic)
    if args.run:
        det = detect_run(args.run, calibration)
    else:
        from onepixel.datasets.images import expand_image_paths

        det = detect_images(expand_image_paths(args.images), calibration)
    info = write_detections(args.out, det, heldout)
    print(f"threshold {calibration.statistic} > {calibration.threshold:.4f} (calibrated FPR "
          f"{calibration.target_fpr:g}; held-out clean tiles flagged: {calibration.heldout_fpr:.3f} "
          f"of {calibration.n_heldout})")
    if args.run:
        print(f"flagged {info['tpr_successful']:.1%} of {info['n_successful']} successful "
              f"adversarial images, {info['tpr_all_adversarial']:.1%} of {info['n_adversarial']} "
              f"adversarial, {info['fpr_originals']:.1%} of {info['n_originals']} originals")
    else:
        print(f"flagged {int(det.flagged.sum())} of {len(det.flagged)} images")
    print(f"wrote {Path(args.out) / 'detections.csv'}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from onepixel.audit import AuditConfig, audit_run, parse_exact_positions

    selection = "failed" if args.failed else "early-converged" if args.early_converged else "all"
    config = AuditConfig(step=args.step, top=args.top, rounds=args.rounds,
                         exact=parse_exact_positions(args.exact_positions), selection=selection,
                         images=args.images, progress=not args.no_progress)
    executor = _executor_config(args)
    mapper = None
    if executor.kind == "ray":
        from onepixel.scaleout import RayMapper

        mapper = RayMapper(executor)
    try:
        summary = audit_run(args.run, args.out, config, model_options=_model_options(args),
                            model=args.model, defence=args.defence, mapper=mapper)
    except KeyboardInterrupt:
        print("onepixel: interrupted; run the same command again to resume the audit", file=sys.stderr)
        return 130
    for goal, g in summary["goals"].items():
        print(f"{goal}: {g['vulnerable']} of {g['audited']} vulnerable (DE: {g['de_success']}); "
              f"early-converged: {g['early_converged_vulnerable']} of {g['early_converged']} "
              f"vulnerable; median best score {g['median_best_score']:.4g} (DE "
              f"{g['median_de_score']:.4g})")
    print(f"results in {args.out}/audit.csv, summary in {args.out}/summary.json")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from onepixel.stealth.config import ParetoConfig
    from onepixel.stealth.runner import Detector, run_pareto

    if bool(args.images) == (args.dataset is not None):
        raise OnepixelError("give IMAGE... or --dataset DATASET (one of them)")

    def detector() -> Detector:
        # Called by run_pareto only where the detector applies (RGB models).
        from onepixel.detection.calibration import calibrate, clean_tiles, image_statistic

        cal, held, sources = clean_tiles(args.assets)
        calibration = dataclasses.replace(calibrate(args.detector_fpr, "h", tiles=(cal, held)),
                                          sources=sources)
        return Detector(lambda images: calibration.flag(image_statistic(images, "h")),
                        calibration.to_dict())

    config = ParetoConfig(population=args.pop, generations=args.gens, seed=args.seed)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    summary = run_pareto(args.out, images=args.images, dataset=args.dataset, config=config,
                         model=args.model, model_options=_model_options(args), defence=args.defence,
                         evaluator_kind=args.evaluator, limit=args.limit,
                         detector=None if args.no_detector else detector,
                         progress=not args.no_progress, campaign=args.campaign,
                         campaign_seed=args.campaign_seed, target=args.target, classes=classes)
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


def cmd_robustness(args: argparse.Namespace) -> int:
    from onepixel.attack.config import AttackConfig
    from onepixel.optimize.de import DEConfig
    from onepixel.robustness.config import RobustnessConfig, parse_defences
    from onepixel.robustness.runner import format_robustness, run_robustness

    if args.defence:
        raise OnepixelError("robustness compares the defences of --defences; drop --defence")
    attack = AttackConfig(de=DEConfig(population=args.popsize, maxiter=args.maxiter, seed=args.seed))
    config = RobustnessConfig(dataset=Path(args.dataset), out=Path(args.out),
                              defences=parse_defences(args.defences), model=args.model,
                              model_options=_model_options(args), attack=attack, limit=args.limit,
                              batch_images=args.batch_images, progress=not args.no_progress)
    try:
        rows = run_robustness(config)
    except KeyboardInterrupt:
        print(f"onepixel: interrupted; run the same command again to continue {args.out}",
              file=sys.stderr)
        return 130
    print(format_robustness(rows))
    print(f"table in {args.out}/robustness.csv, figure in {args.out}/robustness.png")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from onepixel.report import analyze_run, format_main_tables

    result = analyze_run(args.run, figures=not args.no_figures, workers=args.workers)
    print(format_main_tables(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from onepixel.report import write_report

    path = write_report(args.run, args.out, reanalyze=args.reanalyze, audit=args.audit,
                        robustness=args.robustness, pareto=args.pareto,
                        evaluation=args.evaluation)
    print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from onepixel.models.export import export_onnx
    from onepixel.models.options import ModelOptions

    out = export_onnx(args.model, args.out, ModelOptions(assets_dir=args.assets))
    print(f"wrote {out}")
    return 0


def cmd_tiles(args: argparse.Namespace) -> int:
    from onepixel.datasets.tiles import TileConfig, tile_images

    config = TileConfig(size=args.size, stride=args.stride, tissue_threshold=args.tissue_threshold,
                        min_saturation=args.min_saturation, min_value=args.min_value,
                        overwrite=args.overwrite)
    result = tile_images(args.images, args.out, config, progress=not args.no_progress)
    for source in result.sources:
        print(f"{source.path}: {source.tiles} of {source.positions} tiles kept")
    print(f"wrote {result.n_tiles} tiles to {result.out} (index: {result.out / 'tiles.csv'})")
    return 0


def cmd_preprocess_tupac(args: argparse.Namespace) -> int:
    from onepixel.datasets.tupac import TupacConfig, preprocess_tupac

    val_cases = tuple(c.strip() for c in args.val_cases.split(",") if c.strip()) \
        if args.val_cases else None
    config = TupacConfig(patch_size=args.size, val_fraction=args.val_fraction, val_cases=val_cases,
                         seed=args.seed, rotations=args.rotations, shifts=args.shifts,
                         max_shift=args.max_shift, normal_stride=args.normal_stride,
                         exclusion_radius=args.exclusion_radius,
                         normal_fraction=args.normal_fraction,
                         normal_tissue_threshold=args.normal_tissue_threshold,
                         border=args.border, overwrite=args.overwrite)
    result = preprocess_tupac(args.src, args.out, config, progress=not args.no_progress)
    for split, cases in (("train", result.train_cases), ("val", result.val_cases)):
        counts = result.counts[split]
        print(f"{split}: {len(cases)} cases, {counts['mitosis']} mitosis and {counts['normal']} "
              f"normal patches")
    print(f"wrote {result.out} (settings: {result.out / 'preprocess.json'})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from onepixel.scoring.policy import load_scoring_classifier
    from onepixel.serving.config import server_options
    from onepixel.serving.run import serve

    serve(load_scoring_classifier(args.model, _model_options(args), args.defence),
          **server_options(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from onepixel.demo import DemoConfig, run_demo

    if args.defence:
        raise OnepixelError("the demo runs the undefended model; use onepixel attack --defence")
    result = run_demo(DemoConfig(out=Path(args.out), model=args.model,
                                 model_options=_model_options(args), n_normal=args.n_normal,
                                 confmap_step=args.confmap_step, confmaps=not args.no_confmaps,
                                 progress=not args.no_progress))
    from onepixel.runs.summary import format_summary

    print(format_summary(result.summary))
    print("\nHeadlines:")
    for line in result.headlines:
        print(f"  - {line}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"\nTime: {timing}")
    print(f"Report: {result.report.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Paths that are not UTF-8 (PEP 383 surrogates) must not crash a message about them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except OnepixelError as exc:
        print(f"onepixel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onepixel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        # A path given on the command line that cannot be used (an --out that is a file, a
        # folder without write permission, a full disk): the path and the reason, no traceback.
        path = f" {exc.filename}" if exc.filename else ""
        print(f"onepixel: error: cannot use{path}: {exc.strerror or exc}; check the paths given "
              "(--out and the inputs)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
