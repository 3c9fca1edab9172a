"""``onepixel confmap``: one-pixel confidence maps of an image, or of a RUN's images."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o
from onepixel.errors import OnepixelError

RESUME = "run the same command again to resume the map"

#: The old ``--method`` words of the evaluator (deprecated): fast -> incremental, brute -> full.
OLD_METHODS = {"fast": "incremental", "brute": "full", "auto": "auto"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.confmap.config import ConfmapConfig

    g = parser.add_argument_group("input")
    g.add_argument("image", nargs="?", metavar="IMAGE", help="an image of the model's input size")
    g.add_argument("--run", metavar="RUN", help="map selected images of an attack run into "
                                                "RUN/confmaps/ instead")
    o.add_run_images(g, help="with --run: these images (the 'image' column, file name or stem; "
                             "default: the most and least successful per direction)")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", help="with IMAGE: output folder (confmap.npz, PNGs, checkpoint)")
    o.add_progress(g)
    g = parser.add_argument_group("map")
    o.add(g, "--step", type=int, field=(ConfmapConfig, "step"),
          help="colour step per channel, 1..255 (default %(default)s: 52^3 colours)")
    evaluator = o.add_evaluator(g, field=(ConfmapConfig, "evaluator"),
                                help="incremental: exact, walks only what one pixel changes "
                                     "(Keras/built-in models); full: the whole network per "
                                     "colour; auto: incremental where it applies (default: "
                                     "%(default)s)")
    o.deprecated(g, "--method", evaluator, rename=OLD_METHODS, choices=sorted(OLD_METHODS))
    o.add(g, "--checkpoint-seconds", type=float, field=(ConfmapConfig, "checkpoint_seconds"),
          help="save a checkpoint this often (default: %(default)s)")
    o.add_model_options(parser, model_default=None,
                        model_help="the model (default: max-mitosis for IMAGE, the RUN's own for "
                                   "--run); as for `onepixel attack`")
    o.add_executor_options(parser)


def _config(args: argparse.Namespace):
    from onepixel.confmap.config import ConfmapConfig

    return ConfmapConfig(step=args.step, batch_size=args.batch_size, device=args.device,
                         dtype=args.dtype, checkpoint_seconds=args.checkpoint_seconds,
                         progress=not args.no_progress, evaluator=args.evaluator)


def run(args: argparse.Namespace) -> int:
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.confmap.engine import confmap_image_file
    from onepixel.confmap.run_maps import confmap_run
    from onepixel.models.options import BUILTIN

    if (args.run is None) == (args.image is None):
        raise OnepixelError("give IMAGE --out DIR, or --run RUN")
    refuse_run_folders([args.image], "confmap", use_run="--run")
    config = _config(args)
    options = o.model_options(args)
    executor = o.executor_config(args)
    mapper = None
    if executor.kind == "ray":
        from onepixel.scaleout import RayMapper

        mapper = RayMapper(executor)
    if args.run:
        for ri, folder, res in confmap_run(args.run, images=args.images, config=config,
                                           model_options=options, model=args.model,
                                           mapper=mapper, defence=args.defence):
            print(f"{ri.image} ({ri.direction}, {ri.why}): lowest {res.extreme('min')[2]:.4g}, "
                  f"highest {res.extreme('max')[2]:.4g} -> {folder}")
        return 0
    if not args.out:
        raise OnepixelError("--out DIR is required with IMAGE")
    # confmap_image_file logs the files it wrote ("wrote ..."): said once.
    result, _ = confmap_image_file(args.image, args.out, args.model or BUILTIN, options,
                                   config, mapper=mapper, defence=args.defence)
    x, y, lo, rgb = result.extreme("min")
    print(f"original {result.original_score:.6f}; lowest {lo:.6f} at x={x}, y={y}, rgb={rgb}; "
          f"{result.evaluations:,} evaluations in {result.seconds:.1f} s "
          f"({result.method})")
    return 0
