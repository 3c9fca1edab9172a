"""MAX-compatible HTTP service for any :class:`~onepixel.models.Classifier`.

The papers' attacker saw the model only through the MAX HTTP API of IBM's model container
(an image in, a probability out). This module serves any classifier that way, so the
black-box-over-HTTP setting can be reproduced, and :class:`~onepixel.models.http_backend.
HttpClassifier` attacks it (or a real MAX container, or any service speaking the same API).

Endpoints
---------
``POST /model/predict``
    multipart/form-data, one file field ``image`` (an image of the model's input size, PNG
    for exact results) -> ``{"status": "ok", "predictions": [{"probability": p}]}``. The MAX API.
``POST /model/predict_batch``
    the field ``image`` repeated up to ``max_batch`` times -> the same answer with one
    prediction per image, in the order sent.
``GET /model/metadata``
    ``id, name, description, type, license, source`` (the MAX fields) and ``onepixel``: input
    shape, the model file's sha256, the batch endpoint and the server's limits.
``GET /health``
    liveness and load: ``{"status": "ok", "model", "active", "queued", ...}``; never needs the key.
``GET /docs``, ``GET /openapi.json``
    interactive OpenAPI documentation.

Errors are JSON ``{"status": "error", "message": "..."}``: 400 for a missing field or an image
that is not an image, is corrupt, or has the wrong size; 401 for a missing or wrong API key;
413 for a body over ``max_request_bytes``; 503 (with ``Retry-After``) when more than
``max_queue`` requests wait for the model. Inference runs in worker threads, at most
``max_concurrency`` model calls at a time, and so do parsing and decoding of bodies larger than
``INLINE_BODY_BYTES``, so the event loop keeps accepting and answering requests.

FastAPI and uvicorn are optional dependencies (``pip install 'onepixel[server]'``); they are
imported only when an app is created.
"""

import argparse
import hashlib
import hmac
import io
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel import __version__
from onepixel.datasets.images import to_rgb
from onepixel.errors import ImageError, OnepixelError, ServerError
from onepixel.models.base import Classifier, capabilities_of

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

log = logging.getLogger(__name__)
access_log = logging.getLogger("onepixel.serving.server.access")

#: Environment variable holding the API key (server and client).
API_KEY_ENV = "ONEPIXEL_API_KEY"
API_KEY_HEADER = "x-api-key"
MiB = 1 << 20
DEFAULT_MAX_REQUEST_BYTES = 32 * MiB
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_CONNECTIONS = 256
#: Bodies up to this size are parsed and decoded on the event loop (about 0.1 ms for the 5
#: stored 64x64 PNGs that fit); larger ones in a worker thread.
INLINE_BODY_BYTES = 64 * 1024
#: Image formats the server decodes; anything else is refused before a decoder runs.
IMAGE_FORMATS = ("PNG", "BMP", "TIFF", "JPEG")
#: Paths that never need the API key.
PUBLIC_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})

#: The metadata of IBM's MAX Breast Cancer Mitosis Detector container (its core/model.py).
MAX_MITOSIS_METADATA = {
    "id": "max breast cancer mitosis detector-keras-model",
    "name": "MAX Breast Cancer Mitosis Detector Keras Model",
    "description": "MAX Breast Cancer Mitosis Detector Keras model trained on TUPAC16 data to detect "
                   "mitosis",
    "type": "image_classification",
    "license": "Custom",
    "source": "https://developer.ibm.com/exchanges/models/all/max-breast-cancer-mitosis-detector/",
}


class RequestTooLarge(Exception):  # noqa: N818 - an HTTP condition, answered as 413
    """Raised while reading a request body that grows past the limit."""


class _Problem(Exception):  # noqa: N818 - carries an HTTP error answer
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ServerLimits:
    """Limits that protect the server.

    Attributes
    ----------
    max_request_bytes : int
        Largest request body; larger ones get 413 before they are read.
    max_concurrency : int
        Model calls running at once (1 is fastest on CPU: one call already uses every core).
    max_queue : int
        Requests allowed to wait for the model; more get 503 with ``Retry-After``.
    max_batch : int
        Most images in one ``/model/predict_batch`` request.
    """

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrency: int = 1
    max_queue: int = DEFAULT_MAX_QUEUE
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_concurrency", "max_batch"):
            if getattr(self, name) < 1:
                raise ServerError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ServerError(f"max_queue must be >= 0, got {self.max_queue}")


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key``, else ``$ONEPIXEL_API_KEY``, else None (no key). Empty strings mean none."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    return api_key or None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">IIBBBBB")


def _decode_plain_png(data: bytes, h: int, w: int) -> np.ndarray | None:
    """The fast path for the PNGs :class:`~onepixel.models.http_backend.HttpClassifier` sends.

    8-bit RGB, not interlaced, of size ``w`` x ``h``, every row with filter 0: the pixels are
    the inflated bytes. Every chunk's CRC, the zlib stream (checksum included) and its exact
    length are checked. Anything else returns None, and PIL decodes it (or says what is wrong).
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    idat: list[bytes] = []
    pos, n, seen_header = 8, len(data), False
    while True:
        if pos + 12 > n:
            return None  # no IEND
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        body = data[pos + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != int.from_bytes(data[end - 4 : end], "big"):
            return None
        if not seen_header:
            if kind != b"IHDR" or length != 13 or _PNG_IHDR.unpack(body) != (w, h, 8, 2, 0, 0, 0):
                return None
            seen_header = True
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif not kind[0] & 0x20 and kind != b"PLTE":  # an unknown critical chunk
            return None
        pos = end
    expected = h * (1 + 3 * w)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)  # never more than needed
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + 3 * w)
    if rows[:, 0].any():
        return None  # other row filters: PIL undoes them
    return rows[:, 1:].reshape(h, w, 3).copy()


def decode_image(data: bytes, input_shape: Sequence[int], source: str = "image") -> np.ndarray:
    """Decode an uploaded image into uint8 RGB of the model's input size.

    The size is checked from the header before any pixel is decoded (so a small file that
    claims a huge image costs nothing). Greyscale, palette and RGBA become RGB, as in
    :func:`onepixel.datasets.images.load_image`.

    Parameters
    ----------
    data : bytes
        The file's content (PNG, JPEG, TIFF or BMP).
    input_shape : (H, W) or (H, W, 3)
    source : str
        Names the image in error messages.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8

    Raises
    ------
    ImageError
        Empty, not an image, corrupt or truncated, or of another size; the message says which.
    """
    h, w = int(input_shape[0]), int(input_shape[1])
    if not data:
        raise ImageError(f"{source}: the file is empty; send a {w}x{h} PNG image")
    fast = _decode_plain_png(data, h, w)
    if fast is not None:
        return fast
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not an image ({len(data)} bytes that are not PNG, JPEG, TIFF "
                         f"or BMP); send a {w}x{h} PNG image") from None
    except Exception as exc:  # PIL raises many types for broken headers
        raise ImageError(f"{source}: corrupt image header ({exc}); send a {w}x{h} PNG image") from None
    with img:
        if img.size != (w, h):
            raise ImageError(f"{source}: image is {img.size[0]}x{img.size[1]} (WxH) but the model "
                             f"takes {w}x{h}; crop or tile it first (images are never resized)")
        try:
            img.load()
            if img.mode != "RGB":
                img = to_rgb(img)
            array = np.asarray(img, dtype=np.uint8)
        except Exception as exc:  # truncated data, bad CRC, decoder errors
            raise ImageError(f"{source}: corrupt or truncated {img.format} image ({exc})") from None
    if array.shape != (h, w, 3):
        raise ImageError(f"{source}: decoded to shape {array.shape}, expected ({h}, {w}, 3)")
    return array


class _PartCollector:
    """python-multipart callbacks that keep the parts named ``field``, in order."""

    def __init__(self, field: str, max_files: int, what: str):
        self.field = field.encode()
        self.max_files = max_files
        self.what = what
        self.parts: list[tuple[str, bytes]] = []
        self.ended = False
        self._header = self._value = self._disposition = b""
        self._chunks: list[bytes] = []

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self._chunks = []
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != self.field:
            return
        if len(self.parts) >= self.max_files:
            raise _Problem(400, self.what)
        filename = options.get(b"filename", b"").decode("utf-8", "replace")
        self.parts.append((filename, b"".join(self._chunks)))

    def on_end(self) -> None:
        self.ended = True


def parse_multipart(body: bytes, content_type: str, field: str = "image",
                    max_files: int = DEFAULT_MAX_BATCH) -> list[tuple[str, bytes]]:
    """The parts named ``field`` of a multipart/form-data body, as (filename, content), in order.

    Parts with other names are ignored; a part named ``field`` counts whether or not it has a
    filename (curl ``-F image=@file`` sends one).

    Raises
    ------
    _Problem
        400: not multipart, no boundary, malformed or incomplete, more than ``max_files``
        parts named ``field``, or none.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    mime, params = parse_options_header(content_type)
    example = f"curl -F {field}=@patch.png URL"
    if mime != b"multipart/form-data":
        raise _Problem(400, f"expected a multipart/form-data body with a file field {field!r} (got "
                            f"content type {content_type or 'none'!r}); e.g. {example}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise _Problem(400, "the multipart/form-data Content-Type has no boundary")
    too_many = (f"{max_files} image(s) at most per request here" +
                ("; send several to /model/predict_batch" if max_files == 1 else
                 "; split the batch (the server's --max-batch)"))
    collector = _PartCollector(field, max_files, too_many)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise _Problem(400, f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise _Problem(400, "incomplete multipart body (no closing boundary); send the whole body")
    if not collector.parts:
        raise _Problem(400, f"missing file field {field!r}: send the image as multipart/form-data "
                            f"field {field!r} ({example})")
    return collector.parts


def model_metadata(classifier: "Classifier", limits: ServerLimits | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict:
    """The ``/model/metadata`` answer for a classifier.

    The MAX fields (id, name, description, type, license, source) are IBM's for the built-in
    model and generic otherwise; ``overrides`` replaces any of them. The ``onepixel`` entry
    lets :class:`~onepixel.models.http_backend.HttpClassifier` use the batch endpoint, the
    input shape and the model's sha256 (so campaigns resume across in-process and HTTP runs).
    """
    limits = limits or ServerLimits()
    name = classifier.name
    h, w, c = classifier.input_shape
    if name == "max-mitosis":
        meta = dict(MAX_MITOSIS_METADATA)
    else:
        meta = {"id": name, "name": name,
                "description": f"{name}: probability of the positive class of a {w}x{h} RGB image",
                "type": "image_classification", "license": "unknown", "source": ""}
    meta.update(overrides or {})
    meta["onepixel"] = {
        "version": __version__,
        "model": name,
        "sha256": capabilities_of(classifier).fingerprint,
        "engine": type(classifier).__name__,
        "input_shape": [int(h), int(w), int(c)],
        "predict_batch": "/model/predict_batch",
        "max_batch": limits.max_batch,
        "max_request_bytes": limits.max_request_bytes,
    }
    return meta


class _InferenceGate:
    """At most ``max_concurrency`` model calls at once, in worker threads; at most
    ``max_queue`` waiting, the rest refused (503). Serves one event loop (as any ASGI server
    runs an app)."""

    def __init__(self, max_concurrency: int, max_queue: int):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.active = 0
        self.queued = 0
        self._limiter = None  # created inside the event loop on first use

    async def run(self, fn, *args):
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        if self.active + self.queued >= self.max_concurrency + self.max_queue:
            raise _Problem(503, f"server busy: {self.queued} requests already wait for the model; "
                                "retry later", {"Retry-After": "1"})
        self.queued += 1
        try:
            await self._limiter.acquire()
        finally:
            self.queued -= 1
        self.active += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.active -= 1
            self._limiter.release()


class _Service:
    """The state behind the routes: the classifier, its limits, counters."""

    def __init__(self, classifier: "Classifier", limits: ServerLimits, metadata: dict):
        self.classifier = classifier
        self.limits = limits
        self.metadata = metadata
        self.input_shape = tuple(int(s) for s in classifier.input_shape)
        self.gate = _InferenceGate(limits.max_concurrency, limits.max_queue)
        self.started = time.time()
        self.requests = 0
        self.images = 0

    def _decode_all(self, parts: list[tuple[str, bytes]]) -> np.ndarray:
        arrays = []
        for i, (filename, data) in enumerate(parts):
            source = f"image {i}" if len(parts) > 1 else "image"
            if filename:
                source += f" {filename!r}"
            arrays.append(decode_image(data, self.input_shape, source))
        return np.stack(arrays)

    def _infer(self, images: np.ndarray) -> list[float]:
        scores = np.asarray(self.classifier.scores(images), dtype=np.float64).reshape(-1)
        if scores.shape != (len(images),) or not np.all(np.isfinite(scores)):
            raise RuntimeError(f"model {self.classifier.name} returned {scores.shape} scores "
                               f"(finite: {bool(np.all(np.isfinite(scores)))}) for {len(images)} images")
        return scores.tolist()

    def parse_and_decode(self, body: bytes, content_type: str, max_files: int) -> np.ndarray:
        """uint8 images (N, H, W, 3) from a multipart body; :class:`_Problem` (400) if bad."""
        parts = parse_multipart(body, content_type, "image", max_files)
        try:
            return self._decode_all(parts)
        except ImageError as exc:
            raise _Problem(400, str(exc)) from None

    async def score(self, images: np.ndarray) -> list[float]:
        scores = await self.gate.run(self._infer, images)
        self.requests += 1
        self.images += len(scores)
        return scores


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ServerError(f"the model server needs {module}: pip install 'onepixel[server]'") from exc


def _json_body(message: str) -> bytes:
    import json

    return json.dumps({"status": "error", "message": message}).encode()


class _GuardMiddleware:
    """Pure ASGI middleware: access log, request size limit, API key (constant-time check)."""

    def __init__(self, app, api_key: str | None, max_request_bytes: int):
        self.app = app
        self.max_request_bytes = max_request_bytes
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
        if self._key_digest is not None and scope["path"] not in PUBLIC_PATHS:
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
                body = _json_body(message)
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


_MULTIPART_DOC = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary",
                                     "description": "An image of the model's input size "
                                                    "(64x64 for the MAX model), PNG for exact results"}},
        }}},
    }
}
_BATCH_DOC = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "array",
                                     "items": {"type": "string", "format": "binary"},
                                     "description": "The field 'image' repeated, one file per "
                                                    "image; scores come back in this order"}},
        }}},
    }
}


def create_app(classifier: "Classifier", api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_concurrency: int = 1,
               max_queue: int = DEFAULT_MAX_QUEUE, max_batch: int = DEFAULT_MAX_BATCH,
               metadata: Mapping[str, Any] | None = None) -> "FastAPI":
    """An ASGI app (FastAPI) serving ``classifier`` with the MAX API.

    Parameters
    ----------
    classifier : Classifier
        Scores uint8 images (N, H, W, 3) -> float64 (N,); called from worker threads.
    api_key : str, optional
        When set, every ``/model/*`` request must carry it (``X-API-Key`` or
        ``Authorization: Bearer``). Not read from the environment here; :func:`serve` does that.
    max_request_bytes, max_concurrency, max_queue, max_batch
        See :class:`ServerLimits`.
    metadata : mapping, optional
        Overrides of the MAX metadata fields (id, name, description, type, license, source).

    Returns
    -------
    fastapi.FastAPI
        Run it with any ASGI server (``uvicorn.run(app)``), or use :func:`serve`.
    """
    fastapi = _require("fastapi")
    _require("python_multipart")
    import anyio
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, RedirectResponse
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    limits = ServerLimits(max_request_bytes=max_request_bytes, max_concurrency=max_concurrency,
                          max_queue=max_queue, max_batch=max_batch)
    service = _Service(classifier, limits, model_metadata(classifier, limits, metadata))
    h, w, _ = service.input_shape

    class Prediction(BaseModel):
        probability: float

    class PredictResponse(BaseModel):
        status: str
        predictions: list[Prediction]

    class ErrorResponse(BaseModel):
        status: str
        message: str

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "not multipart, no field 'image', not an image, corrupt, or not "
              f"{w}x{h}"),
        (401, "missing or wrong API key (only when the server has one)"),
        (413, "request body over the size limit"),
        (503, "too many requests waiting for the model; retry after Retry-After seconds"))}

    app = fastapi.FastAPI(
        title="onepixel model server (MAX API)",
        version=__version__,
        description=(f"Serves **{classifier.name}** ({w}x{h} RGB in, probability of the positive "
                     "class out) with the Model Asset eXchange (MAX) API, plus a batch endpoint. "
                     "Send images as multipart/form-data field `image`, e.g. "
                     "`curl -F image=@patch.png http://127.0.0.1:5000/model/predict`."),
        redoc_url=None,
    )
    app.state.onepixel = service

    def problem(status: int, message: str, headers: Mapping[str, str] | None = None):
        return JSONResponse({"status": "error", "message": message}, status_code=status,
                            headers=dict(headers or {}))

    @app.exception_handler(_Problem)
    async def _on_problem(request: Request, exc: _Problem):
        return problem(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestTooLarge)
    async def _on_too_large(request: Request, exc: RequestTooLarge):
        return problem(413, str(exc), {"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException):
        return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError):
        return problem(400, f"bad request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return problem(500, f"the model failed on this request ({type(exc).__name__}: {exc}); "
                            "see the server log")

    async def read_images(request: Request, max_files: int) -> np.ndarray:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise _Problem(400, "expected a multipart/form-data body with a file field 'image' "
                                f"(got content type {ctype or 'none'!r}); e.g. "
                                "curl -F image=@patch.png URL")
        try:
            body = await request.body()  # at most max_request_bytes: the middleware stops more
        except ClientDisconnect:
            raise _Problem(400, "the client disconnected before sending the whole body") from None
        if len(body) <= INLINE_BODY_BYTES:  # a few images: cheaper than a thread hop
            images = service.parse_and_decode(body, ctype, max_files)
        else:  # parsing and decoding many images is CPU work: off the event loop
            images = await anyio.to_thread.run_sync(service.parse_and_decode, body, ctype, max_files)
        request.state.images = len(images)
        return images

    @app.post("/model/predict", summary="Score one image (the MAX API)",
              response_model=PredictResponse, responses=errors, openapi_extra=_MULTIPART_DOC)
    async def predict(request: Request):
        """Probability of the positive class for one image (multipart field ``image``)."""
        scores = await service.score(await read_images(request, max_files=1))
        return JSONResponse({"status": "ok", "predictions": [{"probability": s} for s in scores]})

    @app.post("/model/predict_batch", summary="Score many images in one request",
              response_model=PredictResponse, responses=errors, openapi_extra=_BATCH_DOC)
    async def predict_batch(request: Request):
        """One prediction per ``image`` field, in the order sent (at most ``max_batch``)."""
        scores = await service.score(await read_images(request, max_files=limits.max_batch))
        return JSONResponse({"status": "ok", "predictions": [{"probability": s} for s in scores]})

    @app.get("/model/metadata", summary="Model metadata (the MAX API)")
    async def model_metadata_route():
        """MAX fields (id, name, description, type, license, source) and ``onepixel``."""
        return JSONResponse(service.metadata)

    @app.get("/health", summary="Liveness and load")
    async def health():
        """Never needs the API key."""
        return JSONResponse({"status": "ok", "model": classifier.name,
                             "active": service.gate.active, "queued": service.gate.queued,
                             "requests": service.requests, "images": service.images,
                             "uptime_s": round(time.time() - service.started, 3)})

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/docs")

    app.add_middleware(_GuardMiddleware, api_key=api_key, max_request_bytes=limits.max_request_bytes)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                          "--port or stop the process that uses it") from None
    sock.set_inheritable(True)
    return sock


def serve(classifier: "Classifier", host: str = "127.0.0.1", port: int = 5000,
          api_key: str | None = None, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
          timeout_keep_alive: float = 30.0, **app_options: Any) -> None:
    """Serve ``classifier`` with the MAX API until interrupted (SIGINT / SIGTERM).

    Parameters
    ----------
    host : str
        Address to bind; loopback by default. Binding elsewhere without an API key logs a warning.
    port : int
        0 picks a free port (logged).
    api_key : str, optional
        Else ``$ONEPIXEL_API_KEY``; no key when neither is set.
    max_connections : int
        Open connections at once (uvicorn's ``limit_concurrency``); more get 503.
    timeout_keep_alive : float
        Seconds an idle keep-alive connection stays open.
    **app_options
        ``max_request_bytes``, ``max_concurrency``, ``max_queue``, ``max_batch``, ``metadata``:
        see :func:`create_app`.

    Raises
    ------
    ServerError
        Missing dependencies, bad limits, or the address cannot be bound.
    """
    uvicorn = _require("uvicorn")
    api_key = resolve_api_key(api_key)
    app = create_app(classifier, api_key=api_key, **app_options)
    if not _is_loopback(host) and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can query "
                    "the model; set --api-key or $%s", host, API_KEY_ENV)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, access_log=False, log_config=None, server_header=False,
                            limit_concurrency=max_connections, timeout_keep_alive=timeout_keep_alive,
                            lifespan="off")
    shown = f"[{host}]" if ":" in host else host
    log.info("serving %s on http://%s:%d (API docs at /docs%s)", classifier.name, shown, bound,
             ", API key required" if api_key else "")
    uvicorn.Server(config).run(sockets=[sock])


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options (host, port, key, limits); see :func:`server_options`."""
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only)")
    g.add_argument("--port", type=int, default=5000, help="port (default: %(default)s; 0: any free)")
    g.add_argument("--api-key", default=None,
                   help=f"require this key (X-API-Key header); default: ${API_KEY_ENV} if set. "
                        "Prefer the variable: command lines are visible to other users")
    g.add_argument("--max-concurrency", type=int, default=1,
                   help="model calls at once (default: %(default)s)")
    g.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help="requests waiting for the model before 503s (default: %(default)s)")
    g.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help="most images per /model/predict_batch request (default: %(default)s)")
    g.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / MiB,
                   help="largest request body in MiB (default: %(default)s)")


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`serve` from :func:`add_server_arguments`' options."""
    return {"host": args.host, "port": args.port, "api_key": args.api_key,
            "max_concurrency": args.max_concurrency, "max_queue": args.max_queue,
            "max_batch": args.max_batch,
            "max_request_bytes": max(1, int(args.max_request_mb * MiB))}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m onepixel.serving.server [--model SPEC] [--host] [--port] [--api-key] ...``."""
    parser = argparse.ArgumentParser(prog="python -m onepixel.serving.server",
                                     description="Serve a model with the MAX HTTP API.")
    parser.add_argument("--model", default="max-mitosis", help="model spec (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--batch-size", type=int, default=None, help="images per model call")
    parser.add_argument("--assets", default=None, metavar="DIR", help="folder with local assets")
    parser.add_argument("-q", "--quiet", action="store_true", help="no access log")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from onepixel.models import ModelOptions, load_classifier

    try:
        classifier = load_classifier(args.model, ModelOptions(
            device=args.device, engine=args.engine, batch_size=args.batch_size,
            assets_dir=args.assets))
        serve(classifier, **server_options(args))
    except OnepixelError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
