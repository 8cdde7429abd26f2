"""A minimal HTTP/1.1 keep-alive client for open-loop load.

An open loop at hundreds of requests a second needs a load generator much cheaper
than the service it measures, on a machine where both share two cores: httpx costs
a few milliseconds of CPU per small request here, and when the server falls behind,
its pool (which scans the queued requests at every change) burns the CPU the server
needed. This client writes a request, reads the status line, the headers and a
``Content-Length`` body, and keeps the connection. Requests beyond ``max_connections``
wait in a FIFO for a free connection; the wait counts in their latency. A connection
is not reused once the server closed it or after ``IDLE_S`` idle (the server may be
closing it just then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

IDLE_S = 3.0  # uvicorn closes a keep-alive connection idle for 5 s: reuse it before that


class HttpError(Exception):
    """A response this client cannot read (chunked, malformed) or a dropped connection."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Neither closed by the server nor idle long enough that it may be closing it."""
        return not self.reader.at_eof() and now - self.idle_since < IDLE_S

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http1Pool:
    """``POST`` over at most ``max_connections`` keep-alive connections to ``host:port``."""

    def __init__(
        self, host: str, port: int, headers: dict[str, str], *, max_connections: int
    ) -> None:
        self._host, self._port, self._max = host, port, max_connections
        lines = [f"host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = "".join(f"{line}\r\n" for line in lines).encode()
        self._idle: list[_Connection] = []
        self._open = 0
        # A waiter gets a connection, or None: a slot freed up, open a connection yourself.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()

    @property
    def connections(self) -> int:
        return self._open

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if conn.reusable(asyncio.get_running_loop().time()):
                    return conn
                self._discard(conn)
            if self._open < self._max:
                self._open += 1
                try:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                except BaseException:
                    self._freed()
                    raise
                return _Connection(reader, writer)
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                # Cancelled just after being handed a connection or a slot: pass it on.
                if waiter.done() and not waiter.cancelled():
                    given = waiter.result()
                    if given is None:
                        self._open += 1
                        self._freed()
                    else:
                        self._release(given)
                raise
            if handed is not None:
                return handed

    def _release(self, conn: _Connection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def _freed(self) -> None:
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._freed()

    async def post(self, path: str, body: bytes) -> int:
        """Send ``body`` to ``path``; the response's status code once its body is read."""
        conn = await self._acquire()
        try:
            conn.writer.write(
                b"POST %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s"
                % (path.encode(), self._head, len(body), body)
            )
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                raise HttpError("chunked responses are not supported")
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15 : lower.index(b"\r\n", at)])
                await conn.reader.readexactly(length)
            keep = b"connection: close" not in lower
        except BaseException:
            self._discard(conn)
            raise
        if keep:
            self._release(conn)
        else:
            self._discard(conn)
        return status

    async def aclose(self) -> None:
        for waiter in self._waiters:
            waiter.cancel()
        for conn in self._idle:
            conn.close()
        self._idle.clear()
