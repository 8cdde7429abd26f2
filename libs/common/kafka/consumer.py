"""The consumer port (what the runner needs of a consumer) and its aiokafka adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, UnknownTopicOrPartitionError

from common.kafka.records import CommitFailed, Partition, Record
from common.kafka.security import client_options
from common.settings import CommonSettings
from common.topics import Topic, topic_name


class Consumer(Protocol):
    """A member of a consumer group that commits only when told to.

    Implemented by :class:`KafkaConsumer` and by the memory broker's
    :class:`common.kafka.memory.FakeConsumer`; ``tests/integration/test_kafka_contract.py``
    runs the same tests against both.
    """

    group_id: str | None
    """The consumer group (None: no group, nothing committed)."""

    async def start(self) -> None:
        """Join the group; the assigned partitions resume at their committed offsets
        (from the beginning where none is committed)."""
        ...

    async def stop(self) -> None:
        """Leave the group; nothing is committed on the way out."""
        ...

    async def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        """Up to ``max_records`` records after those returned before, in offset order
        within each partition; waits up to ``timeout_s`` for one, then returns []. Only
        committed records (``read_committed``): those of an open transaction wait for its
        end, those of an aborted one are never returned."""
        ...

    def assignment(self) -> frozenset[Partition]:
        """The partitions this member holds now (a rebalance changes them)."""
        ...

    async def lag(self) -> dict[Partition, int]:
        """Per partition this member holds: the end offset (the last stable one, for
        ``read_committed``) minus the group's committed offset (the partition's first
        offset where none is committed); 0 where no record lies between the two, only
        transaction markers (a commit marker takes an offset and is no record: a
        consumer done with a topic written in transactions has committed the marker's
        offset, where ``kafka-consumer-groups`` shows a lag of 1). Markers among waiting
        records are counted with them. One broker round trip per partition."""
        ...

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Record, per partition, the offset the group resumes at (the one after the last
        record processed). Raises :class:`CommitFailed` when the group rebalanced and a
        partition is not this member's any more."""
        ...


def to_record(raw: ConsumerRecord[bytes, bytes]) -> Record:
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key.decode() if raw.key is not None else None,
        value=raw.value or b"",
        headers=tuple(raw.headers or ()),
        timestamp_ms=raw.timestamp,
    )


class KafkaConsumer:
    """The real :class:`Consumer`: one aiokafka consumer, manual commits, ``read_committed``.

    ``group_id=None`` reads every partition of ``topics`` from the beginning, without a
    group (nothing to commit): a follower of a small topic. Such a consumer is assigned
    its partitions when it starts, so :meth:`start` tries again for ``topic_wait_s`` while
    a topic that was just created has not reached the metadata of the broker it asks (on
    a cluster that takes a moment; a group member is simply assigned it at a rebalance).
    Each try itself waits up to aiokafka's ``request_timeout_ms`` (40 s by default; an
    override) for the topic's metadata, so a topic that never comes fails once
    ``topic_wait_s`` has passed, up to one request time-out later.
    """

    def __init__(
        self,
        settings: CommonSettings,
        topics: Iterable[Topic | str],
        *,
        group_id: str | None,
        topic_wait_s: float = 30.0,
        **overrides: Any,
    ) -> None:
        self._topic_wait_s = topic_wait_s
        self.topics = [
            topic_name(t, settings.topic_prefix) if isinstance(t, Topic) else t for t in topics
        ]
        self._options: dict[str, Any] = {
            **client_options(settings),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            "metadata_max_age_ms": 5000,
            **overrides,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self.group_id = group_id
        self._returned: dict[TopicPartition, int] = {}
        """Per partition, the offset after the last record :meth:`poll` returned."""

    @property
    def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._topic_wait_s
        while True:
            # aiokafka needs the running loop, so the client is built here.
            self._consumer = AIOKafkaConsumer(*self.topics, **self._options)
            try:
                await self._consumer.start()
                return
            except UnknownTopicOrPartitionError:
                await self.stop()
                if self.group_id is not None or loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self._returned.clear()

    async def __aenter__(self) -> KafkaConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        batches = await self._client.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=max_records
        )
        for tp, records in batches.items():
            if records:
                self._returned[tp] = records[-1].offset + 1
        return [to_record(raw) for records in batches.values() for raw in records]

    def assignment(self) -> frozenset[Partition]:
        return frozenset((tp.topic, tp.partition) for tp in self._client.assignment())

    async def lag(self) -> dict[Partition, int]:
        client = self._client
        assigned = sorted(client.assignment())
        if not assigned:
            return {}
        ends = await client.end_offsets(assigned)
        lags: dict[Partition, int] = {}
        for tp in assigned:
            committed = await client.committed(tp)
            if committed is None:
                committed = (await client.beginning_offsets([tp]))[tp]
            lag = max(0, ends[tp] - committed)
            if lag and await self._markers_only(tp, committed, ends[tp]):
                lag = 0
            lags[tp.topic, tp.partition] = lag
        return lags

    async def _markers_only(self, tp: TopicPartition, committed: int, end: int) -> bool:
        """Whether only transaction markers lie between ``committed`` and ``end``: every
        record returned is committed, and the fetch position (past the markers and
        aborted records, which aiokafka skips) has reached the end."""
        if committed < self._returned.get(tp, 0):
            return False  # records returned and not committed
        try:
            position = await asyncio.wait_for(self._client.position(tp), timeout=1.0)
        except (IllegalStateError, TimeoutError):  # revoked meanwhile, or no position yet
            return False
        return bool(position >= end)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        try:
            await self._client.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitFailed(str(exc)) from exc


async def follow(
    consumer: Consumer, *, timeout_s: float = 1.0, max_records: int = 500
) -> AsyncIterator[Record]:
    """Every record ``consumer`` polls, as it comes, forever: for a reader that keeps a
    view of a topic and commits nothing (no group). Processing with commits, dead
    letters and retries is :func:`common.kafka.runner.run_consumer`'s."""
    while True:
        for record in await consumer.poll(timeout_s=timeout_s, max_records=max_records):
            yield record


def make_consumer(
    settings: CommonSettings,
    topics: Iterable[Topic | str],
    *,
    group_id: str | None,
    **overrides: Any,
) -> KafkaConsumer:
    """A :class:`KafkaConsumer` of ``topics`` in ``group_id`` (start it before use);
    ``overrides`` are aiokafka consumer options."""
    return KafkaConsumer(settings, topics, group_id=group_id, **overrides)
