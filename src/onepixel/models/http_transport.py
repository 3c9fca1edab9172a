"""The HTTP transport both model protocols share: connections, retries, timeouts, concurrency.

:class:`HttpTransport` owns one pool of keep-alive connections (httpx) and the worker threads
that keep several requests in flight; :meth:`HttpTransport.request` sends one request with
retries (tenacity): connection errors, timeouts and 429/5xx answers are tried again with
exponential backoff (``Retry-After`` honoured), so a server that restarts costs seconds, not
results. 4xx answers are errors at once (:class:`~onepixel.errors.HttpError` and subclasses,
all :class:`~onepixel.errors.ModelError`), with the server's message.

A refused connection before the service ever answered means nothing listens at that address
(a typo, a server not started): it fails within :data:`FIRST_CONTACT_S` seconds with the same
message as after every retry, instead of retrying for half a minute. Once the service has
answered, a refused connection is a restart and gets the full retries.

The protocols on top: :mod:`onepixel.models.max_protocol` (the MAX API) and
:mod:`onepixel.models.v2_protocol` (the Open Inference Protocol). Needs httpx and tenacity
(``pip install 'onepixel[server]'``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from onepixel.errors import HttpAuthError, HttpError, HttpUnavailableError, ModelError
from onepixel.models.base import Capabilities
from onepixel.wire import is_loopback

log = logging.getLogger(__name__)

#: Answers worth another try: rate limited, or the server (or a proxy before it) failing.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Seconds a refused connection is retried before the service has ever answered.
FIRST_CONTACT_S = 2.0
#: Extra request headers for model services, ``Name: value`` pairs separated by ``;``.
HEADERS_ENV = "ONEPIXEL_HTTP_HEADERS"
#: TLS verification of https services: ``0``/``false`` turns it off, a path is a CA bundle.
TLS_VERIFY_ENV = "ONEPIXEL_TLS_VERIFY"


def require(module: str):
    """Import httpx or tenacity, or say how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"models over HTTP need {module}: pip install 'onepixel[server]'") from exc


def parse_headers(text: str | None, source: str = HEADERS_ENV) -> dict[str, str]:
    """``"Name: value; Name2: value2"`` -> a dict; a :class:`ModelError` naming ``source`` if bad."""
    headers: dict[str, str] = {}
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value:
            raise ModelError(f"{source}: expected 'Name: value' pairs separated by ';', got "
                             f"{item.strip()[:60]!r}")
        headers[name.strip()] = value.strip()
    return headers


def parse_verify(text: str | None, source: str = TLS_VERIFY_ENV) -> bool | str:
    """TLS verification from text: True (default), False (``0``/``false``/``no``), or a CA path."""
    if text is None or text.strip().lower() in ("", "1", "true", "yes"):
        return True
    if text.strip().lower() in ("0", "false", "no"):
        return False
    if not os.path.isfile(text):
        raise ModelError(f"{source}: {text!r} is neither 0/1 nor a CA bundle file")
    return text


@dataclass(frozen=True)
class TransportConfig:
    """How the transport talks to a service.

    Attributes
    ----------
    timeout : float
        Seconds for one request (connect: at most 10).
    retries : int
        Retries after a connection error, a timeout or a 429/5xx answer, waiting
        ``backoff * 2**k`` seconds (capped at ``max_backoff``, times a random factor in
        [0.5, 1]); the defaults wait 16 to 32 s in all, enough for a server restart.
    concurrency : int
        Requests in flight at once (and pooled keep-alive connections).
    backoff, max_backoff : float
        Seconds; see ``retries``.
    headers : mapping
        Extra headers on every request (a bearer token, a tenant); default: from
        ``$ONEPIXEL_HTTP_HEADERS``.
    verify : bool or str
        TLS verification of https services: True, False, or a CA bundle's path; default from
        ``$ONEPIXEL_TLS_VERIFY`` (else True).
    first_contact_s : float
        Seconds a refused connection is retried before the service has answered once.
    """

    timeout: float = 60.0
    retries: int = 8
    concurrency: int = 4
    backoff: float = 0.25
    max_backoff: float = 8.0
    headers: Mapping[str, str] = field(default_factory=lambda: parse_headers(os.environ.get(HEADERS_ENV)))
    verify: bool | str = field(default_factory=lambda: parse_verify(os.environ.get(TLS_VERIFY_ENV)))
    first_contact_s: float = FIRST_CONTACT_S

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ModelError(f"TransportConfig.timeout must be > 0 seconds, got {self.timeout}")
        if self.retries < 0:
            raise ModelError(f"TransportConfig.retries must be >= 0, got {self.retries}")
        if self.concurrency < 1:
            raise ModelError(f"TransportConfig.concurrency must be >= 1, got {self.concurrency}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ModelError("TransportConfig.backoff and max_backoff must be >= 0 seconds")
        if self.first_contact_s < 0:
            raise ModelError(f"TransportConfig.first_contact_s must be >= 0, got {self.first_contact_s}")


class _Retryable(Exception):  # noqa: N818 - a condition, not an error the user sees
    """A try that may succeed if repeated: no answer, or a 429/5xx (maybe with Retry-After)."""

    def __init__(self, reason: str, retry_after: str | None = None, refused: bool = False):
        super().__init__(reason)
        self.retry_after = retry_after
        self.refused = refused


class HttpTransport:
    """Retrying HTTP requests to one service, over a pool of keep-alive connections.

    Parameters
    ----------
    url : str
        The service root (``http(s)://HOST:PORT[/prefix]``); request paths are relative to it.
    config : TransportConfig
    headers : mapping
        Headers of the protocol (accept, API key), under ``config.headers``.
    start_hint : str
        How to start a server, said when none answers (``onepixel serve --port PORT``).
    auth_hint : str
        How to give credentials, said on 401/403.
    transport : httpx transport, optional
        For tests (``httpx.MockTransport``).

    Attributes
    ----------
    n_retries : int
        Requests retried so far.
    answered : bool
        Whether the service has answered at least once.
    on_reconnect : callable, optional
        Called (no arguments) after a request that succeeded once a connection was lost (a
        restart?), except for requests sent with ``check=False``: the protocols check there
        that the service still runs the same model.
    """

    def __init__(self, url: str, config: TransportConfig | None = None, *,
                 headers: Mapping[str, str] | None = None, start_hint: str = "",
                 auth_hint: str = "", transport: Any = None):
        self._httpx = httpx = require("httpx")
        self._tenacity = require("tenacity")
        self.config = config = config or TransportConfig()
        self.url = url.rstrip("/")
        self.start_hint = start_hint
        self.auth_hint = auth_hint
        self.n_retries = 0
        self.answered = False
        self.on_reconnect: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._pool: ThreadPoolExecutor | None = None
        merged = {"user-agent": "onepixel-http-classifier", **dict(headers or {}),
                  **dict(config.headers)}
        host = urlsplit(self.url).hostname
        self._client = httpx.Client(
            base_url=self.url, headers=merged, transport=transport, verify=config.verify,
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
            limits=httpx.Limits(max_connections=config.concurrency,
                                max_keepalive_connections=config.concurrency),
            # Proxies from the environment never apply to this machine's own services.
            trust_env=not is_loopback(host))

    # -- requests ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, check: bool = True, **kwargs: Any):
        """Send with retries; the 2xx (or 3xx) response, else an :class:`HttpError`.

        ``kwargs`` go to ``httpx.Client.build_request`` (``content``, ``json``, ``files``,
        ``headers``). ``check=False``: no :attr:`on_reconnect` after this request (the
        metadata requests that the check itself sends).

        Raises
        ------
        HttpAuthError
            401/403.
        HttpError
            Another 4xx.
        HttpUnavailableError
            No answer after every retry (or, before the first answer, a refused connection).
        """
        httpx, tenacity = self._httpx, self._tenacity
        where = f"{self.url}{path}"
        request = self._client.build_request(method, path, **kwargs)
        request.read()  # the body once, in one buffer: every try sends it in one write
        lost_connection = False
        started = time.monotonic()

        def attempt():
            nonlocal lost_connection
            try:
                response = self._client.send(request)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                lost_connection = True
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise _Retryable(reason, refused=isinstance(exc, httpx.ConnectError)) from exc
            self.answered = True
            status = response.status_code
            if status < 400:
                return response
            message = server_message(response)
            if status in RETRY_STATUS:
                raise _Retryable(f"HTTP {status}: {message}", response.headers.get("retry-after"))
            raise self._client_error(status, message, where)

        def stop(state: Any) -> bool:
            if state.attempt_number > self.config.retries:
                return True
            exc = state.outcome.exception()
            # Nothing has ever listened there: say so now, not after half a minute of retries.
            return (not self.answered and getattr(exc, "refused", False)
                    and time.monotonic() - started >= self.config.first_contact_s)

        def before_sleep(state: Any) -> None:
            with self._lock:
                self.n_retries += 1
            log.warning("%s: %s; retry %d/%d in %.2f s", where, state.outcome.exception(),
                        state.attempt_number, self.config.retries, state.next_action.sleep)

        retrying = tenacity.Retrying(stop=stop, wait=self._wait, before_sleep=before_sleep,
                                     retry=tenacity.retry_if_exception_type(_Retryable), reraise=True)
        try:
            response = retrying(attempt)
        except _Retryable as exc:
            tries = "" if exc.refused and not self.answered else \
                f" after {self.config.retries + 1} tries"
            raise HttpUnavailableError(
                f"{where}: no answer{tries} (last: {exc}); is the server running at that "
                f"address?{f' ({self.start_hint})' if self.start_hint else ''}", None, where) from None
        if lost_connection and check and self.on_reconnect is not None:
            self.on_reconnect()
        return response

    def json(self, response, where: str) -> Any:
        """The decoded JSON of a response, or an :class:`HttpError` naming ``where``."""
        try:
            return response.json()
        except ValueError:
            raise HttpError(f"{where} answered {response.status_code} with a body that is not "
                            f"JSON: {response.text[:200]!r}", response.status_code, where) from None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, up to ``concurrency`` at a time, in order."""
        if len(items) <= 1 or self.config.concurrency == 1:
            return [fn(item) for item in items]
        pool = self._executor()
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def close(self) -> None:
        """Close the connections and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._client.close()

    # -- internals --------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.concurrency,
                                                thread_name_prefix="onepixel-http")
            return self._pool

    def _wait(self, state: Any) -> float:
        """Seconds before the next try: ``Retry-After`` if the server said, else exponential
        backoff ``backoff * 2**k`` capped at ``max_backoff``, times a random factor in [0.5, 1]
        (so that many clients do not come back in step)."""
        c = self.config
        retry_after = getattr(state.outcome.exception(), "retry_after", None)
        if retry_after:
            try:
                return min(c.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: back off as usual
        base = min(c.max_backoff, c.backoff * 2.0 ** (state.attempt_number - 1))
        return base * (0.5 + 0.5 * self._rng.random())

    def _client_error(self, status: int, message: str, where: str) -> HttpError:
        if status in (401, 403):
            hint = f"; {self.auth_hint}" if self.auth_hint else ""
            return HttpAuthError(f"{where} answered {status}: {message}{hint}", status, where)
        if status == 413:
            return HttpError(f"{where} answered 413 (request too large): {message}; use a smaller "
                             "batch_size", status, where)
        return HttpError(f"{where} answered {status}: {message}", status, where)


class RemoteClassifier:
    """What both protocol clients share over one :class:`HttpTransport`: the capabilities of a
    remote model, the retry count, closing, and scoring chunks of a batch concurrently.

    Subclasses set ``url``, ``name``, ``fingerprint``, ``transport`` and ``_n_classes`` (None
    until known) and define ``n_classes``.
    """

    url: str
    name: str
    fingerprint: str
    transport: HttpTransport
    _n_classes: int | None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(fingerprint=self.fingerprint, device="remote", n_classes=self.n_classes)

    @property
    def n_retries(self) -> int:
        """Requests retried so far (the transport's count)."""
        return self.transport.n_retries

    def close(self) -> None:
        """Close the connections and the worker threads."""
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r})"

    def _gather(self, images: np.ndarray, parts: list[np.ndarray], start: int, step: int,
                score_chunk: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Scores of ``images[start:]`` in chunks of ``step`` images, sent concurrently, after
        the ``parts`` already scored (of ``images[:start]``): (N,) or (N, K) float64."""
        n = len(images)
        spans = [(a, min(a + step, n)) for a in range(start, n, step)]
        parts.extend(self.transport.map(lambda span: score_chunk(images[span[0]:span[1]]), spans))
        if not parts:
            k = self._n_classes or 1
            return np.empty((0, k) if k > 1 else (0,), dtype=np.float64)
        return np.concatenate(parts)


def server_message(response) -> str:
    """The error message in a response: JSON ``message``/``detail``/``error``, else its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:300]
