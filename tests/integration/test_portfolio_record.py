"""The MRR record on the real broker and PostgreSQL: the scripted month's payment events
(tests/integration/portfolio_month.py) published to ``events.payment``, consumed by the
orchestrator's analytics consumer (``run_consumer``), kept in ``mrr_movements`` and
``subscription_states``; replayed and rebuilt with ``tenure analytics rebuild`` to the
same rows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import (
    DeadLetters,
    KafkaPublisher,
    Record,
    Sequential,
    ensure_topics,
    make_consumer,
    read_topic,
    run_consumer,
)
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name
from devstack.stack import Stack
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.analytics import analytics_handler
from orchestrator.entrypoints.deps import Deps
from tenure_cli.command import main
from tests.integration import portfolio_month as M

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_portfolio_record")


@pytest.fixture(scope="module")
async def env(database_url: str, common_settings: CommonSettings):
    settings = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-pr-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings, [Topic.EVENTS_PAYMENT])
    engine = create_engine(database_url)
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=FakeClock(T0),
        topic_prefix=settings.topic_prefix,
    )
    published_from = datetime.now(UTC) - timedelta(seconds=5)
    topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
    async with KafkaPublisher(settings, client_id="it-portfolio") as publisher:
        await publisher.publish(topic, f"{M.PREFIX}c1", b'{"kind": "payment", "type": "x"}')
        for event in M.PAYMENTS:
            await publisher.publish(topic, event["customer_id"], event)
        consumer = make_consumer(settings, [Topic.EVENTS_PAYMENT], group_id="it-analytics")
        await consumer.start()
        stop = asyncio.Event()
        loop = asyncio.create_task(
            run_consumer(
                consumer,
                analytics_handler(deps),
                DeadLetters(publisher, consumer_name="it-analytics"),
                stop=stop,
                name="it analytics",
                strategy=Sequential(),
            )
        )
        try:
            for _ in range(200):
                if len(await movements(deps)) == len(M.MOVEMENTS):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await loop
            await consumer.stop()
    yield settings, deps, published_from
    await engine.dispose()


async def rows(deps: Deps, query: str) -> list[Any]:
    async with deps.engine.connect() as conn:
        return list(await conn.execute(sa.text(query)))


async def movements(deps: Deps) -> set[tuple[Any, ...]]:
    found = await rows(
        deps,
        "SELECT event_id, kind, amount, currency, plan_before, plan_after FROM mrr_movements",
    )
    return {(r[0].removeprefix(M.PREFIX), *r[1:]) for r in found}


async def everything(deps: Deps) -> tuple[list[Any], list[Any]]:
    moved = await rows(
        deps,
        "SELECT event_id, customer_id, kind, amount, currency, plan_before, plan_after, "
        "mrr_before, mrr_after, event_type, occurred_at FROM mrr_movements ORDER BY event_id",
    )
    states = await rows(
        deps,
        "SELECT event_id, customer_id, state, plan, mrr, currency, mrr_when_cancelled, "
        "occurred_at FROM subscription_states ORDER BY event_id",
    )
    return moved, states


async def test_every_movement_is_recorded_with_amount_currency_plans_and_time(env) -> None:
    _, deps, _ = env
    assert await movements(deps) == M.MOVEMENTS
    [upgrade] = await rows(
        deps,
        "SELECT customer_id, mrr_before, mrr_after, event_type, occurred_at FROM mrr_movements "
        f"WHERE event_id = '{M.PREFIX}pay-12'",
    )
    assert tuple(upgrade) == (
        f"{M.PREFIX}c1",
        100,
        150,
        "subscription_upgraded",
        M.at(11, 10),
    )


async def test_the_subscription_of_each_customer_over_time(env) -> None:
    _, deps, _ = env
    timeline = await rows(
        deps,
        "SELECT state, mrr, occurred_at FROM subscription_states "
        f"WHERE customer_id = '{M.PREFIX}c4' ORDER BY occurred_at",
    )
    assert [tuple(r) for r in timeline] == [
        ("active", 300, M.at(10, 15)),
        ("cancelled", 0, M.at(11, 5)),
        ("reactivated", 300, M.at(11, 20)),
    ]
    # the invoice is no change of subscription: 17 of the 18 events are recorded
    assert len(await rows(deps, "SELECT 1 FROM subscription_states")) == 17


async def test_an_invalid_payment_record_goes_to_the_dead_letter_topic(env) -> None:
    settings, _, _ = env
    dead, _ = await read_topic(
        settings, dlq_name(topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix))
    )
    [poison] = dead
    headers = dict(poison.headers)
    assert headers["dlq.consumer"] == b"it-analytics"
    assert headers["dlq.error"].decode().startswith("ValidationError")


async def test_a_replay_changes_nothing(env) -> None:
    settings, deps, _ = env
    before = await everything(deps)
    records, _ = await read_topic(settings, topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix))
    handle = analytics_handler(deps)
    for record in reversed(records[1:]):  # even out of order: each is classified as of its time
        await handle(record)
    assert await everything(deps) == before


async def test_a_late_event_re_derives_the_rows_after_it(env) -> None:
    settings, deps, _ = env
    late = f"{M.PREFIX}late"
    events = [
        M.pay(90, "late", "subscription_upgraded", M.at(11, 10), mrr_after=90, currency="EUR"),
        M.pay(91, "late", "subscription_cancelled", M.at(11, 20), currency="EUR"),
        M.pay(92, "late", "subscription_started", M.at(11, 1), mrr_after=60, currency="EUR"),
    ]
    handle = analytics_handler(deps)
    topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
    for n, value in enumerate(events):  # the start arrives last
        await handle(Record(topic, 0, n, late, orjson.dumps(value), (), 0))
    found = await rows(
        deps,
        "SELECT event_id, kind, amount FROM mrr_movements "
        f"WHERE customer_id = '{late}' ORDER BY occurred_at",
    )
    assert [tuple(r) for r in found] == [
        (f"{M.PREFIX}pay-92", "new", 60),
        (f"{M.PREFIX}pay-90", "expansion", 30),
        (f"{M.PREFIX}pay-91", "churn", 90),
    ]
    async with deps.engine.begin() as conn:
        for table in ("mrr_movements", "subscription_states", "subscription_events"):
            await conn.execute(sa.text(f"DELETE FROM {table} WHERE customer_id = '{late}'"))


async def test_tenure_analytics_rebuild_gives_the_same_rows(env, monkeypatch) -> None:
    settings, deps, published_from = env
    before = await everything(deps)
    async with deps.engine.begin() as conn:
        for table in ("mrr_movements", "subscription_states", "subscription_events"):
            await conn.execute(sa.text(f"DELETE FROM {table}"))
    for name, value in {
        "TENURE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TENURE_TOPIC_PREFIX": settings.topic_prefix,
        "TENURE_DATABASE_URL": settings.database_url,
    }.items():
        monkeypatch.setenv(name, value)
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert await asyncio.to_thread(main, ["analytics", "rebuild", "--since", later]) == 0
    assert await everything(deps) == ([], [])  # nothing reached Kafka since then
    since = published_from.isoformat()
    assert await asyncio.to_thread(main, ["analytics", "rebuild", "--since", since]) == 0
    assert await everything(deps) == before
    # over rows already there: the same rows again
    assert await asyncio.to_thread(main, ["analytics", "rebuild", "--since", since]) == 0
    assert await everything(deps) == before
