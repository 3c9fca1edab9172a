"""Connection-level defences that uvicorn lacks: read deadlines and connection caps.

uvicorn (0.54, h11 protocol) has ``timeout_keep_alive``, which only runs between requests and
is cancelled by any byte received, and ``limit_concurrency``, which answers 503 to *every*
request once that many connections are open, stalled ones included. So a few hundred
connections that send ``POST /model/predict HTTP/1.1\\r\\nHost: x\\r\\n`` and nothing more
made every request a 503 (``/health`` too) for as long as they stayed open: forever.

:class:`ConnectionGuard` adds, per connection (an :class:`asyncio.Protocol` wrapping uvicorn's
:class:`~uvicorn.protocols.http.h11_impl.H11Protocol`, so no ASGI code is involved):

- a **header deadline**: the request line and headers must all arrive within
  ``header_timeout`` of the connection opening (or of the first byte of a keep-alive request),
  however slowly they trickle; else 408 and close (a silent close when nothing came);
- a **body deadline**: the whole body within ``body_timeout`` of the head; else close;
- **caps**: at most ``max_connections_per_client`` per client address and ``max_connections``
  in all. At a cap, the connection that has waited longest for a request (stalled in its
  head, or idle between requests) is closed to make room; only when every connection is
  busy with a request is the new one refused (503, ``Retry-After: 1``).

Once a request has fully arrived no deadline runs: the model may take its time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_HEAD = "head"  # waiting for a request's head, under the header deadline
_IDLE = "idle"  # between keep-alive requests: uvicorn's keep-alive timer runs
_BODY = "body"  # receiving a body, under the body deadline
_BUSY = "busy"  # the request has come; the app is answering
_REFUSED = "refused"

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
_BUSY_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
             b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s")
#: How long a refused connection may linger after its 503, so that the client reads the answer
#: before the socket closes (closing with unread input would reset it).
_REFUSED_LINGER = 1.0


def _raw_response(template: bytes, message: str) -> bytes:
    body = b'{"status": "error", "message": "%s"}' % message.encode()
    return template % (len(body), body)


class ConnectionGuard:
    """Server-wide bookkeeping of open connections; :meth:`protocol` is uvicorn's ``http``.

    Parameters
    ----------
    max_connections, max_connections_per_client : int
    header_timeout, body_timeout : float
        Seconds; see :class:`~onepixel.serving.config.ServeOptions`.

    Attributes
    ----------
    refused, evicted, header_timeouts, body_timeouts : int
        Connections refused at a cap, closed to make room, closed at each deadline.
    """

    def __init__(self, max_connections: int, max_connections_per_client: int,
                 header_timeout: float, body_timeout: float):
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # dicts as insertion-ordered sets; one event loop touches them, so no lock
        self._open: dict[GuardedH11Protocol, None] = {}
        self._by_client: dict[str, dict[GuardedH11Protocol, None]] = {}
        self.refused = 0
        self.evicted = 0
        self.header_timeouts = 0
        self.body_timeouts = 0

    def stats(self) -> dict[str, int]:
        """Open connections and clients now; refused, evicted and timed-out ones so far."""
        return {"open": len(self._open), "clients": len(self._by_client), "refused": self.refused,
                "evicted": self.evicted, "header_timeouts": self.header_timeouts,
                "body_timeouts": self.body_timeouts}

    def protocol(self) -> type[GuardedH11Protocol]:
        """The protocol class to give uvicorn (``uvicorn.Config(app, http=...)``)."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    def admit(self, conn: GuardedH11Protocol, client: str) -> bool:
        """Register a new connection, closing a waiting one at a cap; False: no room."""
        mine = self._by_client.get(client, {})
        for pool, cap in ((mine, self.max_connections_per_client), (self._open, self.max_connections)):
            if len(pool) >= cap:
                victim = self._longest_waiting(pool)
                if victim is None:
                    self.refused += 1
                    return False
                self.evicted += 1
                victim.close_now("closed to make room for a new connection")
        self._open[conn] = None
        self._by_client.setdefault(client, {})[conn] = None
        return True

    def release(self, conn: GuardedH11Protocol, client: str) -> None:
        """Forget a connection (closed, evicted or timed out); safe to call twice."""
        self._open.pop(conn, None)
        mine = self._by_client.get(client)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_client[client]

    @staticmethod
    def _longest_waiting(pool: dict[GuardedH11Protocol, None]) -> GuardedH11Protocol | None:
        waiting = [c for c in pool if c.waiting_for_request()]
        return min(waiting, key=lambda c: c.waiting_since) if waiting else None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and caps of a :class:`ConnectionGuard`."""

    guard: ConnectionGuard  # set on the subclass that ConnectionGuard.protocol() makes

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._phase = _HEAD
        self._deadline: asyncio.TimerHandle | None = None
        self._host = "-"
        self._got_bytes = False
        self.waiting_since = time.monotonic()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host = self.client[0] if self.client else "-"
        if not self.guard.admit(self, self._host):
            self._refuse()
            return
        self._arm(self.guard.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.release(self, self._host)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _REFUSED:
            return  # discarded: the 503 is on its way and the connection closes
        self._got_bytes = True
        super().data_received(data)
        self._track(arrived=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track(arrived=False)

    # -- for the guard ----------------------------------------------------------------------

    def waiting_for_request(self) -> bool:
        """No request in progress: stalled in a head, or idle between requests."""
        return self._phase in (_HEAD, _IDLE) and not self.transport.is_closing()

    def close_now(self, why: str) -> None:
        """Close at once (the guard has already forgotten us: a cap made room)."""
        log.debug("%s: %s", self._host, why)
        self.guard.release(self, self._host)
        self._disarm()
        self.transport.close()

    # -- internals --------------------------------------------------------------------------

    def _track(self, arrived: bool) -> None:
        """Follow the request's progress after new bytes or a finished response."""
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # the next request's head has not (fully) come
            if self._phase == _HEAD:
                return  # the deadline already runs
            if arrived or self.conn.trailing_data[0]:  # part of a keep-alive request's head
                self._enter(_HEAD)
                self._arm(self.guard.header_timeout, self._head_timed_out)
            else:
                self._enter(_IDLE)  # uvicorn's keep-alive timer closes it if nothing comes
                self._disarm()
        elif state is h11.SEND_BODY:
            if self._phase != _BODY:
                self._enter(_BODY)
                self._arm(self.guard.body_timeout, self._body_timed_out)
        else:  # the request has fully come (or the connection is done): no deadline
            self._enter(_BUSY)
            self._disarm()

    def _enter(self, phase: str) -> None:
        if phase != self._phase:
            self._phase = phase
            self.waiting_since = time.monotonic()

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.header_timeouts += 1
        log.info("%s: no complete request head within %g s (--header-timeout); closing",
                 self._host, self.guard.header_timeout)
        if self._got_bytes:  # a client that sent nothing gets a silent close, as any idle one
            self.transport.write(_raw_response(
                _TIMEOUT_408, f"the request head did not arrive within {self.guard.header_timeout:g} s"))
        self.guard.release(self, self._host)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.body_timeouts += 1
        log.info("%s: request body not complete within %g s (--body-timeout); closing",
                 self._host, self.guard.body_timeout)
        # The app is reading this body: closing makes its read end as a client disconnect.
        self.guard.release(self, self._host)
        self.transport.close()

    def _refuse(self) -> None:
        self._phase = _REFUSED
        log.info("%s: no room for another connection (--max-connections-per-client %d, "
                 "--max-connections %d, all busy); 503", self._host,
                 self.guard.max_connections_per_client, self.guard.max_connections)
        self.transport.write(_raw_response(
            _BUSY_503, "too many connections busy with requests; retry in a second"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(_REFUSED_LINGER, self.transport.close)
