"""Listening: bind the socket, put the connection guard in front of the app, run uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onepixel.errors import ServerError
from onepixel.serving.app import create_app, require
from onepixel.serving.config import ServeOptions, resolve_api_key
from onepixel.wire import API_KEY_ENV, is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from onepixel.models.base import Classifier

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), for uvicorn to serve.

    Raises
    ------
    ServerError
        The address cannot be bound (in use, not this machine's, not an address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        why = getattr(exc, "strerror", None) or exc
        hint = ("choose another --port or stop the process that uses it"
                if getattr(exc, "errno", None) == errno.EADDRINUSE else
                "give --host an address of this machine (127.0.0.1 by default) and --port 0..65535")
        raise ServerError(f"cannot listen on {host}:{port}: {why}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(classifier: Classifier, options: ServeOptions | None = None, *,
          metadata: Mapping[str, Any] | None = None, **settings: Any) -> None:
    """Serve ``classifier`` with the MAX API, or the Open Inference Protocol
    (``protocol="v2"``), until interrupted (SIGINT / SIGTERM).

    Parameters
    ----------
    classifier : Classifier
    options : ServeOptions, optional
        Address, key, connection defences, limits and the class names of a K-class model;
        default ``ServeOptions()``.
    metadata : mapping, optional
        Overrides of the MAX metadata fields; see :func:`~onepixel.serving.app.create_app`.
    **settings
        Any field of :class:`ServeOptions` or :class:`ServerLimits` by keyword, over
        ``options``: ``serve(model, port=0, max_batch=64)``, or
        ``serve(model, **server_options(args))`` from the command line.

    Raises
    ------
    ServerError
        Missing dependencies, a bad setting, class names that do not fit the model, or the
        address cannot be bound.
    """
    options = ServeOptions.build(options, **settings)
    uvicorn = require("uvicorn")
    from onepixel.serving.connections import ConnectionGuard

    api_key = resolve_api_key(options.api_key)
    if options.protocol == "v2":
        from onepixel.serving.v2_app import create_v2_app as make_app
    else:
        make_app = create_app
    app = make_app(classifier, api_key=api_key, limits=options.limits, metadata=metadata,
                   classes=options.classes)
    if not is_loopback(options.host) and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can query "
                    "the model; set --api-key or $%s", options.host, API_KEY_ENV)
    guard = ConnectionGuard(options.max_connections, options.max_connections_per_client,
                            options.header_timeout, options.body_timeout)
    app.state.connections = guard
    sock = bind(options.host, options.port)
    bound = sock.getsockname()[1]
    # The guard caps connections (closing stalled ones first), so uvicorn's limit_concurrency,
    # which answers 503 to every request once that many connections are open, stays off.
    config = uvicorn.Config(app, http=guard.protocol(), access_log=False, log_config=None,
                            server_header=False, limit_concurrency=None,
                            timeout_keep_alive=options.keep_alive_timeout, lifespan="off")
    shown = f"[{options.host}]" if ":" in options.host else options.host
    where = (f"/v2/models/{classifier.name}" if options.protocol == "v2" else "") + (
        " (the Open Inference Protocol)" if options.protocol == "v2" else " (the MAX API)")
    log.info("serving %s on http://%s:%d%s (API docs at /docs%s; header/body timeouts %g/%g s, "
             "%d connections, %d per client)", classifier.name, shown, bound, where,
             ", API key required" if api_key else "", options.header_timeout, options.body_timeout,
             options.max_connections, options.max_connections_per_client)
    uvicorn.Server(config).run(sockets=[sock])
