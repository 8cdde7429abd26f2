"""common.kafka against the real broker: keys, topic creation, reachability, transactions.

The consumer runner and the memory broker are held to one contract in
test_kafka_contract.py."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import UnknownTopicOrPartitionError

from common.events import EXAMPLES, parse_event
from common.kafka import (
    KafkaPublisher,
    Record,
    TopicMismatch,
    TransactionalPublisher,
    TransactionReport,
    broker_reachable,
    ensure_internal_topics,
    ensure_topics,
    make_consumer,
    read_topic,
)
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name


@pytest.fixture(scope="module")
async def settings(common_settings: CommonSettings) -> CommonSettings:
    prefix = f"it-kafka-{uuid.uuid4().hex[:6]}."
    s = common_settings.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(s)
    return s


async def consume_all(settings: CommonSettings, topic: str, n: int) -> list[Record]:
    """At least ``n`` committed records of ``topic``: a transaction's records become
    visible to ``read_committed`` readers a moment after its commit returns (its markers
    are written after), so this reads again until they are, for 30 s at most."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        records, _ = await read_topic(settings, topic, timeout_s=30)
        if len(records) >= n or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(records) >= n
    return records


async def test_publish_keys_by_customer_and_consumer_reads_back(settings: CommonSettings) -> None:
    events = [
        parse_event({**EXAMPLES["support"], "event_id": f"e{i}", "customer_id": f"c-{i % 5}"})
        for i in range(50)
    ]
    async with KafkaPublisher(settings, client_id="it") as publisher:
        for event in events:
            await publisher.publish(
                Topic.EVENTS_SUPPORT, event.customer_id, event, [("kind", b"support")]
            )
    records = await consume_all(
        settings, topic_name(Topic.EVENTS_SUPPORT, settings.topic_prefix), 50
    )
    assert sorted(r.value for r in records) == sorted(e.model_dump_json().encode() for e in events)
    by_customer: dict[str, set[int]] = {}
    for record in records:
        assert record.key == parse_event(record.value).customer_id
        assert ("kind", b"support") in record.headers
        by_customer.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in by_customer.values())  # one customer, one partition


async def test_topics_are_created_once_with_compaction_for_scores(settings: CommonSettings) -> None:
    await ensure_topics(settings)  # second call is a no-op
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        for topic in Topic:
            name = topic_name(topic, settings.topic_prefix)
            assert name in names and dlq_name(name) in names
        scores = topic_name(Topic.SCORES, settings.topic_prefix)
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, scores)]
        )
        config = {c[0]: c[1] for c in described.resources[0][4]}
        assert config["cleanup.policy"] == "compact"
        meta = await admin.describe_topics([scores])
        assert len(meta[0]["partitions"]) == settings.topic_partitions
    finally:
        await admin.close()


async def test_broker_reachability(settings: CommonSettings) -> None:
    assert await broker_reachable(settings)
    assert not await broker_reachable(
        settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}), timeout_s=1
    )


async def test_transactional_group_larger_than_a_batch_keeps_order_per_customer(
    settings: CommonSettings,
) -> None:
    """A group whose records for one partition overflow a record batch (16 KB here) is sent
    as several batches of that partition, in order, all in the committed transaction."""
    reports: list[TransactionReport] = []
    publisher = TransactionalPublisher(
        settings,
        client_id="it-txn",
        transactional_id=f"it-txn-{uuid.uuid4().hex[:6]}",
        transaction_timeout_ms=10_000,
        commit_reserve_s=1.0,
        max_group_records=5_000,
        committers=2,
        observe=reports.append,
        max_batch_size=16_384,
    )
    topic = topic_name(Topic.EVENTS_USAGE, settings.topic_prefix)
    # 3 customers x 200 records of ~400 B: ~80 KB a customer, so 5+ batches a partition
    records = [
        (topic, f"big-{i % 3}", {"seq": i, "pad": "x" * 400}, [("kind", b"usage")])
        for i in range(600)
    ]
    async with publisher:
        outcomes = await publisher.publish_each(records, timeout_s=10)
    assert outcomes == [None] * 600
    [report] = reports  # one call, one transaction, reported once
    assert (report.outcome, report.events) == ("committed", 600)
    assert report.seconds > 0 and report.waited_s >= 0
    got = await consume_all(settings, topic, 600)
    mine = [r for r in got if r.key.startswith("big-")]
    assert len(mine) == 600
    for customer in ("big-0", "big-1", "big-2"):
        seqs = [orjson.loads(r.value)["seq"] for r in mine if r.key == customer]
        assert seqs == list(range(int(customer[-1]), 600, 3))  # every one, in order


async def topic_config(settings: CommonSettings, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        return {c[0]: c[1] for c in described.resources[0][4]}
    finally:
        await admin.close()


async def test_topics_get_min_insync_and_retention_from_the_settings(
    common_settings: CommonSettings,
) -> None:
    settings = common_settings.model_copy(
        update={
            "topic_prefix": f"it-cfg-{uuid.uuid4().hex[:6]}.",
            "topic_retention_events_ms": 3_600_000,
            "topic_retention_notifications_ms": -1,
        }
    )
    await ensure_topics(settings, [Topic.EVENTS_LOGIN, Topic.NOTIFICATIONS, Topic.SCORES])
    events = await topic_config(settings, topic_name(Topic.EVENTS_LOGIN, settings.topic_prefix))
    assert events["retention.ms"] == "3600000" and events["cleanup.policy"] == "delete"
    assert events["min.insync.replicas"] == "1"
    dlq = await topic_config(
        settings, dlq_name(topic_name(Topic.EVENTS_LOGIN, settings.topic_prefix))
    )
    assert dlq["retention.ms"] == "3600000"
    notifications = topic_name(Topic.NOTIFICATIONS, settings.topic_prefix)
    assert (await topic_config(settings, notifications))["retention.ms"] == "-1"
    scores = topic_name(Topic.SCORES, settings.topic_prefix)
    assert (await topic_config(settings, scores))["cleanup.policy"] == "compact"


async def test_an_existing_topic_tenure_cannot_use_is_refused_naming_it(
    common_settings: CommonSettings,
) -> None:
    prefix = f"it-bad-{uuid.uuid4().hex[:6]}."
    settings = common_settings.model_copy(update={"topic_prefix": prefix})
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # made by someone else: scores not compacted, signals with 2 partitions
        await admin.create_topics(
            [NewTopic(f"{prefix}scores", 3, 1), NewTopic(f"{prefix}signals", 2, 1)]
        )
        async with asyncio.timeout(30):  # until the cluster's metadata shows them
            while not {f"{prefix}scores", f"{prefix}signals"} <= set(await admin.list_topics()):
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    with pytest.raises(TopicMismatch) as caught:
        await ensure_topics(settings, [Topic.SIGNALS, Topic.SCORES, Topic.DELIVERIES])
    message = str(caught.value)
    assert f"topic {prefix}scores has cleanup.policy=delete, needs compact" in message
    assert f"topic {prefix}signals has 2 partitions, Tenure needs TENURE_TOPIC_PARTITIONS=3" in (
        message
    )
    assert "deliveries" not in message  # created, and right


async def test_a_services_own_topics_are_created_once_and_checked(
    common_settings: CommonSettings,
) -> None:
    """Scoring creates the internal topics its agents read before faust subscribes (a
    topic that appeared afterwards made its group rebalance at every start)."""
    prefix = f"it-own-{uuid.uuid4().hex[:6]}."
    settings = common_settings.model_copy(update={"topic_prefix": prefix})
    names = [f"{prefix}scoring.ticks", f"{prefix}scoring.cohorts"]
    await ensure_internal_topics(settings, names)
    await ensure_internal_topics(settings, names)  # the second call finds them right
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # a new topic's partitions reach the metadata a moment after it is created
        async with asyncio.timeout(30):
            described = await admin.describe_topics(names)
            while not all(t["partitions"] for t in described):
                await asyncio.sleep(0.2)
                described = await admin.describe_topics(names)
        assert {len(t["partitions"]) for t in described} == {settings.topic_partitions}
        await admin.create_topics([NewTopic(f"{prefix}other", 2, 1)])
        async with asyncio.timeout(30):
            while f"{prefix}other" not in set(await admin.list_topics()):
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    assert (await topic_config(settings, names[0]))["cleanup.policy"] == "delete"
    with pytest.raises(TopicMismatch, match=f"topic {prefix}other has 2 partitions"):
        await ensure_internal_topics(settings, [f"{prefix}other"])


async def test_a_topic_kafka_cannot_create_stops_ensure_topics(
    common_settings: CommonSettings,
) -> None:
    """Three replicas on the one-broker cluster: Kafka's refusal was ignored before."""
    settings = common_settings.model_copy(
        update={
            "topic_prefix": f"it-rf-{uuid.uuid4().hex[:6]}.",
            "topic_replication_factor": 3,
            "topic_min_insync_replicas": 2,
        }
    )
    with pytest.raises(TopicMismatch, match="InvalidReplicationFactor"):
        await ensure_topics(settings, [Topic.SIGNALS])


async def test_a_consumer_without_a_group_waits_for_a_topic_created_after_it_starts(
    settings: CommonSettings,
) -> None:
    """On a cluster, a topic just created reaches each broker's metadata a moment later; a
    follower (no group, assigned every partition at start) waits for it instead of
    crashing its service (the scoring cohort-stats follower did, once, in CI)."""
    name = f"{settings.topic_prefix}late-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings, [name], group_id=None, topic_wait_s=20)

    async def create_later() -> None:
        await asyncio.sleep(2)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()

    creating = asyncio.create_task(create_later())
    await consumer.start()
    try:
        await creating
        assert consumer.assignment() == {(name, 0)}
    finally:
        await consumer.stop()

    # aiokafka itself waits up to request_timeout_ms (40 s by default) for a topic's
    # metadata at each start; 2 s keeps the refusal of a topic that never comes quick.
    never = make_consumer(
        settings, [f"{name}-never"], group_id=None, topic_wait_s=1, request_timeout_ms=2000
    )
    with pytest.raises(UnknownTopicOrPartitionError):
        await never.start()
