"""``onepixel export MODEL -o FILE``: a Keras/built-in model as a self-contained ONNX file."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="max-mitosis or a Keras *.h5/*.hdf5 file")
    o.add_out(o.output_group(parser), metavar="ONNX", required=True, help="output .onnx file")


def run(args: argparse.Namespace) -> int:
    from onepixel.models.export import export_onnx
    from onepixel.models.options import ModelOptions

    export_onnx(args.model, args.out, ModelOptions(assets_dir=args.assets))  # logs "wrote ..."
    return 0
