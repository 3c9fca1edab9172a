"""The app's front door, as pure ASGI middleware: the access log, the body size limit and the
API key (checked in constant time), before any route runs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from onepixel.wire import API_KEY_HEADER

access_log = logging.getLogger("onepixel.serving.access")

#: Paths that never need the API key.
PUBLIC_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})


class RequestTooLarge(Exception):  # noqa: N818 - an HTTP condition, answered as 413
    """Raised while reading a request body that grows past the limit."""


def _json_body(message: str, error_key: str = "message") -> bytes:
    """The error body: MAX's ``{"status": "error", "message": ...}``, or the Open Inference
    Protocol's ``{"error": ...}`` (``error_key="error"``)."""
    if error_key == "error":
        return json.dumps({"error": message}).encode()
    return json.dumps({"status": "error", "message": message}).encode()


class GuardMiddleware:
    """Access log (one line per request, fields on ``record.http``), request size limit (from
    ``Content-Length`` and while reading), API key (``X-API-Key`` or ``Authorization: Bearer``)."""

    def __init__(self, app, api_key: str | None, max_request_bytes: int, *,
                 public_paths: frozenset[str] = frozenset(), error_key: str = "message"):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.public_paths = PUBLIC_PATHS | public_paths
        self.error_key = error_key
        self._key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None

    def _refuse(self, scope) -> tuple[int, str, dict[str, str]] | None:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return 400, f"bad Content-Length header {length[:40]!r}", {}
            if n > self.max_request_bytes:
                return (413, f"request body of {n} bytes is over the server's limit of "
                             f"{self.max_request_bytes}; send fewer images per request", {})
        if self._key_digest is not None and scope["path"] not in self.public_paths:
            given = headers.get(API_KEY_HEADER.encode())
            if given is None:
                auth = headers.get(b"authorization", b"")
                if auth[:7].lower() == b"bearer ":
                    given = auth[7:].strip()
            # Hashing first gives equal lengths, so compare_digest leaks nothing, not even length.
            if given is None or not hmac.compare_digest(hashlib.sha256(given).digest(),
                                                        self._key_digest):
                what = "missing" if given is None else "wrong"
                return (401, f"{what} API key: send it in the X-API-Key header (or "
                             "'Authorization: Bearer KEY')",
                        {"WWW-Authenticate": 'Bearer realm="onepixel"'})
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 0
        sizes = [0, 0]  # bytes in, bytes out
        limit = self.max_request_bytes

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sizes[1] += len(message.get("body", b""))
            await send(message)

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                sizes[0] += len(message.get("body", b""))
                if sizes[0] > limit:
                    raise RequestTooLarge(f"request body is over the server's limit of {limit} "
                                          "bytes; send fewer images per request")
            return message

        try:
            refused = self._refuse(scope)
            if refused is None:
                await self.app(scope, counting_receive, counting_send)
            else:
                code, message, extra = refused
                body = _json_body(message, self.error_key)
                headers = [(b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode())]
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                if code == 413:
                    headers.append((b"connection", b"close"))
                await counting_send({"type": "http.response.start", "status": code, "headers": headers})
                await counting_send({"type": "http.response.body", "body": body})
        except BaseException:
            status = status or 500
            raise
        finally:
            client = scope.get("client") or ("-", 0)
            ms = (time.perf_counter() - t0) * 1000.0
            images = (scope.get("state") or {}).get("images", 0)
            access_log.info(
                "%s:%s %s %s %d in=%d out=%d images=%d %.1fms", client[0], client[1], scope["method"],
                scope["path"], status, sizes[0], sizes[1], images, ms,
                extra={"http": {"client": f"{client[0]}:{client[1]}", "method": scope["method"],
                                "path": scope["path"], "status": status, "bytes_in": sizes[0],
                                "bytes_out": sizes[1], "images": images,
                                "duration_ms": round(ms, 3)}})
