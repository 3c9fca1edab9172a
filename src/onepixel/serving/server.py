"""``python -m onepixel.serving.server``: serve a model with the MAX API without the CLI.

The same options as ``onepixel serve`` (:func:`~onepixel.serving.config.add_server_arguments`)
plus the model's. The server itself is :func:`onepixel.serving.run.serve`; the app
:func:`onepixel.serving.app.create_app`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from onepixel.errors import OnepixelError
from onepixel.serving.config import add_server_arguments, server_options

log = logging.getLogger(__name__)

def __getattr__(name: str) -> Any:
    # ``from onepixel.serving.server import serve`` keeps working without loading the web stack
    # when only the option parser is wanted.
    if name == "serve":
        from onepixel.serving.run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The model options and the server options."""
    parser = argparse.ArgumentParser(prog="python -m onepixel.serving.server",
                                     description="Serve a model with the MAX HTTP API.")
    parser.add_argument("--model", default="max-mitosis", help="model spec (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--batch-size", type=int, default=None, help="images per model call")
    parser.add_argument("--output", choices=["logit", "probability"], default=None,
                        help="what the model returns (default: from the model)")
    parser.add_argument("--preprocess", choices=["max", "unit", "raw"], default=None,
                        help="input scaling: max=(x/255-0.5)*2, unit=x/255, raw=x")
    parser.add_argument("--layout", choices=["nhwc", "nchw"], default=None, help="input tensor layout")
    parser.add_argument("--positive-index", type=int, default=None,
                        help="serve a K-output model as binary: the positive class's column")
    parser.add_argument("--assets", default=None, metavar="DIR", help="folder with local assets")
    parser.add_argument("-q", "--quiet", action="store_true", help="no access log")
    add_server_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load the model, serve; 2 (with a one-line log message) on a user error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from onepixel.models import ModelOptions, load_classifier
    from onepixel.serving.run import serve

    try:
        classifier = load_classifier(args.model, ModelOptions(
            device=args.device, engine=args.engine, batch_size=args.batch_size,
            model_output=args.output, preprocess=args.preprocess, layout=args.layout,
            positive_index=args.positive_index, assets_dir=args.assets))
        serve(classifier, **server_options(args))
    except OnepixelError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
