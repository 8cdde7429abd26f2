"""The stall measurements on the real broker and database of the test stack: a consumer
group's lag, the orchestrator's due timers, outbox and live journeys, the notifier's
retry backlog."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import (
    GroupLagProbe,
    KafkaPublisher,
    ensure_topics,
    make_consumer,
)
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import Stack
from notifier.adapters.backlog import read_retry_backlog
from notifier.entrypoints import backlog as notifier_backlog
from orchestrator.adapters.backlog import read_backlog
from orchestrator.entrypoints import backlog as orchestrator_backlog

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class RealTimeClock(FakeClock):
    """A fake clock whose durations last as long in real time (scale 1)."""

    def real_seconds(self, simulated: timedelta) -> float:
        return simulated.total_seconds()


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_a_group_that_polled_and_did_not_commit_lags_by_what_it_has_not_committed(
    common_settings: CommonSettings,
) -> None:
    settings = common_settings.model_copy(
        update={"topic_prefix": f"it-lag-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    async with KafkaPublisher(settings, client_id="it-lag") as publisher:
        for i in range(7):
            await publisher.publish(Topic.NOTIFICATIONS, f"c{i}", {"i": i})
    consumer = make_consumer(settings, [Topic.NOTIFICATIONS], group_id="it-lag")
    await consumer.start()
    try:
        polled = []
        while len(polled) < 7:
            polled += await consumer.poll(timeout_s=1.0, max_records=100)
        lags = await consumer.lag()
        name = topic_name(Topic.NOTIFICATIONS, settings.topic_prefix)
        assert {t for t, _ in lags} == {name}
        assert sum(lags.values()) == 7  # polled is not processed: only commits count
        await consumer.commit({r.where: r.offset + 1 for r in polled[:3]})
        assert sum((await consumer.lag()).values()) <= 4
        await consumer.commit({r.where: r.offset + 1 for r in polled})
        assert sum((await consumer.lag()).values()) == 0
    finally:
        await consumer.stop()


async def test_the_probe_sees_the_lag_of_a_group_whose_members_are_all_gone(
    common_settings: CommonSettings,
) -> None:
    settings = common_settings.model_copy(
        update={"topic_prefix": f"it-probe-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    async with KafkaPublisher(settings, client_id="it-probe") as publisher:
        for i in range(9):
            await publisher.publish(Topic.NOTIFICATIONS, f"c{i}", {"i": i})
    group = f"it-probe-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings, [Topic.NOTIFICATIONS], group_id=group)
    await consumer.start()
    try:
        polled = []
        while len(polled) < 9:
            polled += await consumer.poll(timeout_s=1.0, max_records=100)
        done = {}
        for record in polled:  # the first of each partition processed; the member goes away
            done.setdefault(record.where, record.offset + 1)
        await consumer.commit(done)
    finally:
        await consumer.stop()
    probe = GroupLagProbe(settings)
    await probe.start()
    try:
        lags = await probe.lag([group, "it-probe-never-started"])
    finally:
        await probe.stop()
    assert lags["it-probe-never-started"] == {}
    # A new topic's offsets start at 0: a partition's end offset is its record count.
    records_on = collections.Counter(r.where for r in polled)
    assert lags[group] == {where: records_on[where] - offset for where, offset in done.items()}
    assert sum(lags[group].values()) == 9 - len(done) > 0  # 9 records on 3 partitions


async def test_the_oldest_record_a_stopped_group_left_waiting_has_an_age(
    common_settings: CommonSettings,
) -> None:
    settings = common_settings.model_copy(
        update={"topic_prefix": f"it-oldest-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    produced_at = time.time()
    async with KafkaPublisher(settings, client_id="it-oldest") as publisher:
        for i in range(30):
            await publisher.publish(Topic.NOTIFICATIONS, f"c{i}", {"i": i})
    group = f"it-oldest-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings, [Topic.NOTIFICATIONS], group_id=group)
    await consumer.start()
    try:
        polled = []
        while len(polled) < 30:
            polled += await consumer.poll(timeout_s=1.0, max_records=100)
        done = {}
        for record in polled:  # the first of each partition processed; the member stops
            done.setdefault(record.where, record.offset + 1)
        # One partition consumed to its end: nothing waits there.
        (drained, _) = max(collections.Counter(r.where for r in polled).items(), key=lambda x: x[1])
        done[drained] = max(r.offset for r in polled if r.where == drained) + 1
        await consumer.commit(done)
    finally:
        await consumer.stop()
    await asyncio.sleep(1.5)  # the records wait
    probe = GroupLagProbe(settings)
    await probe.start()
    try:
        backlogs = await probe.backlog([group])
    finally:
        await probe.stop()
    backlog = backlogs[group]
    waiting = {where for where, lag in backlog.lag.items() if lag > 0}
    assert waiting and drained not in waiting

    # The record at each committed offset of a lagging partition, and its timestamp.
    def first_waiting(where: tuple[str, int]) -> int:
        records = [r for r in polled if r.where == where and r.offset >= done[where]]
        return min(records, key=lambda r: r.offset).timestamp_ms

    assert backlog.oldest_ms == {where: first_waiting(where) for where in waiting}
    orchestrator_backlog.record_groups(backlogs, time.time())
    gauge = "tenure_orchestrator_group_oldest_unconsumed_seconds"
    for topic, partition in waiting:
        age = sample(gauge, group=group, topic=topic, partition=str(partition))
        assert age is not None and 1.5 <= age < time.time() - produced_at + 1
    topic, partition = drained
    assert sample(gauge, group=group, topic=topic, partition=str(partition)) == 0


async def test_a_group_done_with_a_transactional_topic_lags_by_nothing(
    common_settings: CommonSettings,
) -> None:
    """A transaction's commit marker takes an offset but is no record, and consumers
    commit the offset after the last record they processed, the marker's: on a topic
    written in transactions (ingest's, the outbox relay's) a group that is done used to
    lag by 1 on every partition, while its oldest unconsumed record read 0. Only markers
    waiting is no lag; a marker among waiting records still counts (an offset)."""
    settings = common_settings.model_copy(
        update={"topic_prefix": f"it-markers-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    topic = topic_name(Topic.EVENTS_LOGIN, settings.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        transactional_id=f"it-markers-{uuid.uuid4().hex[:6]}",
    )
    await producer.start()
    try:
        async with producer.transaction():  # 3 records on partitions 0 and 1, a marker each
            for partition in (0, 1):
                for _ in range(3):
                    await producer.send(topic, value=b"first", partition=partition)
        async with producer.transaction():  # 2 more on partition 1, another marker
            for _ in range(2):
                await producer.send(topic, value=b"second", partition=1)
    finally:
        await producer.stop()
    group = f"it-markers-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings, [Topic.EVENTS_LOGIN], group_id=group)
    await consumer.start()
    try:
        polled = []
        deadline = time.monotonic() + 30
        while len(polled) < 8:
            assert time.monotonic() < deadline, f"polled {len(polled)} of 8"
            polled += await consumer.poll(timeout_s=1.0, max_records=100)
        # As the runner does: the offset after the last record processed. Partition 0
        # done (its marker left), partition 1 done with the first transaction only.
        first = [r for r in polled if r.value == b"first"]
        done = {(topic, p): max(r.offset for r in first if r.partition == p) + 1 for p in (0, 1)}
        await consumer.commit(done)
    finally:
        await consumer.stop()
    probe = GroupLagProbe(settings)
    await probe.start()
    try:
        backlog = (await probe.backlog([group]))[group]
        lags = (await probe.lag([group]))[group]
    finally:
        await probe.stop()
    # Partition 1: the first marker, 2 records, the second marker.
    assert backlog.lag == lags == {(topic, 0): 0, (topic, 1): 4}
    second = min((r for r in polled if r.value == b"second"), key=lambda r: r.offset)
    assert backlog.oldest_ms == {(topic, 0): None, (topic, 1): second.timestamp_ms}
    orchestrator_backlog.record_groups({group: backlog}, time.time())
    labels = {"group": group, "topic": topic, "partition": "0"}
    assert sample("tenure_orchestrator_group_lag", **labels) == 0
    assert sample("tenure_orchestrator_group_oldest_unconsumed_seconds", **labels) == 0


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_stall_gauges")


@pytest.fixture(scope="module")
async def engine(database_url: str):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_orchestrator_gauges_show_due_timers_the_outbox_and_live_journeys(engine) -> None:
    clock = RealTimeClock(T0)
    before = await read_backlog(engine, now=clock.now())
    assert before.timers_due == 0 and before.outbox_pending == 0
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO journeys (journey_id, customer_id, playbook, state, started_at)"
                " SELECT 'j' || i, 'c' || i, 'retention_offer',"
                " CASE WHEN i <= 2 THEN 'active' ELSE 'paused' END, :t0"
                " FROM generate_series(1, 3) i"
            ),
            {"t0": T0},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO timers (journey_id, step, due_at, status) VALUES"
                " ('j1', 's', :late, 'pending'), ('j2', 's', :soon, 'pending'),"
                " ('j3', 's', :fired, 'fired'), ('j3', 't', :ahead, 'pending')"
            ),
            {
                "late": T0 - timedelta(seconds=90),
                "soon": T0 - timedelta(seconds=5),
                "fired": T0 - timedelta(hours=1),
                "ahead": T0 + timedelta(minutes=5),
            },
        )
        await conn.execute(
            sa.text(
                "INSERT INTO outbox (topic, key, payload, created_at) VALUES"
                " ('t', 'k', '\\x00', now() - interval '40 seconds'), ('t', 'k', '\\x00', now())"
            )
        )
    orchestrator_backlog.record(await read_backlog(engine, now=clock.now()), clock)
    assert sample("tenure_orchestrator_timers_due") == 2
    assert sample("tenure_orchestrator_timers_oldest_due_seconds") == 90
    assert sample("tenure_orchestrator_outbox_pending") == 2
    assert 40 <= (sample("tenure_orchestrator_outbox_oldest_seconds") or 0) < 60
    live = "tenure_orchestrator_journeys_live"
    assert sample(live, playbook="retention_offer", state="active") == 2
    assert sample(live, playbook="retention_offer", state="paused") == 1


async def test_notifier_gauges_show_the_retries_waiting_and_the_oldest(engine) -> None:
    clock = RealTimeClock(T0)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO deliveries (notification_id, customer_id, channel, status,"
                " first_attempt_at, next_attempt_at) VALUES"
                " ('n1', 'c', 'email', 'retrying', :old, :next),"
                " ('n2', 'c', 'email', 'retrying', :new, :next),"
                " ('n3', 'c', 'email', 'sent', :older, NULL),"
                " ('n4', 'c', 'webhook', 'retrying', :new, :next)"
            ),
            {
                "old": T0 - timedelta(minutes=10),
                "new": T0 - timedelta(seconds=30),
                "older": T0 - timedelta(hours=2),
                "next": T0 + timedelta(minutes=1),
            },
        )
    notifier_backlog.record(await read_retry_backlog(engine), clock)
    assert sample("tenure_notifier_retries_waiting", channel="email") == 2
    assert sample("tenure_notifier_retries_waiting", channel="webhook") == 1
    assert sample("tenure_notifier_retries_waiting", channel="in_app") == 0
    assert sample("tenure_notifier_retries_oldest_seconds", channel="email") == 600
    assert sample("tenure_notifier_retries_oldest_seconds", channel="webhook") == 30
