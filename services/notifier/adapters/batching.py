"""Group commit: concurrent callers' writes gathered into one statement and one commit.

PostgreSQL commits are the notifier's bottleneck (each one waits for the disk); writes
that arrive while a flush is in flight wait for the next flush, which takes them all at
once. No timer: a lone write is flushed at once, so latency is never traded for batching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Calls ``flush(items)`` with every item submitted since the last flush began.

    ``flush`` returns one result per item, in order; if it raises, every caller of that
    batch gets the exception. At most one flush runs at a time, of at most ``max_batch``.
    """

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:  # handed to the callers, never lost
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
