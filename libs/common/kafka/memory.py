"""An in-memory broker, and the publisher and consumer fakes on top of it.

:class:`MemoryBroker` keeps what the runner and the services rely on of Kafka: topics
of numbered partitions, a key's partition chosen by the same murmur2 mapping as every
producer (:func:`common.kafka.partitioning.partition_for`), offsets, consumer groups
whose members share the partitions and resume at the committed offsets, and
transactions whose records ``read_committed`` readers see only once committed (never if
aborted; an open one holds back the records after it in its partition). What it leaves
out: replication, retention, compaction, and the offsets Kafka gives transaction
markers. :class:`FakePublisher` and :class:`FakeConsumer` implement the same Protocols
as the real publisher and consumer; ``tests/integration/test_kafka_contract.py`` runs
one suite against both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from common.kafka.partitioning import partition_for
from common.kafka.records import (
    CommitFailed,
    Headers,
    OutgoingRecord,
    Partition,
    PublishError,
    Record,
    encode,
)
from common.topics import Topic, topic_name


@dataclass
class _Entry:
    record: Record
    transaction: int | None  # the open transaction it was written in; None once committed
    aborted: bool = False


class MemoryBroker:
    """Topics, partitions, offsets, consumer groups and transactions, in memory.

    Not thread-safe; one event loop. ``partitions`` is the partition count of topics
    created without one (and of those created on first use, if ``auto_create``).
    """

    def __init__(self, *, partitions: int = 3, auto_create: bool = True) -> None:
        self.default_partitions = partitions
        self.auto_create = auto_create
        self._logs: dict[str, list[list[_Entry]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._groups: dict[str, list[FakeConsumer]] = {}
        self._open: dict[int, list[_Entry]] = {}
        self._next_transaction = 1
        self._changed = asyncio.Event()

    # -- topics and records ----------------------------------------------------------
    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` unless it exists (idempotent)."""
        if name not in self._logs:
            self._logs[name] = [[] for _ in range(partitions or self.default_partitions)]

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has; raises ``KeyError`` if it does not exist
        and topics are not created on first use."""
        if topic not in self._logs and self.auto_create:
            self.create_topic(topic)
        return len(self._logs[topic])

    def append(
        self,
        topic: str,
        key: str,
        value: bytes,
        headers: Headers = (),
        *,
        transaction: int | None = None,
    ) -> Record:
        """Write one record on ``key``'s partition; the record as stored."""
        partition = partition_for(key.encode(), self.partitions(topic))
        log = self._logs[topic][partition]
        record = Record(
            topic=topic,
            partition=partition,
            offset=len(log),
            key=key,
            value=value,
            headers=tuple(headers),
            timestamp_ms=int(time.time() * 1000),
        )
        entry = _Entry(record, transaction)
        log.append(entry)
        if transaction is not None:
            self._open[transaction].append(entry)
        self._notify()
        return record

    def begin(self) -> int:
        """Open a transaction; its id, for :meth:`append`, :meth:`commit`, :meth:`abort`."""
        transaction, self._next_transaction = self._next_transaction, self._next_transaction + 1
        self._open[transaction] = []
        return transaction

    def commit(self, transaction: int) -> None:
        for entry in self._open.pop(transaction):
            entry.transaction = None
        self._notify()

    def abort(self, transaction: int) -> None:
        for entry in self._open.pop(transaction):
            entry.transaction, entry.aborted = None, True
        self._notify()

    def records(self, topic: str) -> list[Record]:
        """The committed records of ``topic``, partition by partition (for assertions)."""
        return [
            entry.record
            for log in self._logs.get(topic, [])
            for entry in log
            if entry.transaction is None and not entry.aborted
        ]

    def end_offset(self, topic: str, partition: int) -> int:
        return len(self._logs[topic][partition])

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset ``group`` resumes ``partition`` at, if it committed one."""
        return self._committed.get((group, topic, partition))

    def read(
        self, where: Partition, position: int, limit: int, *, read_committed: bool
    ) -> tuple[list[Record], int]:
        """Up to ``limit`` records of a partition from ``position``; the position after
        them. ``read_committed`` stops at an open transaction and skips aborted ones."""
        log = self._logs[where[0]][where[1]]
        out: list[Record] = []
        while position < len(log) and len(out) < limit:
            entry = log[position]
            if read_committed and entry.transaction is not None:
                break
            if not (read_committed and entry.aborted):
                out.append(entry.record)
            position += 1
        return out, position

    async def changed(self, timeout_s: float) -> None:
        """Wait until something is written or committed, or ``timeout_s`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- consumer groups --------------------------------------------------------------
    def _join(self, member: FakeConsumer) -> None:
        if member.group_id is None:
            member._assign({(t, p) for t in member.topics for p in range(self.partitions(t))}, self)
            return
        self._groups.setdefault(member.group_id, []).append(member)
        self._rebalance(member.group_id)

    def _leave(self, member: FakeConsumer) -> None:
        if member.group_id is not None and member in self._groups.get(member.group_id, []):
            self._groups[member.group_id].remove(member)
            self._rebalance(member.group_id)

    def _rebalance(self, group: str) -> None:
        """Share each topic's partitions among the members subscribed to it, round robin
        in join order."""
        members = self._groups[group]
        shares: dict[int, set[Partition]] = {id(m): set() for m in members}
        for topic in sorted({t for m in members for t in m.topics}):
            readers = [m for m in members if topic in m.topics]
            for p in range(self.partitions(topic)):
                shares[id(readers[p % len(readers)])].add((topic, p))
        for member in members:
            member._assign(shares[id(member)], self)

    def _commit(self, member: FakeConsumer, offsets: Mapping[Partition, int]) -> None:
        if member.group_id is None:
            raise CommitFailed("a consumer without a group has nothing to commit")
        lost = set(offsets) - member.assignment()
        if lost:
            raise CommitFailed(f"not assigned to this member any more: {sorted(lost)}")
        for (topic, partition), offset in offsets.items():
            self._committed[member.group_id, topic, partition] = offset


class FakeConsumer:
    """A :class:`common.kafka.consumer.Consumer` of a :class:`MemoryBroker`."""

    def __init__(
        self,
        broker: MemoryBroker,
        topics: Iterable[Topic | str],
        *,
        group_id: str | None,
        prefix: str = "tenure.",
        read_committed: bool = True,
    ) -> None:
        self.broker = broker
        self.topics = [topic_name(t, prefix) if isinstance(t, Topic) else t for t in topics]
        self.group_id = group_id
        self.read_committed = read_committed
        self._positions: dict[Partition, int] = {}
        self._turn = 0

    def _assign(self, partitions: set[Partition], broker: MemoryBroker) -> None:
        """Called by the broker: keep the positions of partitions kept, resume new ones
        at the group's committed offset (or the beginning)."""
        positions: dict[Partition, int] = {}
        for where in partitions:
            kept = self._positions.get(where)
            committed = broker.committed(self.group_id, *where) if self.group_id else None
            positions[where] = kept if kept is not None else committed or 0
        self._positions = positions

    async def start(self) -> None:
        self.broker._join(self)

    async def stop(self) -> None:
        self.broker._leave(self)
        self._positions = {}

    async def __aenter__(self) -> FakeConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            records = self._fetch(max_records)
            left = deadline - loop.time()
            if records or left <= 0:
                return records
            await self.broker.changed(left)

    def _fetch(self, limit: int) -> list[Record]:
        # The first partition read turns with each poll, so none waits behind a busy one.
        order = sorted(self._positions)
        self._turn += 1
        if order:
            start = self._turn % len(order)
            order = order[start:] + order[:start]
        out: list[Record] = []
        for where in order:
            if len(out) >= limit:
                break
            records, self._positions[where] = self.broker.read(
                where, self._positions[where], limit - len(out), read_committed=self.read_committed
            )
            out += records
        return out

    def assignment(self) -> frozenset[Partition]:
        return frozenset(self._positions)

    async def lag(self) -> dict[Partition, int]:
        lags = {}
        for topic, partition in self._positions:
            group = self.group_id
            committed = (group and self.broker.committed(group, topic, partition)) or 0
            lags[topic, partition] = max(0, self.broker.end_offset(topic, partition) - committed)
        return lags

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        self.broker._commit(self, offsets)


@dataclass
class Published:
    """A record as a :class:`FakePublisher` published it."""

    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FakePublisher:
    """A :class:`common.kafka.publisher.Publisher` writing to a :class:`MemoryBroker`
    (its own unless given one); ``records`` lists what it published, in order."""

    prefix: str = "tenure."
    records: list[Published] = field(default_factory=list)
    broker: MemoryBroker = field(default_factory=MemoryBroker)

    def name(self, topic: Topic | str) -> str:
        return topic_name(topic, self.prefix) if isinstance(topic, Topic) else topic

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def __aenter__(self) -> FakePublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def _write(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None,
        transaction: int | None = None,
    ) -> Record:
        name, data, kept = self.name(topic), encode(value), list(headers or [])
        self.records.append(Published(name, key, data, kept))
        return self.broker.append(name, key, data, kept, transaction=transaction)

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        self._write(topic, key, value, headers)

    async def publish_each(
        self, records: Sequence[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        for topic, key, value, headers in records:
            await self.publish(topic, key, value, headers)
        return [None] * len(records)

    async def publish_batch(self, records: Sequence[OutgoingRecord]) -> dict[Partition, int]:
        """Write ``records`` in one transaction (all or nothing); per (topic, partition)
        the offset after them, as :meth:`common.kafka.fenced.FencedProducer.publish_batch`."""
        transaction = self.broker.begin()
        try:
            written = [self._write(*record, transaction=transaction) for record in records]
        except BaseException:
            self.broker.abort(transaction)
            raise
        self.broker.commit(transaction)
        after: dict[Partition, int] = {}
        for record in written:
            after[record.where] = max(after.get(record.where, 0), record.offset + 1)
        return after

    async def ready(self, timeout_s: float) -> str | None:
        return None
