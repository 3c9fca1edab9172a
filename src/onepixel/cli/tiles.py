"""``onepixel tiles IMAGE... -o DIR``: cut large images and whole slides into tissue tiles."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.datasets.tiles import TileConfig

    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="PNG/JPEG/TIFF images, SVS/TIFF whole slides (base level), or "
                             "folders of them")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="output folder: <stem>_r<row>_c<col>.png tiles and tiles.csv")
    o.add_overwrite(g)
    o.add_progress(g)
    g = parser.add_argument_group("tiles")
    o.add(g, "--size", type=int, field=(TileConfig, "size"),
          help="tile side in pixels (default: %(default)s)")
    o.add(g, "--stride", type=int, field=(TileConfig, "stride"),
          help="step between tiles in pixels (default: --size, no overlap)")
    o.add(g, "--tissue-threshold", type=float, field=(TileConfig, "tissue_threshold"),
          help="keep tiles whose fraction of tissue pixels is at least this; 0 keeps all "
               "(default: %(default)s)")
    o.add(g, "--min-saturation", type=float, field=(TileConfig, "min_saturation"),
          help="a tissue pixel has HSV saturation >= this (default: %(default)s)")
    o.add(g, "--min-value", type=int, field=(TileConfig, "min_value"),
          help="a tissue pixel has max(R,G,B) >= this, darker is black background "
               "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from onepixel.cli.inputs import refuse_run_folders
    from onepixel.datasets.tiles import TileConfig, tile_images

    refuse_run_folders(args.images, "tiles")
    config = TileConfig(size=args.size, stride=args.stride, tissue_threshold=args.tissue_threshold,
                        min_saturation=args.min_saturation, min_value=args.min_value,
                        overwrite=args.overwrite)
    result = tile_images(args.images, args.out, config, progress=not args.no_progress)
    for source in result.sources:
        print(f"{source.path}: {source.tiles} of {source.positions} tiles kept")
    # tile_images logs "wrote N tiles ... to OUT": said once.
    return 0
