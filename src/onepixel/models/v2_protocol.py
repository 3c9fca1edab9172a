"""A Classifier behind a service that speaks the Open Inference Protocol (KServe "v2").

Triton, KServe, Seldon MLServer, TorchServe and ``onepixel serve --protocol v2`` speak it:
``GET /v2/models/NAME[/versions/V]`` gives the model's typed input and output tensors, and
``POST .../infer`` takes typed tensors as JSON, or as raw bytes after a JSON header (the binary
tensor data extension: header ``Inference-Header-Content-Length``, ``binary_data_size``).

:class:`V2Classifier` reads the metadata for the input's name, shape (NHWC or NCHW) and
datatype and for the output; sends batches of uint8 images as that tensor; and turns the
output into what ``Classifier.scores`` returns, honest probabilities: logits go through a
sigmoid (one column) or a softmax (several), probabilities are used as they are, and either is
checked (:func:`~onepixel.models.base.validate_probabilities`). Which the output is comes from
``model_output`` when given, else from the metadata's ``parameters.model_output`` (as
``onepixel serve --protocol v2`` declares it), else probabilities.

JSON or binary is chosen by measurement (``encoding="auto"``): the first batch goes both ways,
twice, and the faster is kept (both must give the same scores); a server that refuses binary
bodies gets JSON. Connections, retries, timeouts and concurrency are
:class:`~onepixel.models.http_transport.HttpTransport`'s, as for the MAX client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from onepixel.errors import HttpError, ModelError
from onepixel.models.base import (
    ModelIO,
    check_batch,
    class_probabilities,
    n_classes_for,
    validate_probabilities,
)
from onepixel.models.http_transport import HttpTransport, RemoteClassifier, TransportConfig
from onepixel.wire import API_KEY_ENV

log = logging.getLogger(__name__)

__all__ = ["HEADER_LENGTH", "V2Classifier", "is_v2_url", "parse_v2_url"]

#: The binary tensor data extension's header: bytes of JSON before the raw tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"
ENCODINGS = ("auto", "json", "binary")
#: Open Inference Protocol datatypes and their numpy types (BYTES and BF16 are not scores).
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
#: Input datatypes that hold the pixel values 0..255 exactly.
INPUT_DATATYPES = ("UINT8", "UINT16", "UINT32", "UINT64", "INT16", "INT32", "INT64", "FP16",
                   "FP32", "FP64")

_PATH = re.compile(r"^(?P<root>.*?)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                   r"(?:/(?:infer|ready))?/?$")


def is_v2_url(spec: str) -> bool:
    """Whether ``spec`` is an http(s) URL of an Open Inference Protocol model."""
    parts = urlsplit(spec)
    return parts.scheme in ("http", "https") and bool(_PATH.match(parts.path))


def parse_v2_url(url: str) -> tuple[str, str, str | None]:
    """``http(s)://HOST:PORT[/prefix]/v2/models/NAME[/versions/V]`` -> (root, name, version).

    Raises
    ------
    ModelError
        Not such a URL.
    """
    parts = urlsplit(url)
    match = _PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or not match:
        raise ModelError(f"not an Open Inference Protocol model URL: {url!r}; use "
                         "http(s)://HOST:PORT/v2/models/NAME[/versions/VERSION]")
    version = match["version"]
    return (f"{parts.scheme}://{parts.netloc}{match['root']}", unquote(match["name"]),
            unquote(version) if version else None)


class V2Classifier(RemoteClassifier):
    """Classifier for a model served with the Open Inference Protocol (REST).

    Parameters
    ----------
    url : str
        ``http(s)://HOST:PORT[/prefix]/v2/models/NAME[/versions/VERSION]``.
    version : str, optional
        Model version (over the URL's).
    model_output : {"probability", "logit"}, optional
        What the output tensor holds; default from the metadata's ``parameters.model_output``,
        else probabilities (checked either way).
    positive_index : int, optional
        Column of the positive class: scores the model as binary (N,).
    output_name : str, optional
        The output tensor to use, where the model has several.
    encoding : {"auto", "json", "binary"}
        Tensors as JSON, as binary data, or chosen by measurement on the first batch.
    batch_size : int
        Images per request.
    api_key : str, optional
        Sent as ``Authorization: Bearer KEY``; default ``$ONEPIXEL_API_KEY``.
    input_shape : (H, W, C), optional
        Where the metadata leaves the image size open (-1).
    timeout, retries, concurrency, backoff, max_backoff, headers, verify
        The transport's (:class:`~onepixel.models.http_transport.TransportConfig`).
    transport : httpx transport, optional
        For tests.

    Attributes
    ----------
    name, fingerprint : str
        From the metadata: ``onepixel serve`` gives the model's name and sha256 in
        ``parameters``; otherwise the model name and the sha256 of the metadata JSON.
    metadata : dict
    encoding : str
        ``json`` or ``binary`` once chosen; ``auto`` before the first batch.
    encoding_seconds : dict
        The measurement that chose it: best seconds per request of the first batch, per encoding.
    n_queries, n_images, n_retries : int
    """

    def __init__(self, url: str, *, version: str | None = None, model_output: str | None = None,
                 positive_index: int | None = None, output_name: str | None = None,
                 encoding: str = "auto", batch_size: int = 128, api_key: str | None = None,
                 input_shape: tuple[int, int, int] | None = None, timeout: float = 60.0,
                 retries: int = 8, concurrency: int = 4, backoff: float = 0.25,
                 max_backoff: float = 8.0, headers: dict[str, str] | None = None,
                 verify: bool | str | None = None, transport: Any = None):
        root, model, url_version = parse_v2_url(url)
        if encoding not in ENCODINGS:
            raise ModelError(f"V2Classifier.encoding must be one of {', '.join(ENCODINGS)}, got "
                             f"{encoding!r}")
        if model_output not in (None, "probability", "logit"):
            raise ModelError(f"model_output must be 'probability' or 'logit', got {model_output!r}")
        if batch_size < 1:
            raise ModelError(f"V2Classifier.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.version = version if version is not None else url_version
        self.path = f"/v2/models/{quote(model, safe='')}" + (
            f"/versions/{quote(self.version, safe='')}" if self.version else "")
        self.url = root + self.path
        self.encoding = encoding
        self.encoding_seconds: dict[str, float] = {}
        self.batch_size = batch_size
        self.n_queries = 0
        self.n_images = 0
        self._lock = threading.Lock()
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        config = TransportConfig(timeout=timeout, retries=retries, concurrency=concurrency,
                                 backoff=backoff, max_backoff=max_backoff,
                                 **({"headers": headers} if headers is not None else {}),
                                 **({"verify": verify} if verify is not None else {}))
        self.transport = HttpTransport(
            root, config, headers={"accept": "application/json",
                                   **({"authorization": f"Bearer {key}"} if key else {})},
            start_hint="start one with: onepixel serve --protocol v2 --port PORT",
            auth_hint=(f"set a bearer token with ${API_KEY_ENV} (or api_key=), or other headers "
                       "with $ONEPIXEL_HTTP_HEADERS (or headers=)"), transport=transport)
        try:
            self.metadata = self._fetch_metadata()
            self._read_metadata(model_output, positive_index, output_name, input_shape)
        except BaseException:
            self.transport.close()
            raise
        self.fingerprint = _fingerprint(self.metadata)
        self.transport.on_reconnect = self._check_same_model
        log.info("%s: model %s, input %s %s %s, output %s (%s), %s", self.url, self.name,
                 self.input_name, self.datatype, self._layout, self.output_name, self.model_output,
                 "classes to be found" if self._n_classes is None else f"{self._n_classes} class(es)")

    # -- Classifier -------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    @property
    def n_classes(self) -> int:
        if self._n_classes is None:  # the metadata left the output width open
            self.scores(np.zeros((1, *self._input_shape), dtype=np.uint8))
        return self._n_classes  # type: ignore[return-value]

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for uint8 images (N, H, W, C): float64 (N,) for a binary model, (N, K)
        for a K-class one.

        Raises
        ------
        HttpError
            The service refused the request (4xx) or answered something that is not the
            protocol, or another output width than before.
        ModelError
            The outputs are not probabilities (say ``model_output="logit"`` for logits).
        """
        images = check_batch(images, self.input_shape, self.name)
        n = len(images)
        parts: list[np.ndarray] = []
        start = 0
        if n and (self.encoding == "auto" or self._n_classes is None):
            stop = min(self.batch_size, n)
            parts.append(self._first_chunk(images[:stop]))
            start = stop
        return self._gather(images, parts, start, self.batch_size, self._score_chunk)

    # -- metadata ---------------------------------------------------------------------------

    def _fetch_metadata(self) -> dict:
        response = self.transport.request("GET", self.path, check=False)
        meta = self.transport.json(response, self.url)
        if not isinstance(meta, dict):
            raise HttpError(f"{self.url} answered metadata that is not a JSON object", url=self.url)
        return meta

    def _read_metadata(self, model_output: str | None, positive_index: int | None,
                       output_name: str | None, input_shape: tuple[int, int, int] | None) -> None:
        meta, where = self.metadata, self.url
        params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
        ours = params.get("onepixel") if isinstance(params.get("onepixel"), dict) else {}
        self.name = str(ours.get("model") or meta.get("name") or self.model)
        inputs, outputs = meta.get("inputs"), meta.get("outputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise HttpError(f"{where}: the model must declare exactly one input tensor (the "
                            f"images), got inputs={inputs!r}", url=where)
        tensor = inputs[0]
        self.input_name = str(tensor.get("name", ""))
        self.datatype = str(tensor.get("datatype", "")).upper()
        if self.datatype not in INPUT_DATATYPES:
            raise HttpError(f"{where}: input {self.input_name!r} has datatype {self.datatype!r}; "
                            f"images go as one of {', '.join(INPUT_DATATYPES)}", url=where)
        self._layout, self._input_shape, self._max_batch = _image_layout(tensor.get("shape"),
                                                                        input_shape, where)
        if self._max_batch:
            self.batch_size = min(self.batch_size, self._max_batch)
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise HttpError(f"{where}: the model declares no output tensors", url=where)
        names = [str(o.get("name", "")) for o in outputs]
        if output_name is None and len(outputs) > 1:
            raise ModelError(f"{self.name} has {len(outputs)} outputs ({', '.join(names)}); say "
                             "which holds the scores with output_name")
        if output_name is not None and output_name not in names:
            raise ModelError(f"output_name {output_name!r} is not an output of {self.name} "
                             f"({', '.join(names)})")
        out = outputs[names.index(output_name) if output_name is not None else 0]
        self.output_name = str(out.get("name", ""))
        declared = params.get("model_output") or (out.get("parameters") or {}).get("model_output")
        if declared not in (None, "probability", "logit"):
            raise HttpError(f"{where}: parameters.model_output must be 'probability' or 'logit', "
                            f"got {declared!r}", url=where)
        self.model_output = model_output or declared or "probability"
        self._output_declared = model_output is not None or declared is not None
        # ModelIO positionally: its output field is being renamed to model_output elsewhere.
        self._io = ModelIO("nhwc", "raw", self.model_output, positive_index)
        shape = out.get("shape")
        width = _output_width(shape)
        self._n_classes = n_classes_for(width, self._io) if width else None
        if self._n_classes is not None:
            self._check_column(width)
        names_k = ours.get("classes")
        self.class_names = tuple(names_k) if isinstance(names_k, list) else ()

    def _check_same_model(self) -> None:
        now = _fingerprint(self._fetch_metadata())
        if now != self.fingerprint:
            raise HttpError(f"{self.url} came back with another model (fingerprint {now[:16]}... "
                            f"instead of {self.fingerprint[:16]}...); stopping so that results of "
                            "two models are not mixed: serve the same model again and resume",
                            url=self.url)
        log.info("%s is back with the same model", self.url)

    def _check_column(self, width: int) -> None:
        if self._io.positive_index is not None and self._io.positive_index >= width:
            raise ModelError(f"positive_index {self._io.positive_index} is out of range for "
                             f"{self.name}'s {width} outputs")

    # -- inference --------------------------------------------------------------------------

    def _first_chunk(self, images: np.ndarray) -> np.ndarray:
        """The first batch: learns the output width, and measures JSON against binary."""
        if self.encoding != "auto":
            return self._score_chunk(images)
        timings: dict[str, list[float]] = {"json": [], "binary": []}
        results: dict[str, np.ndarray] = {}
        for encoding in ("json", "binary", "json", "binary"):
            t0 = time.perf_counter()
            try:
                results[encoding] = self._score_chunk(images, encoding)
            except HttpError as exc:
                if encoding == "binary" and exc.status in (400, 404, 415, 422, 501):
                    log.info("%s refuses binary tensors (%s); sending JSON", self.url, exc)
                    timings["binary"] = []
                    break
                raise
            timings[encoding].append(time.perf_counter() - t0)
        self.encoding_seconds = {k: min(v) for k, v in timings.items() if v}
        if "binary" in results and not np.array_equal(results["binary"], results["json"]):
            log.warning("%s gives other scores for binary tensors than for JSON (by up to %.3g); "
                        "sending JSON", self.url,
                        float(np.abs(results["binary"] - results["json"]).max()))
            self.encoding_seconds.pop("binary")
        self.encoding = min(self.encoding_seconds, key=self.encoding_seconds.get)
        log.info("%s: %s tensors (seconds per request of %d images: %s)", self.url, self.encoding,
                 len(images), ", ".join(f"{k} {v:.4f}" for k, v in self.encoding_seconds.items()))
        return results[self.encoding]

    def _score_chunk(self, images: np.ndarray, encoding: str | None = None) -> np.ndarray:
        encoding = encoding or self.encoding
        try:
            raw = self._infer(images, binary=encoding == "binary")
        except HttpError as exc:
            if exc.status == 413 and len(images) > 1:
                half = len(images) // 2
                with self._lock:
                    self.batch_size = max(1, min(self.batch_size, half))
                log.warning("%s: %d images are too large for one request; sending %d at a time",
                            self.url, len(images), self.batch_size)
                return np.concatenate([self._score_chunk(images[:half], encoding),
                                       self._score_chunk(images[half:], encoding)])
            raise
        width = raw.shape[1]
        with self._lock:
            if self._n_classes is None:
                self._check_column(width)
                self._n_classes = n_classes_for(width, self._io)
            known = self._n_classes
        scores = class_probabilities(raw, self._io, self.name)
        if n_classes_for(width, self._io) != known:
            raise HttpError(f"{self.url} answered {width} output(s) per image, but this model "
                            f"scores {known} class(es); did the service change model? Reconnect",
                            url=self.url)
        hint = "model_output" if self._output_declared else (
            "model_output (the metadata does not say; default 'probability')")
        return validate_probabilities(scores, known, self.name, option=hint)

    def _infer(self, images: np.ndarray, binary: bool) -> np.ndarray:
        """The raw output tensor (n, width) as float64 for uint8 images (n, H, W, C)."""
        x = images if self._layout == "nhwc" else images.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=DATATYPES[self.datatype])
        tensor: dict[str, Any] = {"name": self.input_name, "shape": list(x.shape),
                                  "datatype": self.datatype}
        request: dict[str, Any] = {"inputs": [tensor], "outputs": [
            {"name": self.output_name, "parameters": {"binary_data": binary}}]}
        if binary:
            raw = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            header = json.dumps(request, separators=(",", ":")).encode()
            response = self.transport.request(
                "POST", f"{self.path}/infer", content=header + raw,
                headers={HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"})
        else:
            tensor["data"] = x.reshape(-1).tolist()
            response = self.transport.request(
                "POST", f"{self.path}/infer", content=json.dumps(request, separators=(",", ":")),
                headers={"content-type": "application/json"})
        out = _read_output(response, self.output_name, len(images), f"{self.url}/infer")
        with self._lock:
            self.n_queries += 1
            self.n_images += len(images)
        return out


def _image_layout(shape: Any, given: tuple[int, int, int] | None,
                  where: str) -> tuple[str, tuple[int, int, int], int | None]:
    """("nhwc" | "nchw", (H, W, C), most images per request or None) from an input's shape."""
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):
        dims = []
    if len(dims) != 4:
        raise HttpError(f"{where}: the input tensor's shape {shape!r} is not an image batch "
                        "[N, H, W, C] or [N, C, H, W]", url=where)
    batch, a, b, c = dims
    if c in (1, 3) or (c == -1 and a not in (1, 3)):
        layout, (h, w, ch) = "nhwc", (a, b, c)
    elif a in (1, 3):
        layout, (h, w, ch) = "nchw", (b, c, a)
    else:
        raise HttpError(f"{where}: cannot tell the channels in input shape {dims} (1 or 3 first "
                        "or last)", url=where)
    if given is not None:
        want = tuple(int(s) for s in given)
        if any(d != -1 and d != g for d, g in zip((h, w, ch), want, strict=True)):
            raise ModelError(f"input_shape {want} does not fit the service's input {dims}")
        h, w, ch = want
    if min(h, w, ch) < 1:
        raise ModelError(f"{where}: the input's size is open ({dims}); give input_shape (H, W, C)")
    return layout, (h, w, ch), (batch if batch > 0 else None)


def _output_width(shape: Any) -> int | None:
    """Outputs per image from an output's shape ([-1] and [-1, 1]: 1; [-1, K]: K; open: None)."""
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):
        return None
    if len(dims) == 1:
        return 1
    width = int(np.prod(dims[1:]))
    return width if width > 0 else None


def _read_output(response, name: str, n: int, where: str) -> np.ndarray:
    """The output ``name`` of an infer answer (JSON or binary) as float64 (n, width)."""
    body = response.content
    header_length = response.headers.get(HEADER_LENGTH)
    try:
        split = int(header_length) if header_length is not None else len(body)
        if not 0 < split <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {header_length} for a body of {len(body)} bytes")
        answer = json.loads(body[:split])
        offset, found = split, None
        for out in answer["outputs"]:
            size = (out.get("parameters") or {}).get("binary_data_size")
            chunk = None
            if size is not None:
                chunk = body[offset: offset + int(size)]
                if len(chunk) != int(size):
                    raise ValueError(f"output {out['name']!r} declares {size} bytes; the body has "
                                     f"{len(chunk)} left")
                offset += int(size)
            if out["name"] == name:
                found = (out, chunk)
        if found is None:
            raise ValueError(f"no output {name!r}")
        out, chunk = found
        dtype = DATATYPES.get(str(out["datatype"]).upper())
        if dtype is None:
            raise ValueError(f"output datatype {out['datatype']!r} is not numeric")
        shape = [int(d) for d in out["shape"]]
        if chunk is not None:
            values = np.frombuffer(chunk, dtype=np.dtype(dtype).newbyteorder("<"))
        else:
            values = np.asarray(out["data"], dtype=dtype)
        values = values.astype(np.float64).reshape(shape)
        if not shape or shape[0] != n:
            raise ValueError(f"output shape {shape} for {n} images")
        return values.reshape(n, -1)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise HttpError(f"{where} did not answer with the Open Inference Protocol (outputs with "
                        f"name, datatype, shape and data or binary_data_size): {exc}",
                        response.status_code, where) from None


def _fingerprint(metadata: dict) -> str:
    """The model's sha256 as ``onepixel serve`` reports it, else that of the metadata JSON."""
    params = metadata.get("parameters")
    ours = params.get("onepixel") if isinstance(params, dict) else None
    if isinstance(ours, dict) and ours.get("sha256"):
        return str(ours["sha256"])
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
