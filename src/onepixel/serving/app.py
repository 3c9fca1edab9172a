"""The MAX-API ASGI app (FastAPI): routes, the inference gate, request parsing off the loop.

Endpoints
---------
``POST /model/predict``
    multipart/form-data, one file field ``image`` (an image of the model's input size, PNG
    for exact results) -> ``{"status": "ok", "predictions": [{"probability": p}]}``. The MAX API.
    A K-class model's prediction also carries its class probabilities and the predicted class:
    ``{"probability": p[top], "label": NAME, "probabilities": [p0, ..., pK-1]}``, where
    ``probability`` is that of the predicted class (as in MAX's image classifiers).
``POST /model/predict_batch``
    the field ``image`` repeated up to ``max_batch`` times -> the same answer with one
    prediction per image, in the order sent.
``GET /model/metadata``
    ``id, name, description, type, license, source`` (the MAX fields) and ``onepixel``: input
    shape, the model file's sha256, the batch endpoint, the server's limits, ``n_classes`` and,
    for K classes, ``classes`` (their names).
``GET /health``
    liveness and load: ``{"status": "ok", "model", "active", "queued", ...}``; never needs the key.
``GET /docs``, ``GET /openapi.json``
    interactive OpenAPI documentation.

Errors are JSON ``{"status": "error", "message": "..."}``: 400 for a missing field, a text
field, too many parts, or an image that is not an image, is corrupt, or has the wrong size; 401
for a missing or wrong API key; 413 for a body over ``max_request_bytes``; 503 (with
``Retry-After``) when more than ``max_queue`` requests wait for the model. Inference runs in
worker threads, at most ``max_concurrency`` model calls at a time, and so do parsing and
decoding of bodies larger than ``INLINE_BODY_BYTES``, so the event loop keeps accepting and
answering requests.

FastAPI is an optional dependency (``pip install 'onepixel[server]'``), imported only when an
app is created.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations (Request,
# defined inside create_app) at run time.
import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.errors import ImageError, ServerError
from onepixel.serving.config import ServerLimits
from onepixel.serving.metadata import model_metadata, served_classes
from onepixel.serving.middleware import GuardMiddleware, RequestTooLarge
from onepixel.version import __version__
from onepixel.wire import (
    IMAGE_FIELD,
    METADATA,
    PREDICT,
    PREDICT_BATCH,
    RequestError,
    decode_image,
    parse_multipart,
)

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from onepixel.models.base import Classifier

log = logging.getLogger(__name__)

#: Bodies up to this size are parsed and decoded on the event loop (about 0.1 ms for the 5
#: stored 64x64 PNGs that fit); larger ones in a worker thread.
INLINE_BODY_BYTES = 64 * 1024


def require(module: str):
    """Import an optional dependency of the server, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ServerError(f"the model server needs {module}: pip install 'onepixel[server]'") from exc


class InferenceGate:
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
            raise RequestError(503, f"server busy: {self.queued} requests already wait for the "
                                    "model; retry later", {"Retry-After": "1"})
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

    def __init__(self, classifier: "Classifier", limits: ServerLimits, metadata: dict,
                 classes: tuple[str, ...]):
        self.classifier = classifier
        self.limits = limits
        self.metadata = metadata
        #: Names of a K-class model's classes; () for a binary model.
        self.classes = classes
        self.input_shape = tuple(int(s) for s in classifier.input_shape)
        self.gate = InferenceGate(limits.max_concurrency, limits.max_queue)
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

    def _infer(self, images: np.ndarray) -> list[dict]:
        """One prediction per image: ``{"probability": p}`` (binary: the MAX answer, unchanged),
        or for K classes ``{"probability": p[top], "label": name, "probabilities": [K]}``."""
        k = len(self.classes)
        want = (len(images), k) if k else (len(images),)
        scores = np.asarray(self.classifier.scores(images), dtype=np.float64)
        scores = scores.reshape(-1) if not k else scores
        if scores.shape != want or not np.all(np.isfinite(scores)):
            raise RuntimeError(f"model {self.classifier.name} returned {scores.shape} scores "
                               f"(finite: {bool(np.all(np.isfinite(scores)))}) for {len(images)} "
                               f"images; expected {want}")
        if not k:
            return [{"probability": s} for s in scores.tolist()]
        top = scores.argmax(axis=1)
        # tolist() gives Python floats with every digit, so clients get the exact float64s.
        return [{"probability": row[t], "label": self.classes[t], "probabilities": row}
                for row, t in zip(scores.tolist(), top.tolist(), strict=True)]

    def parse_and_decode(self, body: bytes, content_type: str, max_files: int) -> np.ndarray:
        """uint8 images (N, H, W, 3) from a multipart body; :class:`RequestError` (400) if bad."""
        parts = parse_multipart(body, content_type, IMAGE_FIELD, max_files)
        try:
            return self._decode_all(parts)
        except ImageError as exc:
            raise RequestError(400, str(exc)) from None

    async def predict(self, images: np.ndarray) -> list[dict]:
        predictions = await self.gate.run(self._infer, images)
        self.requests += 1
        self.images += len(predictions)
        return predictions


_MULTIPART_DOC = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [IMAGE_FIELD],
            "properties": {IMAGE_FIELD: {"type": "string", "format": "binary",
                                         "description": "An image of the model's input size "
                                                        "(64x64 for the MAX model), PNG for exact "
                                                        "results"}},
        }}},
    }
}
_BATCH_DOC = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [IMAGE_FIELD],
            "properties": {IMAGE_FIELD: {"type": "array",
                                         "items": {"type": "string", "format": "binary"},
                                         "description": "The field 'image' repeated, one file "
                                                        "per image; scores come back in this "
                                                        "order"}},
        }}},
    }
}


def install_error_handlers(app: Any, body: Callable[[str], dict]) -> None:
    """Answer every failure of ``app`` (a FastAPI app) as JSON ``body(message)``, the same way
    for both protocols: a :class:`~onepixel.wire.RequestError` with its status, an oversized
    body with 413 (and closing the connection), Starlette's HTTP errors as they are, request
    validation with 400, and any crash with 500 (logged)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def problem(status: int, message: str, headers: Mapping[str, str] | None = None):
        return JSONResponse(body(message), status_code=status, headers=dict(headers or {}))

    @app.exception_handler(RequestError)
    async def _on_request_error(request, exc: RequestError):
        return problem(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestTooLarge)
    async def _on_too_large(request, exc: RequestTooLarge):
        return problem(413, str(exc), {"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request, exc: StarletteHTTPException):
        return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request, exc: RequestValidationError):
        return problem(400, f"bad request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _on_crash(request, exc: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return problem(500, f"the model failed on this request ({type(exc).__name__}: {exc}); "
                            "see the server log")


def create_app(classifier: "Classifier", api_key: str | None = None, *,
               limits: ServerLimits | None = None, metadata: Mapping[str, Any] | None = None,
               classes: Sequence[str] | None = None, **limit_settings: int) -> "FastAPI":
    """An ASGI app (FastAPI) serving ``classifier`` with the MAX API.

    Parameters
    ----------
    classifier : Classifier
        Scores uint8 images (N, H, W, 3) -> float64 (N,) (binary), or (N, K) class
        probabilities when ``capabilities.n_classes`` is K > 1; called from worker threads.
    api_key : str, optional
        When set, every ``/model/*`` request must carry it (``X-API-Key`` or
        ``Authorization: Bearer``). Not read from the environment here; ``serve`` does that.
    limits : ServerLimits, optional
        Default: ``ServerLimits()``.
    metadata : mapping, optional
        Overrides of the MAX metadata fields (id, name, description, type, license, source).
    classes : sequence of str, optional
        Names of a K-class model's K classes in its output order (default ``"0"`` ..
        ``"K-1"``): ``/model/metadata`` lists them and each prediction's ``label`` is one.
    **limit_settings
        Fields of :class:`ServerLimits` replaced by keyword (``max_batch=64``, ...).

    Returns
    -------
    fastapi.FastAPI
        Run it with any ASGI server (``uvicorn.run(app)``), or use ``serve``, which adds the
        connection-level defences (read timeouts, connection caps).

    Raises
    ------
    ServerError
        FastAPI or python-multipart missing, a bad limit, a model that does not take RGB
        images, or ``classes`` given for a binary model or not K of them.
    """
    fastapi = require("fastapi")
    require("python_multipart")
    import anyio
    from fastapi import Request
    from fastapi.responses import JSONResponse, RedirectResponse
    from pydantic import BaseModel, Field
    from starlette.requests import ClientDisconnect

    known = {f.name for f in dataclasses.fields(ServerLimits)}
    if set(limit_settings) - known:
        raise ServerError(f"unknown limit(s) {', '.join(sorted(set(limit_settings) - known))}; "
                          f"known: {', '.join(sorted(known))}")
    limits = dataclasses.replace(limits or ServerLimits(), **limit_settings)
    if int(classifier.input_shape[2]) != 3:  # uploads are decoded to RGB, as the MAX API's
        raise ServerError(f"{classifier.name} takes {classifier.input_shape[2]}-channel images; "
                          "the server serves RGB models (input shape (H, W, 3)) only")
    names = served_classes(classifier, classes)
    service = _Service(classifier, limits, model_metadata(classifier, limits, metadata, classes),
                       names)
    h, w, _ = service.input_shape

    class Prediction(BaseModel):
        probability: float = Field(description="binary model: the probability of the positive "
                                               "class (the MAX API); K-class model: the "
                                               "probability of the predicted class")
        label: str | None = Field(None, description="K-class model only: the predicted class "
                                                    "(the name in /model/metadata)")
        probabilities: list[float] | None = Field(None, description="K-class model only: the K "
                                                                    "class probabilities, in the "
                                                                    "model's output order")

    class PredictResponse(BaseModel):
        status: str
        predictions: list[Prediction]

    class ErrorResponse(BaseModel):
        status: str
        message: str

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "not multipart, no file field 'image' (or a text field), too many parts, not an "
              f"image, corrupt, or not {w}x{h}"),
        (401, "missing or wrong API key (only when the server has one)"),
        (413, "request body over the size limit"),
        (503, "too many requests waiting for the model; retry after Retry-After seconds"))}

    what = (f"the probabilities of {len(names)} classes ({', '.join(names[:10])}"
            f"{', ...' if len(names) > 10 else ''})" if names
            else "the probability of the positive class")
    app = fastapi.FastAPI(
        title="onepixel model server (MAX API)",
        version=__version__,
        description=(f"Serves **{classifier.name}** ({w}x{h} RGB in, {what} out) with the Model "
                     "Asset eXchange (MAX) API, plus a batch endpoint. "
                     f"Send images as multipart/form-data field `{IMAGE_FIELD}`, e.g. "
                     f"`curl -F {IMAGE_FIELD}=@patch.png http://127.0.0.1:5000{PREDICT}`."),
        redoc_url=None,
    )
    app.state.onepixel = service
    #: Set by ``serve`` to its connection guard, whose counters /health reports.
    app.state.connections = None

    install_error_handlers(app, lambda message: {"status": "error", "message": message})

    async def read_images(request: Request, max_files: int) -> np.ndarray:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise RequestError(400, f"expected a multipart/form-data body with a file field "
                                    f"{IMAGE_FIELD!r} (got content type {ctype or 'none'!r}); e.g. "
                                    f"curl -F {IMAGE_FIELD}=@patch.png URL")
        try:
            body = await request.body()  # at most max_request_bytes: the middleware stops more
        except ClientDisconnect:
            raise RequestError(400, "the client disconnected before sending the whole body") from None
        if len(body) <= INLINE_BODY_BYTES:  # a few images: cheaper than a thread hop
            images = service.parse_and_decode(body, ctype, max_files)
        else:  # parsing and decoding many images is CPU work: off the event loop
            images = await anyio.to_thread.run_sync(service.parse_and_decode, body, ctype, max_files)
        request.state.images = len(images)
        return images

    @app.post(PREDICT, summary="Score one image (the MAX API)",
              response_model=PredictResponse, responses=errors, openapi_extra=_MULTIPART_DOC)
    async def predict(request: Request):
        """Probability of the positive class for one image (multipart field ``image``); for a
        K-class model, also its class probabilities and the predicted class."""
        predictions = await service.predict(await read_images(request, max_files=1))
        return JSONResponse({"status": "ok", "predictions": predictions})

    @app.post(PREDICT_BATCH, summary="Score many images in one request",
              response_model=PredictResponse, responses=errors, openapi_extra=_BATCH_DOC)
    async def predict_batch(request: Request):
        """One prediction per ``image`` field, in the order sent (at most ``max_batch``)."""
        predictions = await service.predict(await read_images(request, max_files=limits.max_batch))
        return JSONResponse({"status": "ok", "predictions": predictions})

    @app.get(METADATA, summary="Model metadata (the MAX API)")
    async def model_metadata_route():
        """MAX fields (id, name, description, type, license, source) and ``onepixel``."""
        return JSONResponse(service.metadata)

    @app.get("/health", summary="Liveness and load")
    async def health():
        """Never needs the API key. ``connections`` (under ``serve``): open connections and
        how many were refused, evicted or timed out."""
        answer = {"status": "ok", "model": classifier.name,
                  "active": service.gate.active, "queued": service.gate.queued,
                  "requests": service.requests, "images": service.images,
                  "uptime_s": round(time.time() - service.started, 3)}
        if app.state.connections is not None:
            answer["connections"] = app.state.connections.stats()
        return JSONResponse(answer)

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/docs")

    app.add_middleware(GuardMiddleware, api_key=api_key, max_request_bytes=limits.max_request_bytes)
    return app
