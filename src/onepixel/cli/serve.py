"""``onepixel serve``: serve a model with the MAX HTTP API (docs/server.md)."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.serving.config import add_server_arguments  # argparse only: no web framework

    add_server_arguments(parser, classes=False)
    o.add_classes(parser.add_argument_group("multi-class models"), target=False,
                  default_help="0..K-1; shown in /model/metadata and as each prediction's label")
    # The server's messages name the field it fills: shown to the user as --classes.
    next(a for a in parser._actions if "--classes" in a.option_strings).field = "ServeOptions.classes"
    o.add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    from onepixel.scoring.policy import load_scoring_classifier
    from onepixel.serving.config import server_options
    from onepixel.serving.run import serve

    serve(load_scoring_classifier(args.model, o.model_options(args), args.defence),
          **server_options(args))
    return 0
