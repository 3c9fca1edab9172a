"""A Classifier behind an HTTP service that speaks the MAX API (the papers' black-box setting).

:class:`HttpClassifier` sends images as lossless PNG to ``POST /model/predict`` (one image per
request, what IBM's MAX containers offer) or, when the server offers it, to
``POST /model/predict_batch`` (many images per request; ``onepixel serve`` does), over a pool of
keep-alive connections with several requests in flight. Connections, retries, timeouts and
concurrency are :class:`~onepixel.models.http_transport.HttpTransport`'s, shared with the Open
Inference Protocol client (:mod:`onepixel.models.v2_protocol`); this module is the MAX API's
paths, PNG bodies and JSON answers.

PNG is lossless, and the server's JSON carries each float64 score with all its digits, so the
scores equal the in-process scores of the same model exactly, and an attack over HTTP follows
the same path as an attack in process.

Binary models answer one probability per image (the MAX API); K-class models served by
``onepixel serve`` add the K class probabilities to each prediction (``"probabilities"``), and
their metadata says ``n_classes`` and ``classes``. :class:`HttpClassifier` reads the class count
from the metadata, or else from the first answer, and returns what a local K-class model returns.

The wire format (paths, PNG, the key's names) is :mod:`onepixel.wire`, shared with the server;
httpx builds the multipart bodies. Needs httpx and tenacity (``pip install 'onepixel[server]'``).
(:mod:`onepixel.models.http_backend` re-exports these names, where they lived before.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from onepixel.errors import HttpAuthError, HttpError, HttpUnavailableError, ModelError
from onepixel.models.base import check_batch
from onepixel.models.http_transport import HttpTransport, RemoteClassifier, TransportConfig

# encode_png stays importable from here (it lived here before the wire module).
from onepixel.wire import (
    API_KEY_ENV,
    API_KEY_HEADER,
    IMAGE_FIELD,
    METADATA,
    PREDICT,
    PREDICT_BATCH,
    encode_png,
)

log = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "HttpAuthError", "HttpClassifier", "HttpError", "HttpUnavailableError",
           "base_url", "encode_png"]

DEFAULT_SHAPE = (64, 64, 3)
#: How far a K-class answer's probabilities may sum from 1 (float32 softmax outputs are off by
#: about 1e-7; a wrong answer, e.g. logits or a truncated list, by far more).
SUM_TOLERANCE = 1e-3


def base_url(url: str) -> str:
    """The service root of a MAX API URL (``/model/predict`` and the like are stripped)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(f"not an HTTP URL: {url!r}; use http://HOST:PORT (the MAX service root)")
    path = parts.path.rstrip("/")
    for suffix in (PREDICT_BATCH, PREDICT, METADATA, "/model"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}"


class HttpClassifier(RemoteClassifier):
    """Classifier for a model served with the MAX HTTP API.

    Parameters
    ----------
    url : str
        Service root, e.g. ``http://127.0.0.1:5000`` (a ``/model/predict`` suffix is accepted).
    api_key : str, optional
        Sent as ``X-API-Key``; default ``$ONEPIXEL_API_KEY``.
    timeout : float
        Seconds for one request (connect: at most 10).
    retries : int
        Retries of a request after a connection error, a timeout or a 5xx/429 answer, with
        exponential backoff ``backoff * 2**k`` (capped at ``max_backoff``, times a random
        factor in [0.5, 1]): the defaults wait 16 to 32 s in all before giving up, enough for
        a server restart.
    concurrency : int
        Requests in flight at once (and pooled keep-alive connections).
    batch : bool
        Use ``/model/predict_batch`` when the service offers it (told by its metadata, or
        found by trying once); False always sends one image per request.
    batch_size : int
        Images per batch request (the server's ``max_batch`` lowers it).
    png_level : int
        zlib level of the PNGs (0, stored, is the fastest; raise it for slow networks).
    input_shape : (H, W, 3), optional
        Default: from the service's metadata, else (64, 64, 3).
    transport : httpx transport, optional
        For tests (``httpx.MockTransport``).

    Attributes
    ----------
    name, fingerprint : str
        From the service's metadata: ``onepixel serve`` reports the model's name and file
        sha256 (so RUN folders resume across in-process and HTTP runs); for other services the
        name is the metadata ``id`` and the fingerprint the sha256 of the metadata JSON.
    metadata : dict
        The ``/model/metadata`` answer ({} when the service has none).
    n_classes : int
        1 for a binary model (``scores`` returns (N,)), K for a K-class one (``scores`` returns
        (N, K)); also ``capabilities.n_classes``. From the metadata's ``onepixel.n_classes``
        (a onepixel server without it serves binary models only); for services that do not
        say, from the first answer, and asked with one black image if it is needed before
        any answer came.
    class_names : tuple of str
        The K class names the service gives (``onepixel serve --classes``, else the indices);
        () for a binary model, or when the service gives none.
    n_queries, n_images, n_retries : int
        Model requests answered, images scored, requests retried.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 8, concurrency: int = 4, batch: bool = True, batch_size: int = 128,
                 *, backoff: float = 0.25, max_backoff: float = 8.0, png_level: int = 0,
                 input_shape: tuple[int, int, int] | None = None,
                 headers: dict[str, str] | None = None, verify: bool | str | None = None,
                 transport: Any = None):
        if batch_size < 1:
            raise ModelError(f"HTTP batch size must be >= 1, got {batch_size}")
        if not 0 <= png_level <= 9:
            raise ModelError(f"png_level must be within 0..9, got {png_level}")
        config = TransportConfig(timeout=timeout, retries=retries, concurrency=concurrency,
                                 backoff=backoff, max_backoff=max_backoff,
                                 **({"headers": headers} if headers is not None else {}),
                                 **({"verify": verify} if verify is not None else {}))
        self.url = base_url(url)
        self.png_level = png_level
        self.n_queries = 0
        self.n_images = 0
        self._lock = threading.Lock()
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._has_key = bool(key)
        hint = (f"set the key with ${API_KEY_ENV} (or api_key=)" if not key
                else f"the key sent was refused; check ${API_KEY_ENV} (or api_key=)")
        self.transport = HttpTransport(
            self.url, config, headers={"accept": "application/json",
                                       **({API_KEY_HEADER: key} if key else {})},
            start_hint="start one with: onepixel serve --port PORT", auth_hint=hint,
            transport=transport)
        try:
            self.metadata = self._fetch_metadata()
            ours = self.metadata.get("onepixel") if isinstance(self.metadata.get("onepixel"), dict) else {}
            self._n_classes, self.class_names = self._classes_from_metadata(ours)
        except BaseException:
            self.transport.close()
            raise
        self.transport.on_reconnect = self._check_same_model
        self.name = str(ours.get("model") or self.metadata.get("id") or self.metadata.get("name")
                        or f"http-{urlsplit(self.url).netloc}")
        self.fingerprint = _fingerprint(self.metadata)
        shape = input_shape or ours.get("input_shape") or DEFAULT_SHAPE
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
            raise ModelError(f"{self.url}: input shape {shape} is not (H, W, 3); give input_shape")
        self._input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        #: True / False once known; None: try the batch endpoint on first use.
        self.batch_supported: bool | None = None
        self.batch_size = batch_size
        if not batch:
            self.batch_supported = False
        elif ours.get("predict_batch"):
            self.batch_supported = True
            if isinstance(ours.get("max_batch"), int) and ours["max_batch"] >= 1:
                self.batch_size = min(batch_size, ours["max_batch"])
        log.info("%s: model %s, input %s, %s, batch endpoint %s", self.url, self.name,
                 self._input_shape,
                 "classes to be found" if self._n_classes is None else f"{self._n_classes} class(es)",
                 {True: "yes", False: "no", None: "to be found"}[self.batch_supported])

    # -- Classifier -------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    @property
    def n_classes(self) -> int:
        if self._n_classes is None:  # the service did not say, and nothing was scored yet
            log.info("%s: metadata gives no class count; scoring one black image to find it",
                     self.url)
            self.scores(np.zeros((1, *self._input_shape), dtype=np.uint8))
        return self._n_classes  # type: ignore[return-value]  # set by the answer

    def scores(self, images: np.ndarray) -> np.ndarray:
        """What the served model gives for uint8 images (N, H, W, 3): float64 (N,), the
        probability of the positive class, for a binary model; (N, K) class probabilities for
        a K-class one.

        Raises
        ------
        HttpAuthError
            The service refused the API key (or wants one).
        HttpError
            The service refused the images (4xx), or answered something that is not the MAX API
            (or its K-class extension), or another number of classes than before.
        HttpUnavailableError
            No answer after every retry.
        """
        images = check_batch(images, self.input_shape, self.name)
        n = len(images)
        parts: list[np.ndarray] = []
        start = 0
        # The batch endpoint and the class count are found once, on real images, one chunk
        # at a time; then chunks go out concurrently.
        while start < n and (self.batch_supported is None or self._n_classes is None):
            stop = min(start + (self.batch_size if self.batch_supported is not False else 1), n)
            parts.append(self._score_chunk(images[start:stop]))
            start = stop
        step = self.batch_size if self.batch_supported else 1
        return self._gather(images, parts, start, step, self._score_chunk)

    # -- internals --------------------------------------------------------------------------

    def _score_chunk(self, images: np.ndarray) -> np.ndarray:
        """Scores of a few images: one batch request, or one request per image."""
        if self.batch_supported is False:
            return np.array([self._post(PREDICT, images[i : i + 1])[0] for i in range(len(images))])
        try:
            scores = self._post(PREDICT_BATCH, images)
        except HttpError as exc:
            if self.batch_supported is None and exc.status in (404, 405):
                log.info("%s offers no %s; sending one image per request", self.url, PREDICT_BATCH)
                self.batch_supported = False
                return self._score_chunk(images)
            if exc.status == 413 and len(images) > 1:
                half = len(images) // 2
                with self._lock:
                    self.batch_size = max(1, min(self.batch_size, half))
                log.warning("%s: %d images are too large for one request; sending %d at a time",
                            self.url, len(images), self.batch_size)
                return np.concatenate([self._score_chunk(images[:half]),
                                       self._score_chunk(images[half:])])
            raise
        self.batch_supported = True
        return scores

    def _post(self, path: str, images: np.ndarray) -> np.ndarray:
        files = [(IMAGE_FIELD, (f"{i}.png", encode_png(img, self.png_level), "image/png"))
                 for i, img in enumerate(images)]
        answer = self._request("POST", path, files=files)
        scores = self._parse_predictions(answer, path, len(images))
        with self._lock:
            self.n_queries += 1
            self.n_images += len(images)
        return scores

    def _parse_predictions(self, answer: Any, path: str, n: int) -> np.ndarray:
        """(n,) positive-class probabilities, or (n, K) class probabilities when the predictions
        carry ``probabilities``; checked, and K checked against what is known."""
        where = f"{self.url}{path}"
        try:
            if answer.get("status") not in (None, "ok"):
                raise ValueError(f"status {answer.get('status')!r}")
            preds = answer["predictions"]
            if len(preds) != n:
                raise ValueError(f"{len(preds)} predictions for {n} images")
            multi = [isinstance(p, dict) and "probabilities" in p for p in preds]
            if any(multi) and not all(multi):
                raise ValueError("some predictions carry 'probabilities' and some do not")
            if any(multi):
                rows = [[float(v) for v in p["probabilities"]] for p in preds]
                lengths = sorted({len(r) for r in rows})
                if len(lengths) > 1:
                    raise ValueError(f"'probabilities' of {lengths} lengths in one answer")
                scores = np.array(rows, dtype=np.float64).reshape(n, lengths[0] if rows else 0)
            else:
                scores = np.array([float(p["probability"]) for p in preds], dtype=np.float64)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise HttpError(f"{where} did not answer with the MAX API "
                            f"({{'status': 'ok', 'predictions': [{{'probability': p}}]}}, and "
                            f"'probabilities': [p0, ..., pK-1] for K classes): {exc}",
                            url=where) from None
        if not np.all(np.isfinite(scores)) or scores.min(initial=0) < 0 or scores.max(initial=0) > 1:
            raise HttpError(f"{where} returned probabilities outside [0, 1]", url=where)
        k = scores.shape[1] if scores.ndim == 2 else 1
        if scores.ndim == 2:
            if k < 2:
                raise HttpError(f"{where} returned 'probabilities' of {k} class(es); a K-class "
                                "model has K >= 2 (a binary one answers 'probability' only)",
                                url=where)
            worst = float(np.abs(scores.sum(axis=1) - 1.0).max(initial=0.0))
            if worst > SUM_TOLERANCE:
                raise HttpError(f"{where} returned class probabilities that do not sum to 1 (off "
                                f"by up to {worst:.3g}); is the served model's output "
                                "probabilities, not logits?", url=where)
        if n:
            self._settle_classes(k, where)
        return scores

    def _settle_classes(self, k: int, where: str) -> None:
        """Record the class count of the first answer; refuse another count later."""
        with self._lock:
            if self._n_classes is None:
                self._n_classes = k
                log.info("%s: the service answers %s per image", self.url, _per_image(k))
                return
            known = self._n_classes
        if k != known:
            raise HttpError(f"{where} answered {_per_image(k)} per image, but this model has "
                            f"{known} class(es) ({_per_image(known)} per image, from its metadata "
                            "or its first answer); did the service change model? Reconnect to it",
                            url=where)

    def _classes_from_metadata(self, ours: dict) -> tuple[int | None, tuple[str, ...]]:
        """(n_classes or None when the service does not say, class names) from the metadata's
        ``onepixel`` entry; an :class:`HttpError` when they are malformed."""
        where = f"{self.url}{METADATA}"
        if not ours:
            return None, ()  # not onepixel serve: the first answer will tell
        if "n_classes" not in ours:
            return 1, ()  # onepixel serve before K-class models: binary only
        k = ours["n_classes"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise HttpError(f"{where}: n_classes must be an integer >= 1, got {k!r}", url=where)
        names = ours.get("classes")
        if k == 1 or names is None:
            return k, ()
        if (not isinstance(names, list) or len(names) != k
                or not all(isinstance(c, str) for c in names)):
            raise HttpError(f"{where}: classes must be a list of {k} names (n_classes), got "
                            f"{names!r}", url=where)
        return k, tuple(names)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON of a 2xx answer (retried as the transport does), or an HttpError."""
        response = self.transport.request(method, path, check=path != METADATA, **kwargs)
        return self.transport.json(response, f"{self.url}{path}")

    def _fetch_metadata(self) -> dict:
        try:
            meta = self._request("GET", METADATA)
        except HttpError as exc:
            if exc.status in (404, 405):
                log.warning("%s has no %s; assuming a %s input", self.url, METADATA, DEFAULT_SHAPE)
                return {}
            raise
        return meta if isinstance(meta, dict) else {}

    def _check_same_model(self) -> None:
        """After a lost connection (a restart?), make sure the service still runs our model."""
        if not self.fingerprint:
            return
        now = _fingerprint(self._fetch_metadata())
        if now != self.fingerprint:
            raise HttpError(f"{self.url} came back with another model (fingerprint {now[:16]}... "
                            f"instead of {self.fingerprint[:16]}...); stopping so that results of "
                            "two models are not mixed: serve the same model again and resume",
                            url=self.url)
        log.info("%s is back with the same model", self.url)


def _per_image(k: int) -> str:
    return f"{k} class probabilities" if k > 1 else "one probability"


def _fingerprint(metadata: dict) -> str:
    """The model's sha256 as the service reports it, else the sha256 of its metadata JSON."""
    ours = metadata.get("onepixel")
    if isinstance(ours, dict) and ours.get("sha256"):
        return str(ours["sha256"])
    if metadata:
        canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
    return ""
