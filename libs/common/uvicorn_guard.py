"""Slow and excess clients on uvicorn: request timeouts, a head size bound, a connection cap.

uvicorn (pinned 0.54) has no timeout for receiving a request. ``timeout_keep_alive`` only
covers the idle time between requests and is cancelled by the first byte of the next
one; a connection that sends nothing is never timed out; httptools bounds neither the
time nor the size of a request head; and ``limit_concurrency`` answers 503 to requests
beyond the limit but keeps accepting connections. So a client sending its request a
byte at a time held its connection forever (2,000 of them: none closed in 30 s).

:class:`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with those bounds,
passed to uvicorn as its ``http`` protocol class (a documented option of
``uvicorn.Config``). It overrides the parser callbacks uvicorn's protocol implements,
which are not a documented API: this module is the only code that depends on them, and
``tests/unit/common/test_uvicorn_guard.py`` checks it against the pinned version.
Its per-request cost is constant: two timer handles and a few attribute updates.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
    b"retry-after: 1\r\nconnection: close\r\n\r\n"
)
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


@dataclass(frozen=True)
class HttpLimits:
    """How long and how much a client may take; per server (worker process)."""

    header_timeout_s: float = 10.0
    """From a connection's opening (first request) or a request's first byte (later
    requests on a kept-alive connection) to the end of its head; else it is closed."""
    body_timeout_s: float = 30.0
    """From the end of a request's head to the end of its body; else it is closed."""
    keep_alive_s: int = 5
    """An idle kept-alive connection is closed after this (uvicorn's own timeout)."""
    max_connections: int = 1024
    """Open connections; one more is answered 503 and closed as soon as it is accepted."""
    max_header_bytes: int = 32_768
    """The longest request head (request line and headers); a longer one gets 431."""

    def protocol(self) -> Any:
        """The value of ``uvicorn.Config(http=...)`` that applies these limits (picklable,
        for uvicorn's worker processes)."""
        return functools.partial(GuardedHttpToolsProtocol, limits=self)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections that break :class:`HttpLimits`.

    Each phase (a request's head, then its body) has a deadline. A timer is not armed and
    cancelled for every phase: a pending one stays when it fires no later than the new
    deadline, and when it fires it checks the deadline of the phase then under way,
    re-arming for what is left. On a kept-alive connection that means about one timer
    per header timeout, however many requests.
    """

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._deadline: float | None = None  # loop time the current phase must end by
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # From a request's first byte (or the connection's opening) to the end of its head
        self._in_head = True
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(_TOO_MANY)
            return
        self._expect_within(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # what a refused client still sends is read and dropped
        super().data_received(data)
        # Counted after parsing (a request's first byte resets the count) and checked only
        # while still in a head: a chunk that ends one may carry much of the body.
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                if self.cycle is None or self.cycle.response_complete:
                    self._refuse(_HEAD_TOO_LARGE)
                else:  # an answer to an earlier request is being written: no room for ours
                    self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._deadline is None:  # a later request on a kept-alive connection
            self._expect_within(self._limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._expect_within(self._limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None  # a pending timer finds nothing to do
        super().on_message_complete()

    def _expect_within(self, seconds: float) -> None:
        """The phase beginning now must end within ``seconds``, or the connection closes."""
        deadline = self._deadline = self.loop.time() + seconds
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self.loop.call_at(deadline, self._check), deadline

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:  # a later phase: wait for its deadline
            self._timer = self.loop.call_at(self._deadline, self._check)
            self._timer_at = self._deadline
            return
        # Too slow. The application, if it was reading the body, sees a disconnect.
        self._deadline = None
        self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        """Answer and close without a reset: closing with unread data would send the client
        a TCP reset, which can destroy the answer before the client reads it. So the
        answer is followed by our end of the stream, and the client's data is read and
        dropped until it closes its end or for one more second."""
        self._refused = True
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._expect_within(1.0)
