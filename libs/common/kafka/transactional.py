"""Ingest's publisher: Kafka transactions with group commit, all or nothing per call."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from common.kafka.partitioning import KeyPartitioner
from common.kafka.publisher import cluster_ready
from common.kafka.records import Headers, InvalidRecord, OutgoingRecord, PublishError, encode
from common.kafka.security import client_options
from common.outage import ride_out
from common.settings import CommonSettings
from common.topics import Topic, topic_name

log = logging.getLogger(__name__)


def _broker_down(exc: BaseException) -> bool:
    """Whether a producer failed to start because the broker does not answer (yet)."""
    return isinstance(exc, (KafkaError, OSError))


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (asyncio logs unretrieved ones as errors)."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Request:
    """One caller's records, waiting for the committer's verdict."""

    records: Sequence[OutgoingRecord]
    queued_at: float
    deadline: float
    outcome: asyncio.Future[list[PublishError | None]]
    taken: bool = False

    def answer(self, error: PublishError | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result([error] * len(self.records))


@dataclass(frozen=True)
class TransactionReport:
    """One transaction of a :class:`TransactionalPublisher`, for its ``observe`` callback."""

    outcome: str
    """committed, aborted, failed (the commit was refused) or unknown (no answer to it)"""
    events: int
    waited_s: float
    """How long its longest-waiting request was queued before the transaction began."""
    seconds: float
    """From its beginning to its outcome."""


class TransactionalPublisher:
    """A :class:`Publisher` whose records are written all or nothing: group commit.

    Concurrent :meth:`publish_each` calls are gathered into one Kafka transaction by a
    single committer task. A call is answered with success only after its transaction
    committed; when its records are not acknowledged in time, the transaction is
    aborted, so ``read_committed`` consumers never see a record whose caller was told
    it failed. This closes the gap of a plain idempotent producer, which keeps retrying
    a timed-out batch and writes it after the caller gave up.

    Three outcomes per call, all within ``timeout_s``: committed (None), not written
    (the transaction was aborted or never began), or unknown, when the commit request
    itself did not come back in time (``commit_reserve_s`` is kept for it; counted in
    :attr:`outcomes` as ``unknown``).
    """

    def __init__(
        self,
        settings: CommonSettings,
        *,
        client_id: str,
        transactional_id: str,
        transaction_timeout_ms: int,
        commit_reserve_s: float,
        max_group_records: int,
        committers: int,
        spacing_s: float = 0.0,
        observe: Callable[[TransactionReport], None] | None = None,
        **overrides: Any,
    ) -> None:
        self._prefix = settings.topic_prefix
        self._partitioner = KeyPartitioner()
        self._options: dict[str, Any] = {
            **client_options(settings),
            "client_id": client_id,
            "transaction_timeout_ms": transaction_timeout_ms,
            "partitioner": self._partitioner,
            "acks": "all",
            # A group is a batch already: waiting to fill one only delays its commit.
            "linger_ms": 0,
            "request_timeout_ms": settings.producer_request_timeout_ms,
            **overrides,
        }
        self._commit_reserve_s = commit_reserve_s
        self._max_group_records = max_group_records
        # One producer per committer (a producer runs one transaction at a time); several
        # let one group's commit overlap the next groups' sends. Idle ones wait in
        # ``_idle``, longest idle first: a producer that begins a transaction right after
        # committing one is told to wait (Kafka's CONCURRENT_TRANSACTIONS while it writes
        # the commit markers, and aiokafka then sleeps 20 ms), so the one idle the
        # longest takes the next group.
        self._ids = [f"{transactional_id}-{i}" for i in range(committers)]
        self._producers: list[AIOKafkaProducer | None] = [None] * committers
        # Transactions begin at least ``spacing_s`` apart. Without it the producers fall
        # into step: a burst sends all of them off at once, they commit together, and
        # requests arriving meanwhile wait for the next commit. Spaced out, one of them
        # is free every ``spacing_s``, which bounds the wait (p99 of the single-event
        # load 1.6x its floor with 5 ms, 2.4x without: docs/BENCHMARKS.md).
        self._spacing_s = spacing_s
        self._next_begin = 0.0
        # slots, in the order the producers became idle
        self._idle: collections.deque[int] = collections.deque(range(committers))
        self._queue: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self._replacing: set[int] = set()
        self.replaced = 0
        """Producers replaced by fresh ones after a failure that could leave them unusable."""
        self.outcomes: collections.Counter[str] = collections.Counter()
        """Transactions by outcome: committed, aborted, failed (the commit), unknown."""
        self._observe = observe

    def name(self, topic: Topic | str) -> str:
        return topic_name(topic, self._prefix) if isinstance(topic, Topic) else topic

    async def start(self) -> None:
        for slot in range(len(self._ids)):
            self._producers[slot] = await self._new_producer(slot)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="txn-dispatcher")

    async def stop(self) -> None:
        for task in [*self._commits, *([self._dispatcher] if self._dispatcher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatcher = None
        for request in self._queue:
            request.answer(PublishError("publisher stopped"))
        self._queue.clear()
        for slot, producer in enumerate(self._producers):
            if producer is not None:
                await self._close(producer)
            self._producers[slot] = None

    async def __aenter__(self) -> TransactionalPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        timeout_s = self._options["request_timeout_ms"] / 1000
        [error] = await self.publish_each([(topic, key, value, headers or [])], timeout_s=timeout_s)
        if error is not None:
            raise error

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        if not records:
            return []
        loop = asyncio.get_running_loop()
        now = loop.time()
        request = _Request(records, now, now + timeout_s, loop.create_future())
        self._queue.append(request)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(request.outcome), timeout_s)
        except TimeoutError:
            if not request.taken:  # never sent: safe to say so, the committer skips it
                request.answer(PublishError("not acknowledged in time (Kafka busy or down)"))
            # A taken request is answered by the committer by its deadline (see _commit).
            return await asyncio.shield(request.outcome)

    async def ready(self, timeout_s: float) -> str | None:
        producer = next(
            (p for slot, p in enumerate(self._producers) if p and slot not in self._replacing),
            None,
        )
        if producer is None or self._dispatcher is None or self._dispatcher.done():
            return "transactional producer not running"
        return await cluster_ready(producer, timeout_s)

    async def _new_producer(self, slot: int) -> AIOKafkaProducer:
        """A started producer; retried until the broker answers (its id needs the broker)."""

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(**self._options, transactional_id=self._ids[slot])
            try:
                await producer.start()
            except (KafkaError, OSError):
                await self._close(producer)
                raise
            return producer

        return await ride_out(
            start,
            what=f"transactional producer {self._ids[slot]}",
            outage=_broker_down,
            first_wait_s=0.1,
            longest_wait_s=2.0,
            jitter_s=0.0,
        )

    async def _close(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._commit_reserve_s + 1)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("producer did not stop cleanly: %r", exc)

    async def _dispatch(self) -> None:
        """Hand each group of waiting requests to the producer idle the longest."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()  # before looking: a request arriving later sets it again
            while self._queue and self._idle:
                now = loop.time()
                if self._next_begin > now:
                    loop.call_at(self._next_begin, self._wakeup.set)
                    break
                group = self._take_group()
                if not group:
                    break
                slot = self._idle.popleft()
                self._next_begin = now + self._spacing_s
                task = asyncio.create_task(self._commit_and_release(slot, group))
                self._commits.add(task)
                task.add_done_callback(self._commits.discard)

    async def _commit_and_release(self, slot: int, group: list[_Request]) -> None:
        try:
            await self._commit(slot, group)
        except Exception as exc:  # not a broker failure: answer, never hang a caller
            log.exception("transaction of %d requests failed unexpectedly", len(group))
            for request in group:
                request.answer(PublishError(f"internal error: {exc!r}"))
            # Whatever state the producer was left in, a fresh one is known to be usable.
            await self._replace(slot, f"internal error: {exc!r}")
        finally:
            self._idle.append(slot)
            self._wakeup.set()

    def _take_group(self) -> list[_Request]:
        now = asyncio.get_running_loop().time()
        group: list[_Request] = []
        size = 0
        while self._queue and size < self._max_group_records:
            request = self._queue.popleft()
            if request.outcome.done():
                continue  # its caller gave up while it waited
            if request.deadline - self._commit_reserve_s <= now:
                request.answer(PublishError("not acknowledged in time (Kafka busy or down)"))
                continue
            request.taken = True
            group.append(request)
            size += len(request.records)
        return group

    async def _commit(self, slot: int, group: list[_Request]) -> None:
        """Write ``group`` in one transaction of the slot's producer and answer each request.

        A producer is used again only after a clean end: committed, or aborted after its
        records were not acknowledged in time. After anything else (a refused batch, a
        failed commit, an abort that failed, a producer that cannot begin) it is replaced
        by a fresh one: aiokafka leaves a producer whose batch was refused with its
        sequence numbers out of step with the broker (every later batch to that partition
        is refused as out of order), and one whose background sender crashed (which a
        broker restart can cause) in a state where no transaction can begin. Kept, either
        would fail a share of all requests until the process restarts.
        """
        producer = self._producers[slot]
        assert producer is not None
        loop = asyncio.get_running_loop()
        began_at = loop.time()
        deadline = min(r.deadline for r in group)
        send_by = deadline - self._commit_reserve_s
        error: PublishError | None = None
        reusable = True
        try:
            async with asyncio.timeout_at(send_by):
                await producer.begin_transaction()
        except TimeoutError as exc:  # still waiting for the broker: nothing was sent
            error = PublishError(f"not acknowledged in time: {exc!r}")
        except (KafkaError, AssertionError) as exc:
            # Nothing was sent: the requests go back to the head of the queue for another
            # producer (outside any timeout: once requeued, only their new producer or
            # their deadline answers them), and this one is replaced.
            self._requeue(group)
            await self._replace(slot, f"it cannot begin a transaction: {exc!r}")
            return
        if error is not None:
            for request in group:
                request.answer(error)
            self._report("aborted", group, began_at)
            return
        try:
            async with asyncio.timeout_at(send_by):
                acks = [
                    await producer.send_batch(batch, topic, partition=partition)
                    for topic, partition, batch in await self._batches(producer, group)
                ]
                for ack in acks:  # one that fails after a timeout is not an unseen error
                    ack.add_done_callback(_seen)
                # wait, not gather: a timeout must not cancel aiokafka's own futures
                await asyncio.wait(acks)
            failures = [a.exception() for a in acks if a.exception() is not None]
            if failures:
                error = PublishError(f"refused: {failures[0]!r}")
                reusable = False  # its sequence numbers may be out of step: see above
        except (KafkaError, TimeoutError) as exc:
            error = PublishError(f"not acknowledged in time: {exc!r}")
        except InvalidRecord as exc:
            error = PublishError(f"refused: {exc}")
        if error is not None:
            for request in group:
                request.answer(error)
            self._report("aborted", group, began_at)
            await self._abort(slot, reusable=reusable)
            return
        commit = asyncio.ensure_future(producer.commit_transaction())
        try:
            await asyncio.wait_for(asyncio.shield(commit), max(0.0, deadline - loop.time()))
            for request in group:
                request.answer(None)
            self._report("committed", group, began_at)  # a failing observer cannot change them
            return
        except TimeoutError:
            for request in group:
                request.answer(PublishError("commit outcome unknown: Kafka did not answer"))
            self._report("unknown", group, began_at)
        except KafkaError as exc:
            for request in group:
                request.answer(PublishError(f"commit failed: {exc!r}"))
            self._report("failed", group, began_at)
        try:
            await commit  # the next transaction can only begin when this one has ended
        except (KafkaError, AssertionError) as exc:
            log.warning("transaction commit failed: %r", exc)
            await self._abort(slot, reusable=False)

    def _requeue(self, group: list[_Request]) -> None:
        """Put the requests of a group that was never sent back at the head of the queue."""
        for request in reversed(group):
            request.taken = False
            self._queue.appendleft(request)
        self._wakeup.set()

    async def _batches(
        self, producer: AIOKafkaProducer, group: list[_Request]
    ) -> list[tuple[str, int, Any]]:
        """The group's records as record batches, one or more per partition, in order.

        Building the batches here (the same key -> partition mapping ``send()`` uses)
        and handing each to the producer whole costs one future per batch instead of
        a ``send()`` call, a future and an accumulator append per record: with a
        ``send()`` per record ingest's batch throughput was 0.71 times as high
        (docs/BENCHMARKS.md).
        """
        partitions: dict[str, list[int]] = {}
        open_: dict[tuple[str, int], Any] = {}
        ready: list[tuple[str, int, Any]] = []
        for request in group:
            for topic, key, value, headers in request.records:
                name = self.name(topic)
                choices = partitions.get(name)
                if choices is None:
                    choices = partitions[name] = sorted(await producer.partitions_for(name))
                key_bytes = key.encode()
                partition = self._partitioner(key_bytes, choices, choices)
                value_bytes = encode(value)
                batch = open_.get((name, partition))
                if batch is None:
                    batch = open_[name, partition] = producer.create_batch()
                # the batch builder (C) takes a list; ingest passes one shared per kind
                header_list = headers if isinstance(headers, list) else list(headers)
                record = {"timestamp": None, "key": key_bytes, "value": value_bytes}
                if batch.append(**record, headers=header_list) is None:
                    ready.append((name, partition, batch))  # full: a new batch follows it
                    batch = open_[name, partition] = producer.create_batch()
                    if batch.append(**record, headers=header_list) is None:
                        raise InvalidRecord(f"record of {len(value_bytes)} bytes fits no batch")
        for (name, partition), batch in open_.items():
            batch.close()
            ready.append((name, partition, batch))
        return ready

    def _report(self, outcome: str, group: list[_Request], began_at: float) -> None:
        self.outcomes[outcome] += 1
        if self._observe is not None:
            self._observe(
                TransactionReport(
                    outcome=outcome,
                    events=sum(len(r.records) for r in group),
                    waited_s=began_at - min(r.queued_at for r in group),
                    seconds=asyncio.get_running_loop().time() - began_at,
                )
            )

    async def _abort(self, slot: int, *, reusable: bool = True) -> None:
        """End the transaction begun; a producer left unusable, or not ``reusable``, is
        replaced by a fresh one."""
        producer = self._producers[slot]
        assert producer is not None
        try:
            # Waits until the broker is back if it is down: requests meanwhile wait in the
            # queue and are answered 'not written' at their own deadline.
            await producer.abort_transaction()
        except (KafkaError, AssertionError) as exc:
            await self._replace(slot, f"the abort failed: {exc!r}")
            return
        if not reusable:
            await self._replace(slot, "a batch was refused or the commit failed")

    async def _replace(self, slot: int, why: str) -> None:
        """Close the slot's producer and start a fresh one with the same transactional id.

        The new one's initialisation fences the old one (a new epoch) and ends any
        transaction it left open. Blocks until the broker answers.
        """
        log.warning("replacing transactional producer %s: %s", self._ids[slot], why)
        producer = self._producers[slot]
        self._replacing.add(slot)
        try:
            if producer is not None:
                await self._close(producer)
            self._producers[slot] = await self._new_producer(slot)
            self.replaced += 1
        finally:
            self._replacing.discard(slot)
