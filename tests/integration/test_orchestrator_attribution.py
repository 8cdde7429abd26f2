"""Attribution of conversions and revenue on the real broker and PostgreSQL.

Payment events go through the real ``events.payment`` topic to the orchestrator's
consumer loop; journeys are started by its consumers and fired by its timer worker on
a FakeClock; the operator API reads what was recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from common.apikeys import KeyCache, KeyRepository, generate
from common.clock import FakeClock
from common.db import create_engine
from common.events import EXAMPLES
from common.kafka import (
    DeadLetters,
    KafkaPublisher,
    Record,
    Sequential,
    encode,
    ensure_topics,
    make_consumer,
    run_consumer,
)
from common.messages import SignalChange
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.consumers import router
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.timers import fire_due
from tests.e2e.journeys import new_customer

T0 = datetime(2026, 4, 6, 10, 0, tzinfo=UTC)
BOOKS = load_playbooks(SHIPPED)
UPSELL = BOOKS["upsell_results"]


def customer_in(arm: str) -> str:
    """A fresh customer id in ``arm`` of upsell_results."""
    while True:
        customer = f"att-{uuid.uuid4().hex[:6]}"
        if decisions.assign_arm(UPSELL, customer) == arm:
            return customer


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_orchestrator_attribution")


@pytest.fixture(scope="module")
async def env(database_url: str, common_settings: CommonSettings):
    settings = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-att-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    engine = create_engine(database_url)
    clock = FakeClock(T0)
    deps = Deps(engine=engine, playbooks=BOOKS, clock=clock, topic_prefix=settings.topic_prefix)
    repository = KeyRepository(engine)
    full, new = generate("reader", ["operator:read"])
    await repository.create(new)
    cache = KeyCache(repository)
    await cache.refresh()
    transport = httpx.ASGITransport(app=create_api(deps, authenticator=cache))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield settings, deps, clock, client, full
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


async def start_upsell(settings: CommonSettings, deps: Deps, customer: str) -> str:
    """Profile, then roi_proven: an upsell_results journey whose only step fires at once."""
    handle = router(deps)
    profile = {
        **EXAMPLES["profile"],
        "customer_id": customer,
        "event_id": str(uuid.uuid4()),
        "occurred_at": T0.isoformat(),
        "email": f"{customer}@example.com",
        "plan": "basic",
        "time_zone": "UTC",
        "consent": {"email_marketing": True, "in_app": True},
    }
    await handle(record(settings, Topic.EVENTS_PROFILE, customer, profile))
    change = SignalChange(
        customer_id=customer, occurred_at=T0, change="signal_on", name="roi_proven"
    )
    await handle(record(settings, Topic.SIGNALS, customer, change))
    while await fire_due(deps, limit=50):
        pass
    async with deps.engine.connect() as conn:
        journey_id, state = (
            await conn.execute(
                sa.text(
                    "SELECT journey_id, state FROM journeys WHERE customer_id = :c"
                    " AND playbook = 'upsell_results'"
                ),
                {"c": customer},
            )
        ).one()
    assert state == "completed"  # its last (only) step is behind it
    return str(journey_id)


def upgrade(customer: str, at: datetime, before: float, after: float) -> dict[str, object]:
    return {
        "event_id": f"up-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "kind": "payment",
        "type": "subscription_upgraded",
        "plan": "pro",
        "amount": after,
        "currency": "EUR",
        "mrr_before": before,
        "mrr_after": after,
    }


async def consume_payments(settings: CommonSettings, deps: Deps, events: list[dict]) -> None:
    """Publish ``events`` on the real payments topic and run the orchestrator's consumer
    loop until it has committed past them."""
    topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
    async with KafkaPublisher(settings, client_id="it-att") as publisher:
        for value in events:
            await publisher.publish(topic, str(value["customer_id"]), encode(value))
        consumer = make_consumer(
            settings, [Topic.EVENTS_PAYMENT], group_id=f"g-{uuid.uuid4().hex[:6]}"
        )
        await consumer.start()
        seen: list[str] = []
        handle = router(deps)

        async def counting(rec: Record) -> None:
            await handle(rec)
            seen.append(rec.key or "")

        stop = asyncio.Event()
        loop = asyncio.create_task(
            run_consumer(
                consumer,
                counting,
                DeadLetters(publisher, consumer_name="it"),
                stop=stop,
                name="it",
                strategy=Sequential(),
            )
        )
        try:
            for _ in range(200):
                if len(seen) >= len(events):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await loop
            await consumer.stop()
    assert len(seen) >= len(events)


async def attributions(deps: Deps, customer: str) -> list[sa.Row]:
    async with deps.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    sa.text(
                        "SELECT event_id, playbook, journey_id, arm, revenue, currency,"
                        " converted_at FROM attributions WHERE customer_id = :c"
                    ),
                    {"c": customer},
                )
            ).all()
        )


async def test_an_upgrade_inside_the_window_is_attributed_with_its_amount_and_one_outside_is_not(
    env,
) -> None:
    settings, deps, clock, client, key = env
    clock.set(T0)
    inside, outside, control = (
        customer_in("treatment"),
        customer_in("treatment"),
        customer_in("control"),
    )
    journeys = {c: await start_upsell(settings, deps, c) for c in (inside, outside, control)}
    window = UPSELL.attribution_window  # 14 days after the last step (T0)
    won = upgrade(inside, T0 + window - timedelta(minutes=1), 29.0, 99.0)
    late = upgrade(outside, T0 + window + timedelta(minutes=1), 29.0, 99.0)
    held_out = upgrade(control, T0 + timedelta(days=3), 29.0, 49.0)
    clock.set(T0 + window + timedelta(hours=1))
    # The first upgrade twice (a replayed record): attributed once.
    await consume_payments(settings, deps, [won, late, held_out, won])

    [row] = await attributions(deps, inside)
    assert (row.event_id, row.playbook, row.journey_id, row.arm) == (
        won["event_id"],
        "upsell_results",
        journeys[inside],
        "treatment",
    )
    assert (float(row.revenue), row.currency) == (70.0, "EUR")  # the MRR delta
    assert row.converted_at == T0 + window - timedelta(minutes=1)
    assert await attributions(deps, outside) == []
    [held] = await attributions(deps, control)
    assert (held.arm, float(held.revenue)) == ("control", 20.0)

    headers = {"X-API-Key": key}
    body = (await client.get("/v1/playbooks/upsell_results", headers=headers)).json()
    assert body["revenue"] == {"EUR": 70.0}
    treatment, held_arm = body["arms"]["treatment"], body["arms"]["control"]
    assert (treatment["journeys"], treatment["converted"]) == (2, 1)
    assert treatment["revenue"] == {"EUR": 70.0}
    assert treatment["revenue_per_journey"] == {"EUR": 35.0}
    assert treatment["messages_sent"] == 2  # the one email of each treatment journey
    assert treatment["revenue_per_message"] == {"EUR": 35.0}
    assert body["revenue_per_message"] == {"EUR": 35.0}
    assert (held_arm["journeys"], held_arm["converted"], held_arm["messages_sent"]) == (1, 1, 0)
    assert held_arm["revenue_per_message"] is None
    assert body["uplift"] == pytest.approx(0.5 - 1.0)
    assert body["revenue_per_journey_uplift"] == {"EUR": 15.0}  # 35 - 20
    assert body["incremental_revenue"] == {"EUR": 30.0}
    listed = {p["name"]: p for p in (await client.get("/v1/playbooks", headers=headers)).json()}
    assert listed["upsell_results"]["revenue"] == {"EUR": 70.0}
    assert listed["retention_offer"]["revenue"] == {}
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert "incremental_revenue" in schema["PlaybookDetail"]["properties"]
    assert "revenue_per_message" in schema["Arm"]["properties"]


async def test_a_reactivation_while_win_back_is_live_counts_the_mrr_won_back(env) -> None:
    """Attributed before the exit it causes: the journey was live when it came (no step
    sent yet, 20 days into a 60-day journey)."""
    settings, deps, clock, client, key = env
    clock.set(T0)
    customer = new_customer("wb")
    cancelled = {
        "event_id": f"cx-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "occurred_at": T0.isoformat(),
        "kind": "payment",
        "type": "subscription_cancelled",
    }
    back = {
        "event_id": f"re-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "occurred_at": (T0 + timedelta(days=20)).isoformat(),
        "kind": "payment",
        "type": "subscription_reactivated",
        "mrr_after": 49.0,
    }
    await consume_payments(settings, deps, [cancelled])
    clock.set(T0 + timedelta(days=20))
    await consume_payments(settings, deps, [back])
    [row] = await attributions(deps, customer)
    assert (row.playbook, float(row.revenue), row.currency) == ("win_back", 49.0, "EUR")
    body = (await client.get("/v1/playbooks/win_back", headers={"X-API-Key": key})).json()
    assert body["arms"]["treatment"]["converted"] >= 1
    assert body["revenue"]["EUR"] >= 49.0
    assert body["arms"]["treatment"]["revenue_per_message"] is None  # no email went out yet
