"""Admin calls: topics, reachability, and reading what is committed on a topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from common.kafka.consumer import to_record
from common.kafka.records import Record
from common.kafka.security import check_connection, client_options
from common.settings import CommonSettings
from common.topics import DLQ_SUFFIX, Topic, dlq_name, topic_name

log = logging.getLogger(__name__)


class TopicMismatch(Exception):
    """An existing topic is not what Tenure needs (partition count, cleanup policy); the
    message names each topic, what it has and what is needed."""


def topic_configs(settings: CommonSettings, topic: Topic, *, dlq: bool = False) -> dict[str, str]:
    """The configuration ``ensure_topics`` creates ``topic`` (or its DLQ) with: cleanup
    policy (``scores`` compacted, its DLQ not), retention of its class, and
    ``min.insync.replicas``."""
    configs = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
    if topic.compacted and not dlq:
        configs["cleanup.policy"] = "compact"
        return configs
    retention: int = getattr(settings, f"topic_retention_{topic.retention_class}_ms")
    configs |= {"cleanup.policy": "delete", "retention.ms": str(retention)}
    return configs


async def ensure_topics(
    settings: CommonSettings,
    topics: Iterable[Topic] = tuple(Topic),
    *,
    with_dlq: bool = True,
) -> None:
    """Create Tenure's topics (and their DLQs) where missing, and check the existing ones.

    New topics get ``settings.topic_partitions`` partitions, the replication factor and
    ``min.insync.replicas`` of the settings, and :func:`topic_configs`. An existing topic
    is left as it is, but its partition count and cleanup policy must be Tenure's (scoring's
    tables are co-partitioned with their source topics, and ``scores`` keeps the latest
    record per key): else :class:`TopicMismatch` names every difference. Idempotent.
    """
    specs: dict[str, dict[str, str]] = {}
    for topic in topics:
        name = topic_name(topic, settings.topic_prefix)
        specs[name] = topic_configs(settings, topic)
        if with_dlq:
            specs[dlq_name(name)] = topic_configs(settings, topic, dlq=True)
    checked = {name for name in specs if not name.endswith(DLQ_SUFFIX)}
    await _create_and_check(settings, specs, checked, what="Tenure's topics")


async def ensure_internal_topics(settings: CommonSettings, names: Iterable[str]) -> None:
    """Create a service's own topics of ``names`` where missing, as ``ensure_topics`` does
    (``settings.topic_partitions`` partitions, its replication and ``min.insync.replicas``,
    deleting), and check the existing ones' partition count and policy. For topics a
    stream framework would create itself once running: a consumer that subscribes before
    they exist rejoins its group when they appear (a rebalance at every start)."""
    configs = {
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
        "cleanup.policy": "delete",
    }
    specs = {name: dict(configs) for name in names}
    await _create_and_check(settings, specs, set(specs), what="the topics")


async def _create_and_check(
    settings: CommonSettings, specs: dict[str, dict[str, str]], checked: set[str], *, what: str
) -> None:
    """Create the topics of ``specs`` (name -> configs) that are missing, with the settings'
    partitions and replication; those of ``checked`` that exist already (or were made
    meanwhile) must have that partition count and their cleanup policy."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="tenure-admin")
    try:
        await admin.start()
    except KafkaError:
        await check_connection(settings)  # a refused login or certificate: say which
        raise
    try:
        existing = set(await admin.list_topics())
        present = {n: specs[n]["cleanup.policy"] for n in checked if n in existing}
        wanted = [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=configs,
            )
            for name, configs in specs.items()
            if name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            failed = []
            for name, code, *rest in response.topic_errors:
                error = Errors.for_code(code)
                if error is TopicAlreadyExistsError:  # made meanwhile: check it as existing
                    if name in checked:
                        present[name] = specs[name]["cleanup.policy"]
                elif code:
                    failed.append(f"{name}: {error.__name__} {rest[0] if rest else ''}".strip())
            if failed:
                raise TopicMismatch(f"Kafka did not create {what}: {'; '.join(failed)}")
        if present:
            await _check_existing(admin, settings, present)
    finally:
        await admin.close()


async def _check_existing(
    admin: AIOKafkaAdminClient, settings: CommonSettings, policies: dict[str, str]
) -> None:
    """Raise :class:`TopicMismatch` if a topic of ``policies`` (name -> the cleanup policy
    it needs) has another partition count than the settings' or another policy."""
    problems: list[str] = []
    for described in await admin.describe_topics(list(policies)):
        name, count = described["topic"], len(described["partitions"])
        if not described["error_code"] and count != settings.topic_partitions:
            problems.append(
                f"topic {name} has {count} partitions, Tenure needs "
                f"TENURE_TOPIC_PARTITIONS={settings.topic_partitions} (scoring's tables are "
                "co-partitioned with their source topics)"
            )
        replicas = {len(p["replicas"]) for p in described["partitions"]}
        if replicas and min(replicas) < settings.topic_replication_factor:
            log.warning(
                "topic %s has %d replicas, fewer than TENURE_TOPIC_REPLICATION_FACTOR=%d",
                name,
                min(replicas),
                settings.topic_replication_factor,
            )
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in policies]
    for response in await admin.describe_configs(resources):
        for _code, _message, _type, name, entries in response.resources:
            actual = {entry[0]: entry[1] for entry in entries}.get("cleanup.policy")
            needed = policies.get(name)
            if needed is not None and actual is not None and set(actual.split(",")) != {needed}:
                why = " (scores keeps each customer's latest)" if needed == "compact" else ""
                problems.append(f"topic {name} has cleanup.policy={actual}, needs {needed}{why}")
    if problems:
        raise TopicMismatch(
            "; ".join(sorted(problems))
            + ": recreate these topics or change them (kafka-topics, kafka-configs)"
        )


async def broker_reachable(settings: CommonSettings, timeout_s: float = 3.0) -> bool:
    """Whether the cluster answers a metadata request within ``timeout_s``."""
    admin = AIOKafkaAdminClient(
        **client_options(settings), request_timeout_ms=int(timeout_s * 1000)
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
async def reader(
    settings: CommonSettings, topic: str, *, group_id: str | None = None
) -> AsyncIterator[tuple[AIOKafkaConsumer, dict[TopicPartition, int]]]:
    """A ``read_committed`` consumer assigned every partition of ``topic`` (none if the
    topic does not exist), and the end offset of each when it started. With
    ``group_id`` it reads and commits that group's offsets, without joining it."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    admin = AIOKafkaAdminClient(**client_options(settings))
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
    async with reader(settings, topic) as (consumer, ends):
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
    async with reader(settings, topic) as (consumer, ends):
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
        async with reader(settings, topic) as (_, ends):
            return [], {tp.partition: end for tp, end in ends.items()}
    records, ends_by_partition = await read_topic(settings, topic, start, timeout_s=timeout_s)
    return [v for r in records for k, v in r.headers if k == header], ends_by_partition
