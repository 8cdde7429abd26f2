"""The orchestrator's consumers, timer worker and outbox relay on real PostgreSQL and Kafka.

Time is a FakeClock: the retention_offer journey is lived through in milliseconds.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from common.clock import FakeClock
from common.db import create_engine
from common.events import EXAMPLES
from common.kafka import KafkaPublisher, Record, encode, ensure_topics, make_consumer
from common.messages import Delivery, Notification, ScoreSnapshot
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.consumers import router
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.relay import relay_once
from orchestrator.entrypoints.timers import fire_due

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BOOKS = load_playbooks(SHIPPED)


def new_customer(prefix: str = "c") -> str:
    """A fresh customer id in the treatment arm of every playbook (the holdout sends nothing)."""
    while True:
        customer = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if all(decisions.assign_arm(b, customer) == decisions.TREATMENT for b in BOOKS.values()):
            return customer


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_orchestrator")


@pytest.fixture(scope="module")
async def env(database_url: str, common_settings: CommonSettings):
    url = database_url
    settings = common_settings.model_copy(
        update={"database_url": url, "topic_prefix": f"it-orch-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    engine = create_engine(url)
    clock = FakeClock(T0)
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=clock,
        topic_prefix=settings.topic_prefix,
    )
    yield settings, deps, clock
    await engine.dispose()


def record(settings: CommonSettings, topic: Topic, key: str, value: object) -> Record:
    return Record(
        topic=topic_name(topic, settings.topic_prefix),
        partition=0,
        offset=0,
        key=key,
        value=encode(value),
        headers=(),
        timestamp_ms=0,
    )  # type: ignore[arg-type]


def snapshot(customer: str, probability: float, at: datetime) -> ScoreSnapshot:
    return ScoreSnapshot(
        customer_id=customer, as_of=at, risk_score=15, tier="medium", churn_probability=probability
    )


async def identify(
    settings: CommonSettings, deps: Deps, customer: str, consent: bool = True
) -> None:
    profile = {
        **EXAMPLES["profile"],
        "customer_id": customer,
        "event_id": str(uuid.uuid4()),
        "email": f"{customer}@example.com",
        "consent": {"email_marketing": consent, "in_app": True},
    }
    await router(deps)(record(settings, Topic.EVENTS_PROFILE, customer, profile))


async def rows(deps: Deps, query: str, **params: object) -> list[sa.Row]:
    async with deps.engine.connect() as conn:
        return list((await conn.execute(sa.text(query), params)).all())


async def test_journey_lives_through_day_0_1_3(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer()
    handle = router(deps)
    await identify(settings, deps, customer)
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.9, T0)))
    await handle(
        record(settings, Topic.SCORES, customer, snapshot(customer, 0.92, T0))
    )  # replay-ish
    [journey] = await rows(
        deps, "SELECT journey_id, state FROM journeys WHERE customer_id=:c", c=customer
    )
    assert journey.state == "active"
    timers = await rows(
        deps,
        "SELECT step, due_at FROM timers WHERE journey_id=:j ORDER BY due_at",
        j=journey.journey_id,
    )
    assert [(t.step, t.due_at - T0) for t in timers] == [
        ("offer", timedelta(0)),
        ("retention_call", timedelta(days=1)),
        ("escalation", timedelta(days=3)),
    ]

    fired = []
    for day in (0, 0.5, 1, 2, 2.99, 3, 4):
        clock.set(T0 + timedelta(days=day))
        while await fire_due(deps, limit=10):
            pass
        sent = await rows(deps, "SELECT payload FROM outbox WHERE key=:c ORDER BY id", c=customer)
        fired.append((day, [Notification.model_validate_json(r.payload).step for r in sent]))
    assert fired == [
        (0, ["offer"]),
        (0.5, ["offer"]),
        (1, ["offer", "retention_call"]),
        (2, ["offer", "retention_call"]),
        (2.99, ["offer", "retention_call"]),
        (3, ["offer", "retention_call", "escalation"]),
        (4, ["offer", "retention_call", "escalation"]),
    ]
    notes = [
        Notification.model_validate_json(r.payload)
        for r in await rows(deps, "SELECT payload FROM outbox WHERE key=:c ORDER BY id", c=customer)
    ]
    assert notes[0].notification_id == decisions.notification_id(journey.journey_id, "offer")
    assert notes[0].recipient == f"{customer}@example.com" and notes[0].channel == "email"
    assert [n.recipient for n in notes[1:]] == ["csm", "escalation"]
    history = await rows(
        deps,
        "SELECT event, to_state FROM journey_transitions WHERE journey_id=:j ORDER BY id",
        j=journey.journey_id,
    )
    assert [(h.event, h.to_state) for h in history] == [
        ("start", "active"),
        ("step_sent", "active"),
        ("step_sent", "active"),
        ("step_sent", "active"),
        ("finish", "completed"),
    ]


async def test_click_exits_and_cancels_the_remaining_steps(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer()
    handle = router(deps)
    await identify(settings, deps, customer)
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.75, T0)))
    while await fire_due(deps, limit=10):
        pass
    [journey] = await rows(deps, "SELECT journey_id FROM journeys WHERE customer_id=:c", c=customer)
    clock.set(T0 + timedelta(hours=30))
    while await fire_due(deps, limit=10):
        pass  # day 1 call goes out
    click = Delivery(
        notification_id=decisions.notification_id(journey.journey_id, "offer"),
        customer_id=customer,
        journey_id=journey.journey_id,
        playbook="retention_offer",
        step="offer",
        channel="email",
        status="clicked",
        occurred_at=clock.now(),
    )
    await handle(record(settings, Topic.DELIVERIES, customer, click))
    clock.set(T0 + timedelta(days=5))
    while await fire_due(deps, limit=10):
        pass
    steps = [
        Notification.model_validate_json(r.payload).step
        for r in await rows(deps, "SELECT payload FROM outbox WHERE key=:c ORDER BY id", c=customer)
    ]
    assert steps == ["offer", "retention_call"]
    [j] = await rows(
        deps, "SELECT state, exit_reason FROM journeys WHERE customer_id=:c", c=customer
    )
    assert (j.state, j.exit_reason) == ("exited", "responded")
    statuses = await rows(
        deps,
        "SELECT step, status FROM timers WHERE journey_id=:j ORDER BY id",
        j=journey.journey_id,
    )
    assert [(s.step, s.status) for s in statuses] == [
        ("offer", "fired"),
        ("retention_call", "fired"),
        ("escalation", "cancelled"),
    ]


async def test_recovered_risk_exits_and_cooldown_blocks_reentry(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer()
    handle = router(deps)
    await identify(settings, deps, customer)
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.8, T0)))
    clock.set(T0 + timedelta(hours=2))
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.3, clock.now())))
    clock.set(T0 + timedelta(days=10))
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.85, clock.now())))
    states = await rows(
        deps, "SELECT state, exit_reason FROM journeys WHERE customer_id=:c", c=customer
    )
    assert [(s.state, s.exit_reason) for s in states] == [("exited", "risk_recovered")]
    clock.set(T0 + timedelta(days=31))
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.85, clock.now())))
    assert len(await rows(deps, "SELECT 1 FROM journeys WHERE customer_id=:c", c=customer)) == 2


async def test_no_consent_skips_the_email_but_not_the_csm_task(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer()
    await identify(settings, deps, customer, consent=False)
    await router(deps)(record(settings, Topic.SCORES, customer, snapshot(customer, 0.9, T0)))
    clock.set(T0 + timedelta(days=1))
    while await fire_due(deps, limit=10):
        pass
    steps = [
        Notification.model_validate_json(r.payload).step
        for r in await rows(deps, "SELECT payload FROM outbox WHERE key=:c ORDER BY id", c=customer)
    ]
    assert steps == ["retention_call"]
    skipped = await rows(
        deps,
        "SELECT t.detail FROM journey_transitions t JOIN journeys j "
        "USING (journey_id) WHERE j.customer_id=:c AND t.event='step_skipped'",
        c=customer,
    )
    assert [s.detail for s in skipped] == [{"step": "offer", "reason": "no email consent"}]


async def test_relay_publishes_the_outbox_to_kafka_once(env) -> None:
    settings, deps, _ = env
    pending = await rows(deps, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
    assert pending[0].n > 0
    async with KafkaPublisher(settings, client_id="it-relay") as publisher:
        total = 0
        while sent := await relay_once(deps.engine, publisher, limit=3):
            total += sent
    assert total == pending[0].n
    assert (await rows(deps, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"))[
        0
    ].n == 0
    consumer = make_consumer(settings, [Topic.NOTIFICATIONS], group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    seen: list[Notification] = []
    try:
        while len(seen) < total:
            batches = await consumer.getmany(timeout_ms=1000)
            assert batches or len(seen) >= total, "relay records missing on the topic"
            seen += [
                Notification.model_validate_json(r.value) for rs in batches.values() for r in rs
            ]
    finally:
        await consumer.stop()
    ids = [n.notification_id for n in seen]
    assert len(ids) == len(set(ids)) == total
