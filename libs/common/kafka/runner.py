"""The consumer runner: the one loop between a consumer and a handler, for every service.

A service writes a handler, ``async (Record) -> None``, that decodes the record and
acts on it; :func:`run_consumer` does the rest, the same way everywhere:

- **Invalid records.** A handler raising one of :data:`INVALID` (a decode or
  validation error, or :class:`InvalidRecord`) sends the record to ``<topic>.dlq``
  with the error (:class:`DeadLetters`); the loop goes on.
- **Outages.** While the handler fails with the database unavailable
  (:func:`common.outage.unavailable`) the record waits, however long: it is not the
  record's fault, nothing is dead-lettered or committed past it. This is the runner's
  backpressure: a strategy takes no more work than it has room for, and a record
  waiting for the database holds its place.
- **Other errors** are retried with backoff up to ``attempts`` calls in all, then
  propagate: the runner stops with its batches uncommitted, so they are consumed again
  after a restart. Retries and waits go through :func:`common.outage.ride_out`.
- **Lag.** Given ``report_lag``, the runner measures its consumer's lag (end offset
  minus committed offset, per partition it holds) every ``lag_every_s`` and hands it
  to that callback, which a service binds to its metrics (this package has none).
- **Commits** follow the handler (at-least-once: handlers are idempotent). A polled
  batch's offsets are committed once it and every batch polled before it are done, for
  the partitions still assigned to this member.

Two strategies decide how a batch is handled: :class:`Sequential`, one record after
the other, and :class:`KeyedParallel`, the batch split by key with up to
``concurrency`` records in flight, one key's records in order, the next batch polled
while the last one drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from common.kafka.consumer import Consumer
from common.kafka.dead_letters import DeadLetters
from common.kafka.records import INVALID, CommitFailed, Partition, Record
from common.outage import DatabaseUnavailable, ride_out

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[None]]
"""Handles one record; raises one of :data:`INVALID` for a record it can never handle."""

LagReport = Callable[[str, Mapping[Partition, int]], None]
"""Receives a consumer group's lag, per partition the member holds now (``{}`` once it
stops); it must not block (it runs on the event loop)."""


Process = Callable[[Record], Awaitable[None]]


class _Dispatcher(Protocol):
    """A strategy at work: starts the handling of each polled batch."""

    batches_in_flight: int

    def submit(self, records: list[Record]) -> list[asyncio.Task[None]]:
        """Start handling ``records``: the tasks that handle them."""
        ...


@dataclass(frozen=True)
class Sequential:
    """One record after the other, in the order polled; the next batch is polled once
    the last one is handled and committed."""

    def start(self, process: Process) -> _Dispatcher:
        """The strategy at work for one run of the runner; ``process`` handles a record."""
        return _InOrder(process)


@dataclass(frozen=True)
class KeyedParallel:
    """A batch split by key: up to ``concurrency`` records in flight, one key's records
    one after the other (across batches too), the next batch polled while the last one
    drains (``batches_in_flight`` at most), so that the tail of a batch, its slowest
    records, does not leave the handler idle."""

    concurrency: int
    batches_in_flight: int = 2

    def start(self, process: Process) -> _Dispatcher:
        """The strategy at work for one run of the runner; ``process`` handles a record."""
        return _ByKey(process, self.concurrency, self.batches_in_flight)


Strategy = Sequential | KeyedParallel


class _InOrder:
    """:class:`Sequential` at work: a batch's records one after the other, in one task."""

    batches_in_flight = 1

    def __init__(self, process: Process) -> None:
        self._process = process

    def submit(self, records: list[Record]) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._all(records))]

    async def _all(self, records: list[Record]) -> None:
        for record in records:
            await self._process(record)


class _ByKey:
    """:class:`KeyedParallel` at work: a task per key and batch, chained after the key's
    task of the batch before, ``concurrency`` of them past the gate at once."""

    def __init__(self, process: Process, concurrency: int, batches_in_flight: int) -> None:
        self._process = process
        self._gate = asyncio.Semaphore(concurrency)
        self._tails: dict[str | None, asyncio.Task[None]] = {}  # each key's latest task
        self.batches_in_flight = batches_in_flight

    def submit(self, records: list[Record]) -> list[asyncio.Task[None]]:
        by_key: dict[str | None, list[Record]] = {}
        for record in records:
            by_key.setdefault(record.key, []).append(record)
        tasks = []
        for key, mine in by_key.items():
            task = asyncio.create_task(self._key(mine, self._tails.get(key)))
            self._tails[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))  # type: ignore[misc]
            tasks.append(task)
        return tasks

    async def _key(self, records: list[Record], after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.wait([after])
            if after.cancelled() or after.exception() is not None:
                return  # its batch fails and is consumed again, this one with it, in order
        async with self._gate:
            for record in records:
                await self._process(record)

    def _forget(self, key: str | None, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]


class _Batch:
    """One polled batch in flight: the tasks that handle it, and the offsets after it."""

    def __init__(self, tasks: list[asyncio.Task[None]], offsets: dict[Partition, int]) -> None:
        self.tasks = tasks
        self.offsets = offsets
        # Ends with the first error; a failed gather does not cancel the other tasks,
        # this does (their records are consumed again with the batch).
        self.done = asyncio.gather(*tasks)
        self.done.add_done_callback(lambda _: self.cancel())

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


async def run_consumer(
    consumer: Consumer,
    handle: Handler,
    dead_letters: DeadLetters,
    *,
    stop: asyncio.Event,
    name: str,
    strategy: Strategy = Sequential(),
    attempts: int = 5,
    first_wait_s: float = 0.2,
    longest_wait_s: float = 5.0,
    poll_records: int = 500,
    poll_timeout_s: float = 0.2,
    report_lag: LagReport | None = None,
    lag_every_s: float = 15.0,
) -> None:
    """Consume with ``strategy`` until ``stop`` is set: poll, handle, dead-letter, commit.

    See the module's docstring for what happens to invalid records, outages and other
    errors. Blocks until ``stop`` is set, then finishes and commits the batches in
    flight and returns; returns with them uncommitted if the database is unavailable
    then. Raises a handler's error after ``attempts`` calls (the batches in flight are
    cancelled, uncommitted), and ``PublishError`` if a dead letter cannot be published.
    A commit refused after a rebalance is logged: those records are consumed again.
    ``name`` names the consumer in logs. ``report_lag`` gets the lag every
    ``lag_every_s`` seconds (see :data:`LagReport`); a failed measurement is skipped.
    """

    async def process(record: Record) -> None:
        try:
            await ride_out(
                lambda: handle(record),
                what=name,
                stop=stop,
                attempts=attempts,
                give_up=INVALID,
                first_wait_s=first_wait_s,
                longest_wait_s=longest_wait_s,
            )
        except INVALID as exc:
            await dead_letters.send(record, exc)

    dispatcher = strategy.start(process)
    in_flight: deque[_Batch] = deque()
    watcher = None
    if report_lag is not None:
        watcher = asyncio.create_task(_watch_lag(consumer, report_lag, lag_every_s, name))
    try:
        while not stop.is_set():
            while in_flight and in_flight[0].done.done():
                await _settle(consumer, in_flight, name)
            if len(in_flight) >= dispatcher.batches_in_flight:
                await _settle(consumer, in_flight, name)
                continue
            records = await consumer.poll(timeout_s=poll_timeout_s, max_records=poll_records)
            if not records:
                continue
            offsets = {record.where: record.offset + 1 for record in records}
            in_flight.append(_Batch(dispatcher.submit(records), offsets))
        while in_flight:
            await _settle(consumer, in_flight, name)
    except DatabaseUnavailable:
        if not stop.is_set():
            raise
        log.warning("%s stopped during a database outage; batches left uncommitted", name)
    finally:
        if watcher is not None and report_lag is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            report_lag(consumer.group_id or name, {})
        # After an error or a cancellation: stop what still runs, uncommitted.
        for batch in in_flight:
            batch.cancel()
        # Waited for, their errors retrieved (the first one was raised above).
        await asyncio.gather(
            *(t for b in in_flight for t in b.tasks),
            *(b.done for b in in_flight),
            return_exceptions=True,
        )


async def _watch_lag(consumer: Consumer, report: LagReport, every_s: float, name: str) -> None:
    """Measure ``consumer``'s lag every ``every_s`` seconds and report it, until cancelled."""
    group = consumer.group_id or name
    while True:
        try:
            report(group, await consumer.lag())
        except Exception as exc:  # a broker away: the next measurement will tell
            log.debug("%s: lag not measured: %s", name, exc)
        await asyncio.sleep(every_s)


async def _settle(consumer: Consumer, in_flight: deque[_Batch], name: str) -> None:
    """Wait for the oldest batch in flight and commit its offsets (raises its error)."""
    batch = in_flight[0]
    await batch.done
    in_flight.popleft()
    assigned = consumer.assignment()
    offsets: Mapping[Partition, int] = {
        where: offset for where, offset in batch.offsets.items() if where in assigned
    }
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except CommitFailed as exc:
        # The group rebalanced meanwhile (e.g. paused longer than max_poll_interval_ms
        # in an outage): the records are consumed again, by whoever holds them now.
        log.warning("%s: offsets not committed, the group rebalanced: %s", name, exc)
