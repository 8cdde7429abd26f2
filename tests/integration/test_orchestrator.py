"""The orchestrator's consumers, timer worker and outbox relay on real PostgreSQL and Kafka.

Time is a FakeClock: the retention_offer journey is lived through in milliseconds.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from common.clock import FakeClock
from common.db import create_engine
from common.events import EXAMPLES
from common.kafka import (
    INVALID,
    DeadLetters,
    InvalidRecord,
    KafkaPublisher,
    Record,
    Sequential,
    encode,
    ensure_topics,
    make_consumer,
    read_topic,
    run_consumer,
)
from common.messages import Delivery, Notification, ScoreSnapshot, SignalChange
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name
from devstack.stack import Stack
from orchestrator.domain import decisions
from orchestrator.domain.errors import JourneyNotFound
from orchestrator.domain.journey import IllegalTransition, State
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.consumers import router
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.relay import relay_once
from orchestrator.entrypoints.timers import fire_due, fire_due_triggers
from orchestrator.service_layer import operator
from orchestrator.service_layer.ports import Lease
from orchestrator.service_layer.steps import fire_steps
from tests.e2e.journeys import new_customer
from tests.unit.orchestrator.sim import Sim

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BOOKS = load_playbooks(SHIPPED)


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
    customer = new_customer("c")
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
        "SELECT step, due_at FROM timers WHERE journey_id=:j ORDER BY id",
        j=journey.journey_id,
    )
    # the call and the escalation are timed from the offer's send: no due time before it
    assert [(t.step, t.due_at) for t in timers] == [
        ("offer", T0),
        ("retention_call", None),
        ("escalation", None),
    ]

    fired = []
    for day in (0, 0.5, 1, 2, 2.99, 3, 4):
        if day == 0.5:
            timers = await rows(
                deps,
                "SELECT step, due_at FROM timers WHERE journey_id=:j ORDER BY id",
                j=journey.journey_id,
            )
            assert [(t.step, t.due_at - T0) for t in timers] == [
                ("offer", timedelta(0)),
                ("retention_call", timedelta(days=1)),
                ("escalation", timedelta(days=3)),
            ]
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
    customer = new_customer("c")
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
    customer = new_customer("c")
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
    customer = new_customer("c")
    await identify(settings, deps, customer, consent=False)
    await router(deps)(record(settings, Topic.SCORES, customer, snapshot(customer, 0.9, T0)))
    for day in (0, 1):  # the call is timed from the offer, sent or (here) skipped
        clock.set(T0 + timedelta(days=day))
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
    records, _ = await read_topic(settings, topic_name(Topic.NOTIFICATIONS, settings.topic_prefix))
    seen = [Notification.model_validate_json(r.value) for r in records]
    ids = [n.notification_id for n in seen]
    assert len(ids) == len(set(ids)) == total


# --- signals, events, deliveries, pauses (issue 5 part A) ----------------------------------


def event(customer: str, kind: str, type_: str, at: datetime, **fields: object) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }


def signal(customer: str, name: str, on: bool, at: datetime) -> SignalChange:
    return SignalChange(
        customer_id=customer,
        occurred_at=at,
        change="signal_on" if on else "signal_off",
        name=name,
    )


async def fire_all(deps: Deps) -> None:
    while await fire_due_triggers(deps, limit=50):
        pass
    while await fire_due(deps, limit=50):
        pass


async def journeys_of(deps: Deps, customer: str) -> list[tuple[str, str, str | None]]:
    return [
        (r.playbook, r.state, r.exit_reason)
        for r in await rows(
            deps,
            "SELECT playbook, state, exit_reason FROM journeys WHERE customer_id=:c "
            "ORDER BY started_at, playbook",
            c=customer,
        )
    ]


async def sent_steps(deps: Deps, customer: str) -> list[str]:
    return [
        f"{n.playbook}/{n.step}"
        for n in (
            Notification.model_validate_json(r.payload)
            for r in await rows(
                deps, "SELECT payload FROM outbox WHERE key=:c ORDER BY id", c=customer
            )
        )
    ]


async def deferrals(deps: Deps, customer: str) -> list[dict[str, Any]]:
    """The customer's step_deferred transitions (their detail says why and until when)."""
    return [
        r.detail
        for r in await rows(
            deps,
            "SELECT t.detail FROM journey_transitions t JOIN journeys j USING (journey_id) "
            "WHERE j.customer_id=:c AND t.event='step_deferred' ORDER BY t.id",
            c=customer,
        )
    ]


async def identify_at(
    settings: CommonSettings, deps: Deps, customer: str, at: datetime, **fields: object
) -> None:
    profile = {
        **EXAMPLES["profile"],
        "customer_id": customer,
        "event_id": str(uuid.uuid4()),
        "occurred_at": at.isoformat(),
        "email": f"{customer}@example.com",
        **fields,
    }
    await router(deps)(record(settings, Topic.EVENTS_PROFILE, customer, profile))


async def test_held_signal_starts_re_engagement_and_a_login_chains_course_upsell(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="free")
    on = record(settings, Topic.SIGNALS, customer, signal(customer, "engagement_low", True, T0))
    await handle(on)
    await handle(on)  # a replayed record arms nothing more
    armed = await rows(
        deps, "SELECT playbook, due_at, status FROM held_triggers WHERE customer_id=:c", c=customer
    )
    assert [(a.playbook, a.due_at, a.status) for a in armed] == [
        ("re_engagement", T0 + timedelta(days=14), "pending")
    ]
    clock.set(T0 + timedelta(days=13, hours=23))
    await fire_all(deps)
    assert await journeys_of(deps, customer) == []
    clock.set(T0 + timedelta(days=14))
    await fire_all(deps)
    assert await journeys_of(deps, customer) == [("re_engagement", "active", None)]
    assert await sent_steps(deps, customer) == ["re_engagement/summary"]
    rearmed = await rows(
        deps,
        "SELECT due_at, status FROM held_triggers WHERE customer_id=:c ORDER BY id",
        c=customer,
    )  # still held: checked again one hold later (re-entry after the cooldown)
    assert [(a.due_at, a.status) for a in rearmed] == [
        (T0 + timedelta(days=14), "fired"),
        (T0 + timedelta(days=28), "pending"),
    ]
    clock.set(T0 + timedelta(days=15))
    login = event(customer, "login", "login", clock.now(), user_id="u-1")
    await handle(record(settings, Topic.EVENTS_LOGIN, customer, login))
    assert await journeys_of(deps, customer) == [
        ("re_engagement", "exited", "re_engaged"),
        ("course_upsell", "active", None),  # free plan: saas_upsell (basic only) stays out
    ]
    clock.set(T0 + timedelta(days=16))
    await fire_all(deps)
    assert await sent_steps(deps, customer) == [
        "re_engagement/summary",
        "course_upsell/advantage",
    ]
    purchase = event(customer, "payment", "purchase", clock.now(), product="course")
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, purchase))
    assert (await journeys_of(deps, customer))[-1] == ("course_upsell", "exited", "purchased")


async def test_signal_off_disarms_the_held_trigger(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0)
    await handle(
        record(settings, Topic.SIGNALS, customer, signal(customer, "usage_reduced", True, T0))
    )
    off_at = T0 + timedelta(days=20)
    await handle(
        record(settings, Topic.SIGNALS, customer, signal(customer, "usage_reduced", False, off_at))
    )
    clock.set(T0 + timedelta(days=40))
    await fire_all(deps)
    assert await journeys_of(deps, customer) == []
    [trigger] = await rows(
        deps, "SELECT status FROM held_triggers WHERE customer_id=:c", c=customer
    )
    assert trigger.status == "cancelled"


async def test_win_back_from_payment_events_and_reactivation_exit(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC")
    cancelled = event(customer, "payment", "subscription_cancelled", T0)
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, cancelled))
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, cancelled))  # replay
    assert await journeys_of(deps, customer) == [("win_back", "active", None)]
    for day in (29, 30, 36, 37, 40):
        clock.set(T0 + timedelta(days=day))
        await fire_all(deps)
    assert await sent_steps(deps, customer) == ["win_back/we_miss_you", "win_back/offer"]
    back = event(customer, "payment", "subscription_reactivated", clock.now(), plan="pro")
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, back))
    clock.set(T0 + timedelta(days=90))
    await fire_all(deps)
    assert await journeys_of(deps, customer) == [("win_back", "exited", "reactivated")]
    assert await sent_steps(deps, customer) == ["win_back/we_miss_you", "win_back/offer"]


def old_triggers(playbook: str) -> float:
    labels = {"playbook": playbook}
    return REGISTRY.get_sample_value("tenure_orchestrator_old_triggers_total", labels) or 0.0


async def test_history_imported_late_starts_no_journey_but_sets_the_subscription(env) -> None:
    # A backfill: a start and a cancellation from a month before the orchestrator's now
    # (beyond TENURE_ORCHESTRATOR_EVENT_TRIGGER_MAX_AGE, 7 days by default) welcome
    # nobody and win nobody back; the subscription is cancelled all the same.
    settings, deps, clock = env
    clock.set(T0 + timedelta(days=31))
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, clock.now(), time_zone="UTC")
    counted = old_triggers("win_back")
    for type_, day in (("subscription_started", 0), ("subscription_cancelled", 1)):
        old = event(customer, "payment", type_, T0 + timedelta(days=day), plan="pro")
        await handle(record(settings, Topic.EVENTS_PAYMENT, customer, old))
    assert await journeys_of(deps, customer) == []
    assert old_triggers("win_back") == counted + 1
    [state] = await rows(
        deps, "SELECT subscription FROM customer_state WHERE customer_id=:c", c=customer
    )
    assert state.subscription == "cancelled"
    recent = event(customer, "payment", "subscription_cancelled", clock.now() - timedelta(days=6))
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, recent))
    assert await journeys_of(deps, customer) == [("win_back", "active", None)]


async def test_unsubscribe_skips_later_marketing_but_not_the_csm_call(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC")
    await handle(
        record(
            settings,
            Topic.EVENTS_PAYMENT,
            customer,
            event(customer, "payment", "subscription_cancelled", T0),
        )
    )
    clock.set(T0 + timedelta(days=30))
    await fire_all(deps)
    [journey] = await rows(deps, "SELECT journey_id FROM journeys WHERE customer_id=:c", c=customer)
    unsubscribed = Delivery(
        notification_id=decisions.notification_id(journey.journey_id, "we_miss_you"),
        customer_id=customer,
        journey_id=journey.journey_id,
        playbook="win_back",
        step="we_miss_you",
        channel="email",
        status="unsubscribed",
        occurred_at=clock.now(),
    )
    await handle(record(settings, Topic.DELIVERIES, customer, unsubscribed))
    # a later profile that still says "consent" does not undo the unsubscribe
    await identify_at(settings, deps, customer, clock.now(), time_zone="UTC")
    for day in (37, 45, 60):
        clock.set(T0 + timedelta(days=day))
        await fire_all(deps)
    assert await sent_steps(deps, customer) == ["win_back/we_miss_you", "win_back/personal_call"]
    skipped = await rows(
        deps,
        "SELECT detail FROM journey_transitions WHERE journey_id=:j AND event='step_skipped' "
        "ORDER BY id",
        j=journey.journey_id,
    )
    assert [(s.detail["step"], s.detail["reason"]) for s in skipped] == [
        ("offer", "unsubscribed"),
        ("last_chance", "unsubscribed"),
    ]


async def test_quiet_hours_defer_an_email_to_eight_local(env) -> None:
    settings, deps, clock = env
    start = datetime(2026, 3, 27, 21, 30, tzinfo=UTC)  # 22:30 in Madrid (CET)
    clock.set(start)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, start, time_zone="Europe/Madrid")
    started = event(customer, "payment", "subscription_started", start, plan="basic")
    await handle(record(settings, Topic.EVENTS_PAYMENT, customer, started))
    clock.set(start + timedelta(days=1))  # welcome due 22:30 Madrid on 28 March
    await fire_all(deps)
    assert await sent_steps(deps, customer) == []
    [timer] = await rows(
        deps,
        "SELECT t.due_at FROM timers t JOIN journeys j USING (journey_id) "
        "WHERE j.customer_id=:c AND t.step='welcome'",
        c=customer,
    )
    # 08:00 on 29 March in Madrid is summer time already (UTC+2): 06:00 UTC
    assert timer.due_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    clock.set(datetime(2026, 3, 29, 5, 59, tzinfo=UTC))
    await fire_all(deps)
    assert await sent_steps(deps, customer) == []
    clock.set(datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    await fire_all(deps)
    assert await sent_steps(deps, customer) == ["onboarding/welcome"]


async def test_frequency_cap_defers_the_fourth_marketing_message(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="basic")
    for name in ("limit_reached", "cross_sell_ready", "roi_proven"):
        await handle(record(settings, Topic.SIGNALS, customer, signal(customer, name, True, T0)))
    await fire_all(deps)
    # priority decides who gets the three slots: upsell_need (50) and upsell_results (45)
    # before cross_sell (30)
    sent = await sent_steps(deps, customer)
    assert len(sent) == 3 and "cross_sell/bundle_offer" not in sent
    [deferred] = await deferrals(deps, customer)
    assert deferred["reason"] == "frequency cap"
    assert deferred["until"] == (T0 + timedelta(days=7)).isoformat()
    clock.set(T0 + timedelta(days=7))
    await fire_all(deps)
    assert (await sent_steps(deps, customer))[-1] == "cross_sell/bundle_offer"


async def test_pause_resume_and_cancel_a_journey(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC")
    await handle(
        record(
            settings,
            Topic.EVENTS_PAYMENT,
            customer,
            event(customer, "payment", "subscription_started", T0),
        )
    )
    [journey] = await rows(deps, "SELECT journey_id FROM journeys WHERE customer_id=:c", c=customer)
    jid = journey.journey_id
    ops = {"stores": deps.stores, "context": deps.context}
    assert (await operator.pause_journey(jid, **ops)).state is State.PAUSED
    with pytest.raises(IllegalTransition):
        await operator.pause_journey(jid, **ops)
    clock.set(T0 + timedelta(days=4))
    await fire_all(deps)
    assert await sent_steps(deps, customer) == []  # welcome (day 1) and day 3 wait
    pending = await rows(
        deps, "SELECT count(*) AS n FROM timers WHERE journey_id=:j AND status='pending'", j=jid
    )
    assert pending[0].n == 5
    assert (await operator.resume_journey(jid, **ops)).state is State.ACTIVE
    await fire_all(deps)
    assert await sent_steps(deps, customer) == ["onboarding/welcome", "onboarding/first_success"]
    assert (await operator.cancel_journey(jid, **ops, by="ops@x")).state is State.CANCELLED
    with pytest.raises(IllegalTransition):
        await operator.cancel_journey(jid, **ops)
    with pytest.raises(JourneyNotFound):
        await operator.pause_journey("no-such-journey", **ops)
    clock.set(T0 + timedelta(days=40))
    await fire_all(deps)
    assert len(await sent_steps(deps, customer)) == 2
    history = await rows(
        deps,
        "SELECT event, to_state, detail FROM journey_transitions WHERE journey_id=:j ORDER BY id",
        j=jid,
    )
    assert [(h.event, h.to_state) for h in history] == [
        ("start", "active"),
        ("pause", "paused"),
        ("resume", "active"),
        ("step_sent", "active"),
        ("step_sent", "active"),
        ("cancel", "cancelled"),
    ]
    assert history[-1].detail == {"reason": "cancelled by operator", "by": "ops@x"}


async def test_a_paused_playbook_starts_nothing_and_its_journeys_wait(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    first, second = new_customer("c"), new_customer("c")
    handle = router(deps)
    for customer in (first, second):
        await identify_at(settings, deps, customer, T0, time_zone="UTC")
    cancelled = event(first, "payment", "subscription_cancelled", T0)
    await handle(record(settings, Topic.EVENTS_PAYMENT, first, cancelled))
    ops = {"stores": deps.stores, "context": deps.context}
    try:
        assert await operator.pause_playbook("win_back", **ops) >= 1
        assert await paused_playbooks(deps) == ["win_back"]
        later = event(second, "payment", "subscription_cancelled", T0)
        await handle(record(settings, Topic.EVENTS_PAYMENT, second, later))
        assert await journeys_of(deps, second) == []
        assert await journeys_of(deps, first) == [("win_back", "paused", None)]
        clock.set(T0 + timedelta(days=31))
        await fire_all(deps)
        assert await sent_steps(deps, first) == []
    finally:
        await operator.resume_playbook("win_back", **ops)
        assert await paused_playbooks(deps) == []
    assert await journeys_of(deps, first) == [("win_back", "active", None)]
    await fire_all(deps)
    assert await sent_steps(deps, first) == ["win_back/we_miss_you"]


async def paused_playbooks(deps: Deps) -> list[str]:
    return [r.playbook for r in await rows(deps, "SELECT playbook FROM paused_playbooks")]


async def test_retention_before_expansion(env) -> None:
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="basic")
    await handle(record(settings, Topic.SCORES, customer, snapshot(customer, 0.9, T0)))
    await handle(
        record(settings, Topic.SIGNALS, customer, signal(customer, "power_user", True, T0))
    )
    assert [j[0] for j in await journeys_of(deps, customer)] == ["retention_offer"]


async def test_undecodable_records_raise_decode_errors_for_the_dead_letter_topic(env) -> None:
    settings, deps, _ = env
    handle = router(deps)
    bad_signal = record(settings, Topic.SIGNALS, "c-1", {"customer_id": "c-1", "change": "bogus"})
    with pytest.raises(INVALID):
        await handle(bad_signal)
    not_payment = record(settings, Topic.EVENTS_PAYMENT, "c-1", {**EXAMPLES["login"]})
    with pytest.raises(InvalidRecord, match="expected a payment event"):
        await handle(not_payment)
    garbage = record(settings, Topic.DELIVERIES, "c-1", b"{not json")
    with pytest.raises(INVALID):
        await handle(garbage)


async def test_the_consumer_loop_on_kafka_applies_signals_and_dead_letters_poison(env) -> None:
    """Real topics: a poison signal goes to signals.dlq with the error, the loop goes on
    and the valid records behind it start their journeys."""
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="basic")
    signals_topic = topic_name(Topic.SIGNALS, settings.topic_prefix)
    payments_topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
    async with KafkaPublisher(settings, client_id="it-orch-loop") as publisher:
        await publisher.publish(signals_topic, customer, b'{"customer_id": "x", "change": 1}')
        await publisher.publish(
            signals_topic, customer, encode(signal(customer, "power_user", True, T0))
        )
        started = event(customer, "payment", "subscription_started", T0)
        await publisher.publish(payments_topic, customer, encode(started))
        consumer = make_consumer(
            settings, [Topic.SIGNALS, Topic.EVENTS_PAYMENT], group_id=f"g-{uuid.uuid4().hex[:6]}"
        )
        await consumer.start()
        stop = asyncio.Event()
        loop = asyncio.create_task(
            run_consumer(
                consumer,
                router(deps),
                DeadLetters(publisher, consumer_name="it"),
                stop=stop,
                name="it",
                strategy=Sequential(),
            )
        )
        try:
            for _ in range(100):
                if len(await journeys_of(deps, customer)) == 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await loop
            await consumer.stop()
    assert sorted(j[0] for j in await journeys_of(deps, customer)) == [
        "onboarding",
        "upsell_usage",
    ]
    dead, _ = await read_topic(settings, dlq_name(signals_topic))
    [poison] = [r for r in dead if r.key == customer]
    error = dict(poison.headers)["dlq.error"].decode()
    assert error.startswith("ValidationError") and "change" in error


async def test_projections_are_idempotent_and_never_go_back_in_time(env) -> None:
    settings, deps, _ = env
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0 + timedelta(days=2), plan="pro")
    await identify_at(settings, deps, customer, T0 + timedelta(days=1), plan="free")  # late
    await identify_at(settings, deps, customer, T0 + timedelta(days=2), plan="pro")  # replay
    [profile] = await rows(deps, "SELECT plan FROM customers WHERE customer_id=:c", c=customer)
    assert profile.plan == "pro"
    newer = snapshot(customer, 0.2, T0 + timedelta(days=2))
    older = snapshot(customer, 0.3, T0 + timedelta(days=1))
    for snap in (newer, older, newer):
        await handle(record(settings, Topic.SCORES, customer, snap))
    [score] = await rows(
        deps, "SELECT churn_probability FROM scores WHERE customer_id=:c", c=customer
    )
    assert score.churn_probability == 0.2
    upgrade = event(
        customer, "payment", "subscription_upgraded", T0 + timedelta(days=3), plan="enterprise"
    )
    stale = event(
        customer, "payment", "subscription_downgraded", T0 + timedelta(days=1), plan="basic"
    )
    buy = event(customer, "payment", "purchase", T0, product="course")
    for e in (upgrade, stale, buy, buy):
        await handle(record(settings, Topic.EVENTS_PAYMENT, customer, e))
    async with deps.stores.begin() as store:
        facts = await store.customers.get(customer)
    assert facts.plan == "enterprise" and facts.products == frozenset({"course"})


# --- parity: the service layer lives the same timelines on PostgreSQL and on the fake --------

P0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # the unit timelines' start (noon in Madrid)


def fact_record(settings: CommonSettings, customer: str, fact: decisions.Fact) -> Record:
    if isinstance(fact, decisions.SignalFact):
        return record(
            settings, Topic.SIGNALS, customer, signal(customer, fact.name, fact.on, fact.at)
        )
    if isinstance(fact, decisions.ScoreFact):
        snap = ScoreSnapshot(
            customer_id=customer,
            as_of=fact.at,
            risk_score=10,
            tier=fact.tier or "low",
            churn_probability=fact.values.get("churn_probability", 0.1),
            feature_adoption=fact.values.get("feature_adoption"),
        )
        return record(settings, Topic.SCORES, customer, snap)
    assert isinstance(fact, decisions.EventFact)
    if fact.type in ("login", "session_started"):
        return record(
            settings,
            Topic.EVENTS_LOGIN,
            customer,
            event(customer, "login", fact.type, fact.at, user_id="u"),
        )
    fields = {k: v for k, v in (("plan", fact.plan), ("product", fact.product)) if v}
    return record(
        settings,
        Topic.EVENTS_PAYMENT,
        customer,
        event(customer, "payment", fact.type, fact.at, **fields),
    )


async def next_due(deps: Deps, customer: str) -> datetime | None:
    [row] = await rows(
        deps,
        "SELECT least("
        " (SELECT min(t.due_at) FROM timers t JOIN journeys j USING (journey_id)"
        "  WHERE j.customer_id = :c AND t.status = 'pending' AND j.state = 'active'),"
        " (SELECT min(due_at) FROM held_triggers WHERE customer_id = :c AND status = 'pending')"
        ") AS due",
        c=customer,
    )
    return row.due


async def advance(deps: Deps, clock: FakeClock, customer: str, until: datetime) -> None:
    """Move the clock to every due instant of the customer up to ``until``, firing there."""
    while (due := await next_due(deps, customer)) is not None and due <= until:
        clock.set(due)
        await fire_all(deps)
    clock.set(until)


async def db_log(deps: Deps, customer: str) -> list[tuple[str, str, str | None, float]]:
    kinds = {
        "start": "start",
        "step_sent": "sent",
        "step_skipped": "skipped",
        "step_deferred": "deferred",
        "exit": "exit",
        "finish": "finish",
    }
    history = await rows(
        deps,
        "SELECT j.playbook, t.event, t.detail, t.at FROM journey_transitions t "
        "JOIN journeys j USING (journey_id) WHERE j.customer_id = :c ORDER BY t.at, t.id",
        c=customer,
    )
    return sorted(
        (
            h.playbook,
            kinds[h.event],
            h.detail.get("step"),
            round((h.at - P0) / timedelta(days=1), 4),
        )
        for h in history
    )


def S(name: str, on: bool = True):
    return lambda t: decisions.SignalFact(name, on, t)


def E(type_: str, **kw: object):
    return lambda t: decisions.EventFact(type_, t, **kw)  # type: ignore[arg-type]


PARITY = {
    "re_engagement": [(0, S("engagement_low"))],
    "re_engagement then login": [(0, S("engagement_low")), (15.5, E("login"))],
    "success_coaching": [
        (0, S("usage_reduced")),
        (35, lambda t: decisions.ScoreFact({"feature_adoption": 0.6}, t)),
    ],
    "retention_offer": [(0, lambda t: decisions.ScoreFact({"churn_probability": 0.9}, t))],
    "win_back": [(0, E("subscription_cancelled")), (40, E("subscription_reactivated"))],
    "expansion at night": [
        (11 / 24, S("power_user")),
        (11 / 24, S("limit_reached")),
        (11 / 24, S("roi_proven")),
        (11 / 24, S("cross_sell_ready")),
    ],
    "onboarding": [(0, E("subscription_started")), (10, E("subscription_cancelled"))],
    "re-engaged upsells with the cap": [(0, S("engagement_low")), (15, E("login"))],
    "downgrade_save": [(0, E("downgrade_requested"))],
    "cancelled: win-back alone": [
        (0, E("subscription_cancelled")),
        (37.5, S("engagement_low")),
        (38, S("power_user")),
        (70, E("subscription_reactivated")),
    ],
    # issue 13: the offer takes the first freed slot, its call and escalation follow it
    "capped slots by priority": [
        (0, E("subscription_started")),
        (0, S("power_user")),
        (2, lambda t: decisions.ScoreFact({"churn_probability": 0.8}, t)),
    ],
    "a need postponed by a high risk tier": [
        (0, lambda t: decisions.ScoreFact({}, t, tier="high")),
        (1, S("limit_reached")),
        (5, lambda t: decisions.ScoreFact({}, t, tier="medium")),
    ],
    "cancelled at night, before the upsell's morning": [
        (11 / 24, S("limit_reached")),
        (14 / 24, E("subscription_cancelled")),
    ],
    "cancelled: a held signal waits for the reactivation": [
        (0, S("usage_reduced")),
        (10, E("subscription_cancelled")),
        (50, E("subscription_reactivated")),
    ],
}


@pytest.mark.parametrize("scenario", list(PARITY))
async def test_postgres_path_matches_the_in_memory_store(env, scenario: str) -> None:
    """The same use cases on the SQL store (records through the consumer router, the
    timer and trigger workers) and on the in-memory store the unit timelines use: the
    same starts, sends, skips, deferrals, exits and finishes, to the minute."""
    settings, deps, clock = env
    customer = new_customer("c")
    clock.set(P0 - timedelta(hours=1))
    await identify_at(
        settings, deps, customer, P0 - timedelta(hours=1), time_zone="Europe/Madrid", plan="basic"
    )
    async with deps.stores.begin() as store:
        known = await store.customers.get(customer)
    fake = Sim(BOOKS, known, deps.rules, P0)
    handle = router(deps)
    for day, make in PARITY[scenario]:
        fact = make(P0 + timedelta(days=day))
        await fake.receive(fact)
        await advance(deps, clock, customer, fact.at)
        await handle(fact_record(settings, customer, fact))
    await fake.advance_to(P0 + timedelta(days=90))
    await advance(deps, clock, customer, P0 + timedelta(days=90))
    expected = sorted(
        (e.playbook, e.kind, e.step, round((e.at - P0) / timedelta(days=1), 4)) for e in fake.log
    )
    assert expected, "the scenario must do something"
    assert await db_log(deps, customer) == expected


async def test_two_transactions_cannot_pass_the_cap_together(env) -> None:
    """Two replicas fire two of one customer's marketing steps at once, with two messages
    already sent this week: the second waits for the first's commit, counts its message
    and is deferred, so the cap of three holds."""
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="basic")
    await handle(
        record(settings, Topic.SIGNALS, customer, signal(customer, "limit_reached", True, T0))
    )
    while await fire_due(deps, limit=50):
        pass
    assert len(await sent_steps(deps, customer)) == 2  # in-app + email
    clock.set(T0 + timedelta(hours=1))
    for name in ("roi_proven", "cross_sell_ready"):
        await handle(
            record(settings, Topic.SIGNALS, customer, signal(customer, name, True, clock.now()))
        )
    due = await rows(
        deps,
        "SELECT t.id FROM timers t JOIN journeys j USING (journey_id) "
        "WHERE j.customer_id=:c AND t.status='pending' ORDER BY t.id",
        c=customer,
    )
    assert len(due) == 2
    lease = Lease(owner=f"two-{uuid.uuid4().hex[:6]}", seconds=30.0, max_attempts=5)
    assert len(await deps.stores.claim(lease, clock.now(), 50)) == 2

    async def fire_alone(timer_id: int) -> None:
        async with deps.stores.begin() as store:
            taken = await store.steps.take(lease, [timer_id])
            await fire_steps(taken, store=store, context=deps.context, now=clock.now())
            await asyncio.sleep(0.3)  # not committed yet: the other decision must wait

    await asyncio.gather(*(fire_alone(t.id) for t in due))
    assert len(await sent_steps(deps, customer)) == 3
    [deferred] = await deferrals(deps, customer)
    assert deferred["reason"] == "frequency cap"


async def test_one_group_decides_each_step_on_what_the_steps_before_it_did(env) -> None:
    """The timer worker decides a group's steps on facts read once, kept up to date in
    memory: the two +0 d steps of upsell_need finish their journey, and of the two
    expansion emails due together next, the cap lets one go and defers the other."""
    settings, deps, clock = env
    clock.set(T0)
    customer = new_customer("c")
    handle = router(deps)
    await identify_at(settings, deps, customer, T0, time_zone="UTC", plan="basic")
    await handle(
        record(settings, Topic.SIGNALS, customer, signal(customer, "limit_reached", True, T0))
    )
    assert await fire_due(deps, limit=50) == 2  # one group: in-app, then email
    assert await journeys_of(deps, customer) == [("upsell_need", "completed", "completed")]
    history = await rows(
        deps,
        "SELECT t.event FROM journey_transitions t JOIN journeys j USING (journey_id) "
        "WHERE j.customer_id=:c ORDER BY t.id",
        c=customer,
    )
    assert [h.event for h in history] == ["start", "step_sent", "step_sent", "finish"]
    clock.set(T0 + timedelta(hours=1))
    for name in ("roi_proven", "cross_sell_ready"):
        await handle(
            record(settings, Topic.SIGNALS, customer, signal(customer, name, True, clock.now()))
        )
    assert await fire_due(deps, limit=50) == 2
    assert len(await sent_steps(deps, customer)) == 3
    [deferred] = await deferrals(deps, customer)
    assert deferred["reason"] == "frequency cap"
    pending = await rows(
        deps,
        "SELECT t.due_at, t.lease_owner FROM timers t JOIN journeys j USING (journey_id) "
        "WHERE j.customer_id=:c AND t.status='pending'",
        c=customer,
    )
    assert [(p.due_at, p.lease_owner) for p in pending] == [(T0 + timedelta(days=7), None)]
