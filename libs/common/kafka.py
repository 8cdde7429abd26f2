"""Kafka for every service: the only module that imports aiokafka.

Producers are idempotent with ``acks=all``; values are JSON (orjson, or
pydantic's serializer for models); the key is the customer id. Consumers commit
manually after their handler ran, so processing is at-least-once and handlers
must be idempotent. A record that cannot be decoded or validated goes to the
topic's dead-letter topic with the error; the loop goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from pydantic import BaseModel, ValidationError

from common.outage import DatabaseUnavailable, ride_out
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]


class PublishError(Exception):
    """The broker did not acknowledge a record (unreachable, timed out or refused)."""


class InvalidRecord(Exception):
    """A record that can never be processed: it goes to the dead-letter topic."""


def encode(value: BaseModel | dict[str, Any] | bytes) -> bytes:
    """Serialise a record value as JSON bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)


OutgoingRecord = tuple["Topic | str", str, "BaseModel | dict[str, Any] | bytes", Headers]
"""(topic, key, value, headers) of a record to publish."""


class Publisher(Protocol):
    """Publishes records and returns once the broker acknowledged them (acks=all)."""

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        """Publish one record. Blocks until acknowledged; raises :class:`PublishError`."""
        ...

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        """Publish records, pipelined; the outcome of each (None = acknowledged).

        Returns within about ``timeout_s``: a record not acknowledged by then gets a
        :class:`PublishError` (it may still be written later, so a retry can duplicate
        it; consumers drop duplicates by event id). Never raises for a broker failure.
        """
        ...

    async def ready(self, timeout_s: float) -> str | None:
        """None if the cluster answers a metadata request in time, else the reason."""
        ...


@dataclass
class Published:
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FakePublisher:
    """In-memory publisher for unit tests."""

    prefix: str = "tenure."
    records: list[Published] = field(default_factory=list)

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        name = topic_name(topic, self.prefix) if isinstance(topic, Topic) else topic
        self.records.append(Published(name, key, encode(value), list(headers or [])))

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        for topic, key, value, headers in records:
            await self.publish(topic, key, value, headers)
        return [None] * len(records)

    async def ready(self, timeout_s: float) -> str | None:
        return None


async def _cluster_ready(producer: AIOKafkaProducer, timeout_s: float) -> str | None:
    """None if the cluster answers ``producer``'s metadata request in time, else why not."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"Kafka metadata request failed: {exc!r}"
    if not producer.client.cluster.brokers():
        return "no broker known"
    return None


class KafkaPublisher:
    """The real :class:`Publisher`: one idempotent aiokafka producer."""

    def __init__(self, settings: CommonSettings, *, client_id: str, **overrides: Any) -> None:
        self._prefix = settings.topic_prefix
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": settings.producer_linger_ms,
            "request_timeout_ms": settings.producer_request_timeout_ms,
        }
        options.update(overrides)
        self._options = options
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("publisher not started")
        return self._producer

    async def start(self) -> None:
        """Connect; aiokafka needs the running loop, so the producer is built here."""
        self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def name(self, topic: Topic | str) -> str:
        return topic_name(topic, self._prefix) if isinstance(topic, Topic) else topic

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        try:
            await self.producer.send_and_wait(
                self.name(topic), encode(value), key=key.encode(), headers=list(headers or [])
            )
        except KafkaError as exc:
            raise PublishError(f"publish to {self.name(topic)} failed: {exc!r}") from exc

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        outcomes: list[PublishError | None] = [None] * len(records)
        futures: dict[asyncio.Future[Any], int] = {}
        i = 0
        try:
            # send() waits for metadata and for room in the buffer: bounded by the same
            # deadline (one timeout for the loop, not a task per record).
            async with asyncio.timeout_at(deadline):
                for i, (topic, key, value, headers) in enumerate(records):
                    future = await self.producer.send(
                        self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                    )
                    futures[future] = i
                i = len(records)
        except (KafkaError, TimeoutError) as exc:
            for j in range(i, len(records)):
                outcomes[j] = PublishError(f"not sent: {exc!r}")
        if futures:
            done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
            for future in done:
                if future.exception() is not None:
                    outcomes[futures[future]] = PublishError(repr(future.exception()))
            for future in pending:
                outcomes[futures[future]] = PublishError("not acknowledged in time")
        return outcomes

    async def ready(self, timeout_s: float) -> str | None:
        if self._producer is None:
            return "producer not started"
        return await _cluster_ready(self._producer, timeout_s)

    async def publish_many(
        self,
        records: Iterable[tuple[Topic | str, str, BaseModel | dict[str, Any] | bytes, Headers]],
    ) -> None:
        """Publish several records, pipelined; returns when all are acknowledged."""
        try:
            futures = [
                await self.producer.send(
                    self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                )
                for topic, key, value, headers in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        """Like :meth:`publish_many`; returns per (topic, partition) the offset after them.

        Not atomic: on error some records may be written (see :class:`FencedProducer`).
        """
        try:
            futures = [
                await self.producer.send(
                    self.name(topic), encode(value), key=key.encode(), headers=list(headers)
                )
                for topic, key, value, headers in records
            ]
            written = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc
        return _offsets_after(written)


def _offsets_after(written: Iterable[Any]) -> dict[tuple[str, int], int]:
    after: dict[tuple[str, int], int] = {}
    for meta in written:
        where = (meta.topic, meta.partition)
        after[where] = max(after.get(where, 0), meta.offset + 1)
    return after


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


class KeyPartitioner:
    """Kafka's default key -> partition mapping (murmur2, as the Java client), memoised.

    aiokafka's murmur2 is pure Python and was a tenth of ingest's CPU; a customer's
    events keep coming, so the partition of a recent key is looked up instead. The
    mapping is the default one, so every producer agrees on a customer's partition.
    """

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        n = len(all_partitions)
        index = self._cache.get((key, n))
        if index is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            index = self._cache[key, n] = (murmur2(key) & 0x7FFFFFFF) % n
        return all_partitions[index]


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
        rest_s: float,
        spacing_s: float = 0.0,
        observe: Callable[[TransactionReport], None] | None = None,
        **overrides: Any,
    ) -> None:
        self._prefix = settings.topic_prefix
        self._partitioner = KeyPartitioner()
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
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
        # the commit markers, and aiokafka then sleeps 20 ms), so the one that has rested
        # longest takes the next group.
        self._ids = [f"{transactional_id}-{i}" for i in range(committers)]
        self._producers: list[AIOKafkaProducer | None] = [None] * committers
        self._rest_s = rest_s
        # Transactions begin at least ``spacing_s`` apart. Without it the producers fall
        # into step: a burst sends all of them off at once, they commit and rest
        # together, and requests arriving meanwhile wait a whole rest for the next one.
        # Spaced out, one of them is free every ``spacing_s``, which bounds the wait.
        self._spacing_s = spacing_s
        self._next_begin = 0.0
        # (slot, time it may begin again), in the order the producers became idle
        self._idle: collections.deque[tuple[int, float]] = collections.deque(
            (slot, 0.0) for slot in range(committers)
        )
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
        return await _cluster_ready(producer, timeout_s)

    async def _new_producer(self, slot: int) -> AIOKafkaProducer:
        """A started producer; retried until the broker answers (its id needs the broker)."""
        delay = 0.1
        while True:
            producer = AIOKafkaProducer(**self._options, transactional_id=self._ids[slot])
            try:
                await producer.start()
                return producer
            except (KafkaError, OSError) as exc:
                log.warning("transactional producer cannot start yet: %r", exc)
                await self._close(producer)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

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
                slot, rested_at = self._idle[0]
                now, may_begin = loop.time(), max(rested_at, self._next_begin)
                if may_begin > now:
                    loop.call_at(may_begin, self._wakeup.set)
                    break
                group = self._take_group()
                if not group:
                    break
                self._idle.popleft()
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
            self._idle.append((slot, asyncio.get_running_loop().time() + self._rest_s))
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
        a ``send()`` call, a future and an accumulator append per record: most of the
        publisher's CPU on the batch path.
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


class FencedProducer:
    """The one transactional producer of a single-writer role (e.g. the outbox relay).

    All instances share ``transactional_id``: starting one fences every earlier one,
    the broker aborting the transaction it left open and refusing its later writes, so
    after :meth:`start` returns, what an earlier instance wrote is final (committed or
    aborted for good). :meth:`publish_batch` writes records all or nothing.
    """

    def __init__(
        self,
        settings: CommonSettings,
        *,
        client_id: str,
        transactional_id: str,
        transaction_timeout_ms: int = 30_000,
    ) -> None:
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "client_id": client_id,
            "transactional_id": transactional_id,
            "transaction_timeout_ms": transaction_timeout_ms,
            "acks": "all",
            "linger_ms": settings.producer_linger_ms,
            "request_timeout_ms": settings.producer_request_timeout_ms,
        }
        self._prefix = settings.topic_prefix
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start and fence earlier instances. Raises ``PublishError`` if Kafka is unreachable."""
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise PublishError(f"transactional producer cannot start: {exc!r}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
            self._producer = None

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        """Write ``records`` in one transaction; per (topic, partition) the offset after them.

        Returns once committed. Raises ``PublishError`` when the transaction could not
        commit (then nothing of it is visible to ``read_committed`` readers, or it will
        be aborted when the next instance starts).
        """
        if self._producer is None:
            raise PublishError("producer not started")
        producer = self._producer
        try:
            async with producer.transaction():
                sent = [
                    await producer.send(
                        topic_name(topic, self._prefix) if isinstance(topic, Topic) else topic,
                        encode(value),
                        key=key.encode(),
                        headers=list(headers),
                    )
                    for topic, key, value, headers in records
                ]
                written = [await ack for ack in sent]
        except KafkaError as exc:
            raise PublishError(f"transaction failed: {exc!r}") from exc
        return _offsets_after(written)


async def committed_headers(
    settings: CommonSettings,
    topic: str,
    start: dict[int, int] | None,
    header: str,
    *,
    timeout_s: float = 60.0,
) -> tuple[list[bytes], dict[int, int]]:
    """Values of ``header`` on the committed records of ``topic`` from ``start`` to its end.

    ``start`` maps partition to offset (a partition missing from it is read from its
    beginning); ``None`` reads nothing and only returns the end offsets. Returns the
    values and the end offsets read up to. Reads with ``read_committed``: records of
    open or aborted transactions are not seen. Raises
    ``TimeoutError`` if the end is not reached within ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = sorted(
        p["partition"]
        for t in described
        if t["topic"] == topic and not t["error_code"]
        for p in t["partitions"]
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        if start is None:
            return [], {tp.partition: ends[tp] for tp in assigned}
        for tp in assigned:
            consumer.seek(tp, start.get(tp.partition, 0))
        values: list[bytes] = []
        left = {tp for tp in assigned if await consumer.position(tp) < ends[tp]}
        async with asyncio.timeout(timeout_s):
            while left:
                batches = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            values += [v for k, v in record.headers if k == header]
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
        return values, {tp.partition: ends[tp] for tp in assigned}
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Record:
    """A consumed record, free of aiokafka types."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def from_consumer(cls, record: ConsumerRecord[bytes, bytes]) -> Record:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode() if record.key is not None else None,
            value=record.value or b"",
            headers=tuple(record.headers or ()),
            timestamp_ms=record.timestamp,
        )


def make_consumer(
    settings: CommonSettings, topics: Iterable[Topic | str], *, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer of ``topics`` in ``group_id`` that commits only when told to."""
    names = [topic_name(t, settings.topic_prefix) if isinstance(t, Topic) else t for t in topics]
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "metadata_max_age_ms": 5000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*names, **options)


class DeadLetters:
    """Sends records that cannot be processed to ``<topic>.dlq`` with the error in headers."""

    def __init__(self, publisher: Publisher, *, consumer_name: str) -> None:
        self._publisher = publisher
        self._consumer = consumer_name

    async def send(self, record: Record, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        headers = [
            *record.headers,
            ("dlq.error", reason[:4000].encode()),
            ("dlq.consumer", self._consumer.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
        ]
        await self._publisher.publish(
            dlq_name(record.topic), record.key or "", record.value, headers
        )
        log.warning(
            "record sent to dead-letter topic",
            extra={"topic": record.topic, "offset": record.offset, "error": reason[:500]},
        )


Handler = Callable[[Record], Awaitable[None]]

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    InvalidRecord,
    ValidationError,
    orjson.JSONDecodeError,
    UnicodeDecodeError,
)


async def run_consumer(
    consumer: AIOKafkaConsumer,
    handle: Handler,
    dead_letters: DeadLetters,
    *,
    stop: asyncio.Event,
    max_attempts: int = 5,
    backoff_s: float = 0.2,
    max_records: int = 500,
    name: str = "consumer",
) -> None:
    """Consume until ``stop`` is set: decode → handle → commit.

    A record whose handler raises one of :data:`DECODE_ERRORS` goes to the DLQ. While
    the handler fails with the database unavailable (:func:`common.outage.unavailable`)
    the loop pauses on that record and calls it again with backoff, however long the
    outage lasts (:func:`common.outage.ride_out`): nothing is dead-lettered, nothing
    committed past it. Any other error is retried with exponential backoff up to
    ``max_attempts``; then it propagates (offsets stay uncommitted, so the record is
    processed again after a restart). Stopped during an outage, returns uncommitted.
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        for records in batches.values():
            for raw in records:
                record = Record.from_consumer(raw)

                async def call(record: Record = record) -> None:
                    await handle(record)

                for attempt in range(1, max_attempts + 1):
                    try:
                        await ride_out(call, what=name, stop=stop)
                        break
                    except DECODE_ERRORS as exc:
                        await dead_letters.send(record, exc)
                        break
                    except DatabaseUnavailable:
                        return  # stopping in an outage: the batch stays uncommitted
                    except Exception:
                        if attempt == max_attempts:
                            raise
                        log.exception("handler failed, retrying", extra={"attempt": attempt})
                        await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        if batches:
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                # The group rebalanced meanwhile (e.g. paused longer than
                # max_poll_interval_ms in an outage): the records are consumed again.
                log.warning("offsets not committed, the group rebalanced: %s", exc)


async def ensure_topics(
    settings: CommonSettings,
    topics: Iterable[Topic] = tuple(Topic),
    *,
    replication_factor: int = 1,
    with_dlq: bool = True,
) -> None:
    """Create Tenure's topics (and their DLQs) if missing. Idempotent."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="tenure-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            name = topic_name(topic, settings.topic_prefix)
            config = {"cleanup.policy": "compact"} if topic.compacted else {}
            names = [name, dlq_name(name)] if with_dlq else [name]
            for n in names:
                if n not in existing:
                    wanted.append(
                        NewTopic(
                            n,
                            num_partitions=settings.topic_partitions,
                            replication_factor=replication_factor,
                            topic_configs=config if n == name else {},
                        )
                    )
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def broker_reachable(settings: CommonSettings, timeout_s: float = 3.0) -> bool:
    """Whether the cluster answers a metadata request within ``timeout_s``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
