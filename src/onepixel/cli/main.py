"""The ``onepixel`` command: global options, the command table, and the one place where errors
are shown to the user.

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``
(and, where Ctrl-C can be resumed, ``RESUME``: what to say; ``{out}`` is ``--out``). Only the
chosen command's module is imported and its options added, so ``onepixel --help`` imports no
command at all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from onepixel.errors import OnepixelError
from onepixel.version import __version__

log = logging.getLogger("onepixel")

#: name -> (module of onepixel.cli, one-line help). A new command is one line here and a module.
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "score images: columns image,score"),
    "attack": ("attack", "one-pixel attack every image of a dataset (resumable)"),
    "confmap": ("confmap", "one-pixel confidence map: every pixel x a colour grid"),
    "audit": ("audit", "how strong was the attack? a stronger search per image of a RUN"),
    "pareto": ("pareto", "per image, the (score, visibility h) Pareto front of one-pixel attacks "
                         "-> DIR/front.csv; for a dataset, the budget curve"),
    "detect": ("detect", "one-pixel attack detector: images, or a RUN's originals and "
                         "adversarial versions -> DIR/detections.csv"),
    "evaluate": ("evaluate", "robust accuracy under one-pixel attack: rs, DE, then the exhaustive "
                             "scan, each on the images still robust -> DIR/evaluation.csv"),
    "robustness": ("robustness", "each defence's clean cost and the attack through it "
                                 "-> DIR/robustness.csv (resumable)"),
    "analyze": ("analyze", "the papers' tables and figures of a RUN -> RUN/analysis"),
    "report": ("report", "self-contained HTML report of a RUN -> RUN/report.html"),
    "export": ("export", "write a Keras/built-in model as a self-contained ONNX file"),
    "tiles": ("tiles", "cut large images and whole slides (SVS/TIFF) into tissue tiles"),
    "preprocess-tupac": ("preprocess_tupac",
                         "TUPAC16 mitosis data -> train/val mitosis/normal patch folders"),
    "serve": ("serve", "serve a model with the MAX HTTP API (docs/server.md)"),
    "demo": ("demo", "the whole study on the built-in model and real images"),
}

#: Loggers of third-party libraries that log every request at INFO (one line per model query
#: of an HTTP campaign): WARNING unless -v.
CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3", "hpack")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"onepixel.cli.{COMMANDS[name][0]}")


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's own options to its (empty) sub-parser, once."""
    name = getattr(parser, "command", None)
    if name and not getattr(parser, "populated", False):
        command_module(name).add_arguments(parser)
        parser.populated = True  # type: ignore[attr-defined]


class _LazyCommands(argparse._SubParsersAction):
    """Sub-parsers filled in when argparse picks one (or all by :func:`build_parser`)."""

    chosen: argparse.ArgumentParser | None = None

    def __call__(self, parser, namespace, values, option_string=None):
        sub = self._name_parser_map.get(values[0])
        if sub is not None:
            add_command_arguments(sub)
            self.chosen = sub
        super().__call__(parser, namespace, values, option_string)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``onepixel`` parser with every command's options (``lazy``: a command's options are
    added when it is chosen, so only its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="onepixel",
        description="One-pixel attack robustness assessment for image classifiers.")
    parser.add_argument("--version", action="version", version=f"onepixel {__version__}")
    assets = parser.add_argument("--assets", default=None, metavar="DIR",
                                 help="folder with local copies of the assets (else "
                                      "$ONEPIXEL_ASSETS, the user cache, then download)")
    assets.field = "ModelOptions.assets_dir"
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v also shows each HTTP request; -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                action=_LazyCommands)
    for name, (_, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.command = name  # type: ignore[attr-defined]
        if not lazy:
            add_command_arguments(p)
    parser.commands = sub  # type: ignore[attr-defined]
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's sub-parser of :func:`build_parser`'s parser."""
    return dict(parser.commands._name_parser_map)  # type: ignore[attr-defined]


def _quiet_third_parties(verbose: int) -> None:
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def _flag_pattern(text: str) -> re.Pattern:
    return re.compile(rf"(?<![\w.-]){re.escape(text)}(?![\w-])")


def user_message(exc: BaseException, parsers: Sequence[argparse.ArgumentParser]) -> str:
    """``exc``'s message in the command's words: a config field (``AttackConfig.pixels``) and an
    old flag spelling (``--output``) become the command's flag (``--pixels``, ``--model-output``).
    Fields that the command has no option for stay as they are."""
    from onepixel.cli.options import field_flags

    message = str(exc)
    flags = field_flags(*parsers)
    field = getattr(exc, "field", None)  # ConfigError.field (issue 24), where the library sets it
    if field in flags and field not in message:
        message = f"{flags[field]}: {message}"
    for name in sorted(flags, key=len, reverse=True):
        message = _flag_pattern(name).sub(flags[name], message)
    for parser in parsers:
        for action in parser._actions:
            new = getattr(action, "deprecated", None)
            if new:
                old = action.option_strings[0]
                for word, renamed in action.rename.items():
                    message = _flag_pattern(f"{old} {word}").sub(f"{new} {renamed}", message)
                message = _flag_pattern(old).sub(new, message)
    return message


def _has_out(parser: argparse.ArgumentParser | None) -> bool:
    return parser is not None and any("--out" in a.option_strings for a in parser._actions)


def main(argv: Sequence[str] | None = None) -> int:
    # Paths that are not UTF-8 (PEP 383 surrogates) must not crash a message about them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser(lazy=True)
    args = parser.parse_args(argv)
    chosen = parser.commands.chosen  # type: ignore[attr-defined]
    parsers = [p for p in (chosen, parser) if p is not None]
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _quiet_third_parties(args.verbose)
    module = command_module(args.command)
    try:
        return int(module.run(args) or 0)
    except OnepixelError as exc:
        print(f"onepixel: error: {user_message(exc, parsers)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume: Any = getattr(module, "RESUME", None)
        resume = f"; {resume.format(out=getattr(args, 'out', ''))}" if resume else ""
        print(f"onepixel: interrupted{resume}", file=sys.stderr)
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
        which = "--out and the inputs" if _has_out(chosen) else "the inputs"
        print(f"onepixel: error: cannot use{path}: {exc.strerror or exc}; check the paths given "
              f"({which})", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
