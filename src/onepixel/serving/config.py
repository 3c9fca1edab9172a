"""Settings of the model server: its limits, how it serves, and the options that set them.

Every default is written once, here, in :class:`ServerLimits` and :class:`ServeOptions`; the
command-line options (:func:`add_server_arguments`) take theirs from the dataclasses, and both
check values alike (a bad one is a :class:`~onepixel.errors.ServerError` in Python and a clean
argparse error, exit status 2, on the command line).

This module imports the standard library only (no numpy, Pillow or web framework): the CLI
imports it while it builds its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onepixel.errors import ServerError
from onepixel.wire import API_KEY_ENV

MiB = 1 << 20
MAX_PORT = 65535
#: The HTTP APIs the server speaks: MAX (the papers' setting) and the Open Inference Protocol.
PROTOCOLS = ("max", "v2")


def _int_problem(value: Any, low: int, high: int | None = None) -> str | None:
    """Why ``value`` is not an integer in [low, high], or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {value!r}"
    if value < low or (high is not None and value > high):
        span = f"within {low}..{high}" if high is not None else f">= {low}"
        return f"must be {span}, got {value}"
    return None


def _seconds_problem(value: Any) -> str | None:
    """Why ``value`` is not a finite number of seconds > 0, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of seconds, got {value!r}"
    if not (value > 0 and math.isfinite(value)):
        return f"must be a number of seconds > 0, got {value}"
    return None


def _mib_problem(value: float) -> str | None:
    """Why ``value`` is not a size in MiB > 0, or None."""
    if not (value > 0 and math.isfinite(value)):
        return f"must be a size in MiB > 0, got {value}"
    return None


def class_names(names: Any) -> tuple[str, ...] | None:
    """Class names of a served K-class model, checked: a sequence of distinct, non-empty strings
    without surrounding spaces (or None: index names). The count is checked against the model
    when the app is built (:func:`~onepixel.serving.app.create_app`).

    Raises
    ------
    ServerError
        Not a sequence of strings, fewer than 2, an empty or repeated name.
    """
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ServerError(f"classes must be a list of class names in the model's output order, got "
                          f"{names!r}")
    if not all(isinstance(n, str) for n in names):
        raise ServerError(f"classes must be strings, got {names!r}")
    names = tuple(names)
    if len(names) < 2:
        raise ServerError(f"classes names the K >= 2 classes of a K-class model, got {len(names)}: "
                          f"{names!r}")
    if any(not n or n != n.strip() or "," in n for n in names):
        raise ServerError(f"classes must be non-empty names without commas or surrounding spaces, "
                          f"got {names!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ServerError(f"classes must be distinct; repeated: {', '.join(repeated)}")
    return names


def _check(problems: dict[str, str | None]) -> None:
    for name, problem in problems.items():
        if problem:
            raise ServerError(f"{name} {problem}")


@dataclass(frozen=True)
class ServerLimits:
    """Limits that protect the app (apply under any ASGI server).

    Attributes
    ----------
    max_request_bytes : int
        Largest request body; larger ones get 413 before they are read.
    max_concurrency : int
        Model calls running at once (1 is fastest on CPU: one call already uses every core).
    max_queue : int
        Requests allowed to wait for the model; more get 503 with ``Retry-After``.
    max_batch : int
        Most images in one ``/model/predict_batch`` request (and parts in its body: these plus
        :data:`onepixel.wire.EXTRA_PARTS`).
    """

    max_request_bytes: int = 32 * MiB
    max_concurrency: int = 1
    max_queue: int = 64
    max_batch: int = 1024

    def __post_init__(self) -> None:
        _check({"max_request_bytes": _int_problem(self.max_request_bytes, 1),
                "max_concurrency": _int_problem(self.max_concurrency, 1),
                "max_queue": _int_problem(self.max_queue, 0),
                "max_batch": _int_problem(self.max_batch, 1)})


@dataclass(frozen=True)
class ServeOptions:
    """How :func:`~onepixel.serving.run.serve` listens, defends its connections and names the
    served model's classes.

    Attributes
    ----------
    host : str
        Address to bind; loopback by default. Binding elsewhere without an API key logs a warning.
    port : int
        0..65535; 0 picks a free port (logged).
    api_key : str, optional
        Else ``$ONEPIXEL_API_KEY``; no key when neither is set.
    max_connections : int
        Open connections in all. At the cap a new connection closes the one that has waited
        longest for a request (a stalled or idle one); when every connection is busy with a
        request, the new one gets 503.
    max_connections_per_client : int
        The same cap for each client address, applied first, so that one address cannot take
        every connection.
    header_timeout : float
        Seconds a connection may take to send a request's head (line and headers), from the
        moment it opens or from the first byte of a keep-alive request; then it is closed (408
        when some of the head came).
    body_timeout : float
        Seconds a request may take to send its whole body once its head has come; then the
        connection is closed.
    keep_alive_timeout : float
        Seconds an idle keep-alive connection stays open between requests.
    limits : ServerLimits
    classes : tuple of str, optional
        Names of a K-class model's classes in its output order, given in ``/model/metadata`` and
        as each prediction's ``label``; the count must be the model's K (checked when the app
        is built). Default: the indices ``"0"`` .. ``"K-1"``.
    protocol : {"max", "v2"}
        ``max``: the MAX API (:mod:`onepixel.serving.app`); ``v2``: the Open Inference Protocol
        (:mod:`onepixel.serving.v2_app`). Limits and connection defences are the same.
    """

    host: str = "127.0.0.1"
    port: int = 5000
    api_key: str | None = field(default=None, repr=False)  # never in a log line
    max_connections: int = 256
    max_connections_per_client: int = 32
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 30.0
    limits: ServerLimits = field(default_factory=ServerLimits)
    classes: tuple[str, ...] | None = None
    protocol: str = "max"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ServerError(f"ServeOptions.protocol must be one of {', '.join(PROTOCOLS)}, got "
                              f"{self.protocol!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ServerError(f"host must be an address such as 127.0.0.1, got {self.host!r}")
        _check({"port": _int_problem(self.port, 0, MAX_PORT),
                "max_connections": _int_problem(self.max_connections, 1),
                "max_connections_per_client": _int_problem(self.max_connections_per_client, 1),
                "header_timeout": _seconds_problem(self.header_timeout),
                "body_timeout": _seconds_problem(self.body_timeout),
                "keep_alive_timeout": _seconds_problem(self.keep_alive_timeout)})
        if not isinstance(self.limits, ServerLimits):
            raise ServerError(f"limits must be a ServerLimits, got {type(self.limits).__name__}")
        object.__setattr__(self, "classes", class_names(self.classes))  # lists become tuples

    @classmethod
    def build(cls, options: ServeOptions | None = None, **settings: Any) -> ServeOptions:
        """``options`` (default: all defaults) with any field of it or of :class:`ServerLimits`
        replaced by keyword, e.g. ``ServeOptions.build(port=0, max_batch=64)``.

        Raises
        ------
        ServerError
            An unknown setting, or a bad value.
        """
        options = options or cls()
        own = {f.name for f in dataclasses.fields(cls)} - {"limits"}
        limit_names = {f.name for f in dataclasses.fields(ServerLimits)}
        unknown = sorted(set(settings) - own - limit_names)
        if unknown:
            raise ServerError(f"unknown server setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(own | limit_names))}")
        limits = dataclasses.replace(options.limits, **{k: v for k, v in settings.items()
                                                        if k in limit_names})
        return dataclasses.replace(options, limits=limits,
                                   **{k: v for k, v in settings.items() if k in own})


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key``, else ``$ONEPIXEL_API_KEY``, else None (no key). Empty strings mean none."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    return api_key or None


def _argument(parse: Callable[[str], Any], problem: Callable[[Any], str | None]) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``parse`` and refuses what ``problem`` names."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        why = problem(value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


def _int_at_least(low: int) -> Callable[[str], int]:
    return _argument(int, lambda v: _int_problem(v, low))


def _class_list(text: str) -> tuple[str, ...]:
    """``--classes``: comma-separated names (spaces around each are dropped)."""
    try:
        return class_names([n.strip() for n in text.split(",")])  # type: ignore[return-value]
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_server_arguments(parser: argparse.ArgumentParser, *, classes: bool = True) -> None:
    """Add the ``serve`` options (address, key, limits, connection defences, class names) to
    ``parser``; ``classes=False`` leaves ``--classes`` to the caller (the ``onepixel`` CLI
    declares it once for every command).

    Defaults come from :class:`ServeOptions` and :class:`ServerLimits`; bad values are argparse
    errors (one line, exit status 2). :func:`server_options` turns the parsed options into
    keyword arguments of :func:`~onepixel.serving.run.serve`.
    """
    d, lim = ServeOptions(), ServerLimits()
    g = parser.add_argument_group("server")
    g.add_argument("--protocol", choices=PROTOCOLS, default=d.protocol,
                   help="max: the MAX API (/model/predict); v2: the Open Inference Protocol "
                        "(/v2/models/NAME/infer, as KServe and Triton); default: %(default)s")
    g.add_argument("--host", default=d.host,
                   help="address to bind (default: %(default)s, this machine only)")
    g.add_argument("--port", metavar="PORT", type=_argument(int, lambda v: _int_problem(v, 0, MAX_PORT)),
                   default=d.port, help="port, 0..65535 (default: %(default)s; 0: any free)")
    g.add_argument("--api-key", metavar="KEY", default=d.api_key,
                   help=f"require this key (X-API-Key header); default: ${API_KEY_ENV} if set. "
                        "Prefer the variable: command lines are visible to other users")
    g.add_argument("--max-concurrency", metavar="N", type=_int_at_least(1), default=lim.max_concurrency,
                   help="model calls at once (default: %(default)s)")
    g.add_argument("--max-queue", metavar="N", type=_int_at_least(0), default=lim.max_queue,
                   help="requests waiting for the model before 503s (default: %(default)s)")
    g.add_argument("--max-batch", metavar="N", type=_int_at_least(1), default=lim.max_batch,
                   help="most images per /model/predict_batch request (default: %(default)s)")
    g.add_argument("--max-request-mb", metavar="MIB", type=_argument(float, _mib_problem),
                   default=lim.max_request_bytes / MiB,
                   help="largest request body in MiB (default: %(default)s)")
    g.add_argument("--max-connections", metavar="N", type=_int_at_least(1), default=d.max_connections,
                   help="open connections in all (default: %(default)s)")
    g.add_argument("--max-connections-per-client", metavar="N", type=_int_at_least(1),
                   default=d.max_connections_per_client,
                   help="open connections per client address (default: %(default)s)")
    g.add_argument("--header-timeout", type=_argument(float, _seconds_problem),
                   default=d.header_timeout, metavar="SECONDS",
                   help="close a connection whose request head has not come in this time "
                        "(default: %(default)s)")
    g.add_argument("--body-timeout", type=_argument(float, _seconds_problem),
                   default=d.body_timeout, metavar="SECONDS",
                   help="close a connection whose request body has not come in this time "
                        "(default: %(default)s)")
    g.add_argument("--keep-alive-timeout", type=_argument(float, _seconds_problem),
                   default=d.keep_alive_timeout, metavar="SECONDS",
                   help="close an idle keep-alive connection after this time (default: %(default)s)")
    if classes:
        action = g.add_argument(
            "--classes", metavar="NAME,NAME,...", type=_class_list, default=d.classes,
            help="class names of a K-class model in its output order, K of them (default: "
                 "0..K-1); shown in /model/metadata and as each prediction's label")
        action.field = "ServeOptions.classes"  # the CLI names the flag where a message names the field


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`~onepixel.serving.run.serve` from :func:`add_server_arguments`'
    options: ``serve(classifier, **server_options(args))``."""
    return {"host": args.host, "port": args.port, "api_key": args.api_key,
            "max_connections": args.max_connections,
            "max_connections_per_client": args.max_connections_per_client,
            "header_timeout": args.header_timeout, "body_timeout": args.body_timeout,
            "keep_alive_timeout": args.keep_alive_timeout, "classes": args.classes,
            "protocol": args.protocol,
            "max_concurrency": args.max_concurrency, "max_queue": args.max_queue,
            "max_batch": args.max_batch,
            "max_request_bytes": max(1, int(args.max_request_mb * MiB))}
