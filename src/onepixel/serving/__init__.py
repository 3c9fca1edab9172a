"""The HTTP model service (``onepixel serve``): the MAX API, or the Open Inference Protocol
(``--protocol v2``, :mod:`~onepixel.serving.v2_app`).

One job per module: :mod:`~onepixel.serving.config` (settings, defaults, command-line
options; standard library only), :mod:`~onepixel.serving.app` (the ASGI app and its inference
gate), :mod:`~onepixel.serving.middleware` (access log, size limit, API key),
:mod:`~onepixel.serving.metadata`, :mod:`~onepixel.serving.connections` (read deadlines and
connection caps under uvicorn), :mod:`~onepixel.serving.run` (binding and :func:`serve`) and
:mod:`~onepixel.serving.server` (``python -m onepixel.serving.server``). The wire format
(PNG, multipart, paths) is :mod:`onepixel.wire`, shared with the HTTP client.

Names load on first use, so importing the package (for its options) loads no web framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "create_app": "onepixel.serving.app",
    "create_v2_app": "onepixel.serving.v2_app",
    "model_metadata": "onepixel.serving.metadata",
    "serve": "onepixel.serving.run",
    "ServeOptions": "onepixel.serving.config",
    "ServerLimits": "onepixel.serving.config",
    "add_server_arguments": "onepixel.serving.config",
    "server_options": "onepixel.serving.config",
    "decode_image": "onepixel.wire",
    "parse_multipart": "onepixel.wire",
    "RequestError": "onepixel.wire",
}

__all__ = ["RequestError", "ServeOptions", "ServerLimits", "add_server_arguments", "create_app",
           "create_v2_app",
           "decode_image", "model_metadata", "parse_multipart", "serve", "server_options"]

if TYPE_CHECKING:  # pragma: no cover
    from onepixel.serving.app import create_app
    from onepixel.serving.config import ServeOptions, ServerLimits, add_server_arguments, server_options
    from onepixel.serving.metadata import model_metadata
    from onepixel.serving.run import serve
    from onepixel.serving.v2_app import create_v2_app
    from onepixel.wire import RequestError, decode_image, parse_multipart


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
