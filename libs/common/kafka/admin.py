"""Admin calls: topics, reachability, and reading what is committed on a topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from common.kafka.consumer import to_record
from common.kafka.records import Record
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name


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


@contextlib.asynccontextmanager
async def _reader(
    settings: CommonSettings, topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, dict[TopicPartition, int]]]:
    """A ``read_committed`` consumer without a group, assigned every partition of
    ``topic``, and the end offset of each when it started."""
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
        yield consumer, await consumer.end_offsets(assigned)
    finally:
        await consumer.stop()


async def read_topic(
    settings: CommonSettings,
    topic: str,
    start: dict[int, int] | None = None,
    *,
    timeout_s: float = 60.0,
) -> tuple[list[Record], dict[int, int]]:
    """The committed records of ``topic`` from ``start`` to the end it had when called.

    ``start`` maps partition to offset (a partition missing from it, or every one if
    ``None``, is read from its beginning). Returns the records, partition by partition,
    and the end offsets read up to. Reads with ``read_committed``: records of open or
    aborted transactions are not seen (an open one holds the read back until it ends).
    No consumer group, nothing committed. Raises ``TimeoutError`` if the end is not
    reached within ``timeout_s``.
    """
    async with _reader(settings, topic) as (consumer, ends):
        for tp in ends:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        records: list[Record] = []
        left = {tp for tp in ends if await consumer.position(tp) < ends[tp]}
        async with asyncio.timeout(timeout_s):
            while left:
                batches = await consumer.getmany(*left, timeout_ms=1000)
                for tp, raws in batches.items():
                    records += [to_record(raw) for raw in raws if raw.offset < ends[tp]]
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
        return records, {tp.partition: end for tp, end in ends.items()}


async def read_since(
    settings: CommonSettings,
    topic: str,
    since: datetime,
    *,
    timeout_s: float = 60.0,
) -> AsyncIterator[list[Record]]:
    """The committed records of ``topic`` whose Kafka timestamp (when the producer sent
    them) is ``since`` or later, up to the end the topic had when called, in batches as
    polled (each partition's records in order).

    Each partition starts at the offset the broker gives for ``since`` (``offsets_for_times``;
    at its end when no record is that recent). ``read_committed``, no consumer group,
    nothing committed. Raises ``TimeoutError`` when the reading makes no progress for
    ``timeout_s`` before the end is reached.
    """
    async with _reader(settings, topic) as (consumer, ends):
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in ends})
        for tp, end in ends.items():
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else end)
        left = {tp for tp in ends if await consumer.position(tp) < ends[tp]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: dict[TopicPartition, int] = {}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            records = [
                to_record(raw)
                for tp, raws in batches.items()
                for raw in raws
                if raw.offset < ends[tp]
            ]
            if records:
                yield records
            positions = {tp: await consumer.position(tp) for tp in left}
            if positions != last:
                deadline, last = loop.time() + timeout_s, positions
            elif loop.time() > deadline:
                raise TimeoutError(f"{topic}: no progress for {timeout_s} s before its end")
            left = {tp for tp in left if positions[tp] < ends[tp]}


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
    values and the end offsets read up to; see :func:`read_topic`.
    """
    if start is None:
        async with _reader(settings, topic) as (_, ends):
            return [], {tp.partition: end for tp, end in ends.items()}
    records, ends_by_partition = await read_topic(settings, topic, start, timeout_s=timeout_s)
    return [v for r in records for k, v in r.headers if k == header], ends_by_partition
