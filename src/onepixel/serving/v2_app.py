"""The Open Inference Protocol (KServe "v2") ASGI app: ``onepixel serve --protocol v2``.

Endpoints (REST; ``NAME`` is the model's name, ``/versions/1`` may follow it)
-----------------------------------------------------------------------------
``GET /v2``
    server metadata: name, version, extensions (``binary_tensor_data``).
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/NAME/ready``
    200 when up (never need the API key, except the model's).
``GET /v2/models/NAME``
    model metadata: one input ``images`` (UINT8, ``[-1, H, W, C]``), one output
    ``probabilities`` (FP64, ``[-1, K]``; K = 1 for a binary model: the probability of the
    positive class), and ``parameters``: ``model_output: "probability"`` and ``onepixel``
    (model name, sha256, classes).
``POST /v2/models/NAME/infer``
    ``{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [N, H, W, C], "data": [...]}]}``
    (``data`` flat or nested), or the binary tensor data extension (a JSON header of
    ``Inference-Header-Content-Length`` bytes, then the raw tensor, ``binary_data_size`` in the
    input's parameters). The answer is JSON, or binary where the request asks
    (``outputs[].parameters.binary_data`` or ``parameters.binary_data_output``).

Every bad request gets a 4xx with ``{"error": "..."}``: 400 for malformed JSON or headers, a
wrong input name, datatype or shape, data that does not fit the shape or is not 0..255, more
than ``max_batch`` images; 401 for a missing or wrong key; 404 for another model or version;
413 for a body over ``max_request_bytes``; 503 (``Retry-After``) when the model's queue is full.
The limits, the inference gate and the connection defences are the MAX server's
(:mod:`onepixel.serving.app`, :mod:`onepixel.serving.connections`).
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.errors import ServerError
from onepixel.serving.app import InferenceGate, install_error_handlers, require
from onepixel.serving.config import ServerLimits
from onepixel.serving.metadata import model_metadata, served_classes
from onepixel.serving.middleware import GuardMiddleware
from onepixel.version import __version__
from onepixel.wire import RequestError

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from onepixel.models.base import Classifier

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
VERSION = "1"
#: Paths under which the health answers need no API key.
PUBLIC_V2_PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready"})
#: Bodies up to this size are parsed on the event loop, larger ones in a worker thread.
INLINE_BODY_BYTES = 64 * 1024


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


class V2Service:
    """The state behind the routes, and the checked parsing of infer requests."""

    def __init__(self, classifier: "Classifier", limits: ServerLimits, metadata: dict,
                 classes: tuple[str, ...]):
        self.classifier = classifier
        self.limits = limits
        self.classes = classes
        self.k = len(classes) or 1
        self.input_shape = tuple(int(s) for s in classifier.input_shape)
        self.name = classifier.name
        self.gate = InferenceGate(limits.max_concurrency, limits.max_queue)
        self.started = time.time()
        self.requests = 0
        self.images = 0
        ours = {k: metadata["onepixel"][k] for k in ("model", "sha256", "engine", "version",
                                                      "max_batch", "max_request_bytes", "n_classes")}
        if classes:
            ours["classes"] = list(classes)
        self.metadata = {
            "name": self.name, "versions": [VERSION], "platform": "onepixel",
            "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1, self.k]}],
            "parameters": {"model_output": "probability", "onepixel": ours},
        }

    def parse(self, body: bytes, header_length: str | None) -> tuple[np.ndarray, dict, bool]:
        """(uint8 images (N, H, W, C), the request JSON, binary answer?) from an infer body.

        Raises
        ------
        RequestError
            400 with what is wrong, for anything but a well-formed request of this model's input.
        """
        if header_length is not None:
            try:
                split = int(header_length)
            except ValueError:
                raise _bad(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}") from None
            if not 0 < split <= len(body):
                raise _bad(f"{HEADER_LENGTH} {split} does not fit a body of {len(body)} bytes")
            head, rest = body[:split], body[split:]
        else:
            head, rest = body, b""
        try:
            request = json.loads(head)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"the request is not JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise _bad("the request must be a JSON object with 'inputs': [{name, datatype, shape, "
                       "data}]")
        inputs = request["inputs"]
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise _bad(f"expected exactly one input {INPUT_NAME!r}, got {len(inputs)}")
        tensor = inputs[0]
        if tensor.get("name") != INPUT_NAME:
            raise _bad(f"unknown input {tensor.get('name')!r}; this model's input is {INPUT_NAME!r}")
        if tensor.get("datatype") != "UINT8":
            raise _bad(f"input {INPUT_NAME!r} must have datatype 'UINT8', got "
                       f"{tensor.get('datatype')!r}")
        shape = tensor.get("shape")
        h, w, c = self.input_shape
        if (not isinstance(shape, list) or len(shape) != 4
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
                or shape[1:] != [h, w, c]):
            raise _bad(f"input {INPUT_NAME!r} must have shape [N, {h}, {w}, {c}], got {shape!r}")
        n = shape[0]
        if not 1 <= n <= self.limits.max_batch:
            raise _bad(f"{n} images in one request; send 1 to {self.limits.max_batch}")
        size = n * h * w * c
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise _bad("the input's parameters must be an object")
        if "binary_data_size" in params:
            declared = params["binary_data_size"]
            if header_length is None:
                raise _bad(f"binary_data_size without the {HEADER_LENGTH} header")
            if declared != size or len(rest) != size:
                raise _bad(f"input {INPUT_NAME!r} of shape {shape} is {size} bytes; "
                           f"binary_data_size says {declared!r} and the body has {len(rest)}")
            images = np.frombuffer(rest, dtype=np.uint8).reshape(shape)
        else:
            if rest:
                raise _bad(f"{len(rest)} bytes after the JSON header, but no input declares "
                           "binary_data_size")
            images = self._from_json(tensor.get("data"), shape, size)
        return images, request, self._binary_answer(request)

    def _from_json(self, data: Any, shape: list[int], size: int) -> np.ndarray:
        if not isinstance(data, list):
            raise _bad(f"input {INPUT_NAME!r} needs 'data': a list of {size} integers 0..255")
        try:
            values = np.array(data)
        except (ValueError, TypeError):
            raise _bad("input 'data' is not a flat or regularly nested list of numbers") from None
        if values.size != size:
            raise _bad(f"input {INPUT_NAME!r} of shape {shape} needs {size} values, got {values.size}")
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
            raise _bad(f"input {INPUT_NAME!r} values must be integers 0..255")
        return values.astype(np.uint8).reshape(shape)

    @staticmethod
    def _binary_answer(request: dict) -> bool:
        outputs = request.get("outputs")
        if outputs is not None:
            if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
                raise _bad("'outputs' must be a list of {name, parameters}")
            for out in outputs:
                if out.get("name") != OUTPUT_NAME:
                    raise _bad(f"unknown output {out.get('name')!r}; this model's output is "
                               f"{OUTPUT_NAME!r}")
        params = request.get("parameters") or {}
        if not isinstance(params, dict):
            raise _bad("the request's parameters must be an object")
        wanted = [bool((o.get("parameters") or {}).get("binary_data")) for o in outputs or []
                  if isinstance(o.get("parameters") or {}, dict)]
        return any(wanted) or bool(params.get("binary_data_output"))

    def infer(self, images: np.ndarray) -> np.ndarray:
        """(N, K) float64 probabilities; K = 1: the positive class's."""
        scores = np.asarray(self.classifier.scores(images), dtype=np.float64)
        scores = scores.reshape(len(images), self.k)
        if not np.all(np.isfinite(scores)):
            raise RuntimeError(f"model {self.name} returned scores that are not finite")
        return scores

    def answer(self, scores: np.ndarray, request: dict, binary: bool) -> tuple[bytes, dict[str, str]]:
        """The infer response body and its headers."""
        out: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP64", "shape": list(scores.shape)}
        head: dict[str, Any] = {"model_name": self.name, "model_version": VERSION, "outputs": [out]}
        if isinstance(request.get("id"), str):
            head["id"] = request["id"]
        if not binary:
            out["data"] = scores.reshape(-1).tolist()  # every float64 digit
            return json.dumps(head).encode(), {"content-type": "application/json"}
        raw = scores.astype("<f8").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps(head).encode()
        return header + raw, {"content-type": "application/octet-stream",
                              HEADER_LENGTH: str(len(header))}


def create_v2_app(classifier: "Classifier", api_key: str | None = None, *,
                  limits: ServerLimits | None = None, metadata: Mapping[str, Any] | None = None,
                  classes: Sequence[str] | None = None, **limit_settings: int) -> "FastAPI":
    """An ASGI app (FastAPI) serving ``classifier`` with the Open Inference Protocol (REST).

    Parameters are those of :func:`~onepixel.serving.app.create_app`; ``metadata`` overrides
    fields of the MAX metadata that the ``parameters.onepixel`` entry is built from.

    Raises
    ------
    ServerError
        FastAPI missing, a bad limit, or ``classes`` that do not fit the model.
    """
    fastapi = require("fastapi")
    import anyio
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect

    known = {f.name for f in dataclasses.fields(ServerLimits)}
    if set(limit_settings) - known:
        raise ServerError(f"unknown limit(s) {', '.join(sorted(set(limit_settings) - known))}; "
                          f"known: {', '.join(sorted(known))}")
    limits = dataclasses.replace(limits or ServerLimits(), **limit_settings)
    names = served_classes(classifier, classes)
    service = V2Service(classifier, limits, model_metadata(classifier, limits, metadata, classes),
                        names)
    base = f"/v2/models/{service.name}"
    app = fastapi.FastAPI(
        title="onepixel model server (Open Inference Protocol)", version=__version__,
        description=(f"Serves **{service.name}** with the Open Inference Protocol (KServe v2, REST, "
                     f"with the binary tensor data extension): `GET {base}` for its tensors, "
                     f"`POST {base}/infer` to score UINT8 images [N, "
                     f"{', '.join(map(str, service.input_shape))}]."),
        redoc_url=None)
    app.state.onepixel = service
    app.state.connections = None

    install_error_handlers(app, lambda message: {"error": message})

    def check_model(name: str, version: str | None) -> None:
        if name != service.name:
            raise RequestError(404, f"no model {name!r}; this server serves {service.name!r}")
        if version is not None and version != VERSION:
            raise RequestError(404, f"no version {version!r} of {name!r}; it has {VERSION!r}")

    @app.get("/v2", summary="Server metadata")
    async def server_metadata():
        return JSONResponse({"name": "onepixel", "version": __version__,
                             "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", summary="Liveness")
    async def live():
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", summary="Readiness (and load)")
    async def ready():
        answer = {"ready": True, "active": service.gate.active, "queued": service.gate.queued,
                  "requests": service.requests, "images": service.images,
                  "uptime_s": round(time.time() - service.started, 3)}
        if app.state.connections is not None:
            answer["connections"] = app.state.connections.stats()
        return JSONResponse(answer)

    async def model_ready(name: str, version: str | None = None):
        check_model(name, version)
        return JSONResponse({"name": name, "ready": True})

    async def model_metadata_route(name: str, version: str | None = None):
        check_model(name, version)
        return JSONResponse(service.metadata)

    async def infer(request: Request, name: str, version: str | None = None):
        check_model(name, version)
        try:
            body = await request.body()  # at most max_request_bytes: the middleware stops more
        except ClientDisconnect:
            raise RequestError(400, "the client disconnected before sending the whole body") from None
        header_length = request.headers.get(HEADER_LENGTH)
        if len(body) <= INLINE_BODY_BYTES:
            images, parsed, binary = service.parse(body, header_length)
        else:  # parsing megabytes of JSON is CPU work: off the event loop
            images, parsed, binary = await anyio.to_thread.run_sync(service.parse, body,
                                                                    header_length)
        request.state.images = len(images)
        scores = await service.gate.run(service.infer, images)
        service.requests += 1
        service.images += len(images)
        content, headers = service.answer(scores, parsed, binary)
        return Response(content, headers=headers)

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata_route, methods=["GET"], summary="Model metadata")
        app.add_api_route(f"{prefix}/ready", model_ready, methods=["GET"], summary="Model readiness")
        app.add_api_route(f"{prefix}/infer", infer, methods=["POST"], summary="Score images")

    app.add_middleware(GuardMiddleware, api_key=api_key, max_request_bytes=limits.max_request_bytes,
                       public_paths=PUBLIC_V2_PATHS, error_key="error")
    return app
