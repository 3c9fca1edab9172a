"""Models over HTTP, by protocol: where the names lived before the transport split.

The retrying transport is :mod:`onepixel.models.http_transport`; the MAX API client
(:class:`HttpClassifier`) is :mod:`onepixel.models.max_protocol`; the Open Inference Protocol
client (:class:`V2Classifier`) is :mod:`onepixel.models.v2_protocol`. This module re-exports
the MAX client's names so that existing imports keep working.
"""

from __future__ import annotations

from onepixel.models.max_protocol import (
    API_KEY_ENV,
    HttpAuthError,
    HttpClassifier,
    HttpError,
    HttpUnavailableError,
    base_url,
)

__all__ = ["API_KEY_ENV", "HttpAuthError", "HttpClassifier", "HttpError", "HttpUnavailableError",
           "base_url"]
