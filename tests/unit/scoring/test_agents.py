"""The stream logic of the faust agents, with ``test_context()`` and the memory store.

No broker: the agents' output goes to a list (the ``Sink`` port), time to a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.clock import FakeClock
from common.messages import Delivery, Erasure, ScoreSnapshot, SignalChange
from scoring.app import Tick, create_app
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.settings import ScoringSettings

MODEL = load_model(DEFAULT_MODEL_PATH)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> None:
        self.records.append((topic, key, value, list(headers or [])))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(v) for t, _, v, _ in self.records if t == topic and v is not None]


@pytest.fixture
async def harness(
    unit_settings: ScoringSettings,
) -> AsyncIterator[tuple[Any, ListSink, FakeClock]]:
    sink = ListSink()
    clock = FakeClock(T0)
    app = create_app(unit_settings, MODEL, clock=clock, sink=sink)
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    yield app, sink, clock


def event(type_: str, kind: str = "intent", at: datetime = T0, **fields: Any) -> bytes:
    body = {
        "event_id": str(uuid.uuid4()),
        "customer_id": "c-1",
        "occurred_at": at.isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }
    return json.dumps(body).encode()


async def test_events_become_signal_changes_and_a_snapshot(harness: Any) -> None:
    app, sink, _ = harness
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(event("competitor_trial"), key=b"c-1")
        await agent.put(event("alternative_search"), key=b"c-1")
    changes = [SignalChange.model_validate(c) for c in sink.on("t.signals")]
    assert [(c.change, c.name) for c in changes if c.change.startswith("signal")] == [
        ("signal_on", "competitor_trial"),
        ("signal_on", "alternative_search"),
    ]
    assert [(c.previous, c.current) for c in changes if c.change == "tier_changed"] == [
        ("low", "medium")
    ]
    last = ScoreSnapshot.model_validate(sink.on("t.scores")[-1])
    assert last.churn_probability == 0.90 and [f.name for f in last.red_flags] == [
        "trial_and_search"
    ]
    assert json.loads(app.tenure_states["c-1"])["events_counted"] == 2


async def test_an_erasure_drops_the_state_and_sends_a_tombstone_on_scores(harness: Any) -> None:
    app, sink, _ = harness
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(event("competitor_trial"), key=b"c-1")
    assert app.tenure_states.get("c-1") is not None
    erasure = Erasure(erasure_id="e-1", customer_id="c-1", erased_at=T0)
    async with app.tenure_agents["erasures"].test_context() as agent:
        await agent.put(erasure.model_dump_json().encode(), key=b"c-1")
        await agent.put(b"not json", key=b"c-1")
    assert app.tenure_states.get("c-1") is None
    assert ("t.scores", b"c-1", None, []) in sink.records
    assert [t for t, *_ in sink.records if t.endswith(".dlq")] == ["t.erasures.dlq"]
    # A later event starts the customer over: one event counted.
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(event("alternative_search"), key=b"c-1")
    assert json.loads(app.tenure_states["c-1"])["events_counted"] == 1


async def test_a_duplicate_event_is_counted_once_and_emits_nothing(harness: Any) -> None:
    app, sink, _ = harness
    once = event("competitor_trial")
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(once, key=b"c-1")
        emitted = len(sink.records)
        await agent.put(once, key=b"c-1")
    assert len(sink.records) == emitted
    assert json.loads(app.tenure_states["c-1"])["events_counted"] == 1


async def test_an_invalid_event_goes_to_the_dead_letter_topic_and_the_agent_goes_on(
    harness: Any,
) -> None:
    app, sink, _ = harness
    bad = json.dumps({"event_id": "x", "customer_id": "c-1", "kind": "intent"}).encode()
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(b"not json", key=b"c-1")
        await agent.put(bad, key=b"c-1")
        await agent.put(event("competitor_trial"), key=b"c-1")
    dead = [(t, v, dict(h)) for t, _, v, h in sink.records if t.endswith(".dlq")]
    assert len(dead) == 2
    topic, value, headers = dead[1]
    assert topic == "t.events.usage.dlq" and value == bad
    assert b"occurred_at" in headers["dlq.error"] and b"type" in headers["dlq.error"]
    assert json.loads(app.tenure_states["c-1"])["events_counted"] == 1  # the good one after them


async def test_deliveries_feed_engagement_low(harness: Any) -> None:
    app, sink, _ = harness

    def delivery(nid: str, status: str) -> bytes:
        return (
            Delivery(
                notification_id=nid,
                customer_id="c-1",
                channel="email",
                status=status,
                occurred_at=T0,
            )
            .model_dump_json()
            .encode()
        )

    async with app.tenure_agents["deliveries"].test_context() as agent:
        await agent.put(delivery("n1", "sent"), key=b"c-1")
        await agent.put(delivery("n2", "sent"), key=b"c-1")
        await agent.put(b"{}", key=b"c-1")
    on = [c["name"] for c in sink.on("t.signals") if c["change"] == "signal_on"]
    assert on == ["engagement_low"]
    assert [t for t, *_ in sink.records if t.endswith(".dlq")] == ["t.deliveries.dlq"]
    async with app.tenure_agents["deliveries"].test_context() as agent:
        await agent.put(delivery("n1", "opened"), key=b"c-1")
    off = [c["name"] for c in sink.on("t.signals") if c["change"] == "signal_off"]
    assert off == ["engagement_low"]


async def test_the_clock_turns_a_signal_on_without_a_new_event(harness: Any) -> None:
    app, sink, clock = harness
    overdue = event("invoice_overdue", kind="payment", invoice_id="i-1", days_late=3)
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(overdue, key=b"c-1")
    assert not [c for c in sink.on("t.signals") if c["name"] == "payment_late"]
    assert app.tenure_due(clock.now(), 100) == []  # nothing would change yet
    clock.advance(timedelta(days=5))
    assert app.tenure_due(clock.now(), 100) == ["c-1"]
    tick = Tick(customer_id="c-1", at=clock.now()).model_dump_json().encode()
    async with app.tenure_agents["ticks"].test_context() as agent:
        await agent.put(tick, key=b"c-1")
        await agent.put(
            Tick(customer_id="nobody", at=clock.now()).model_dump_json().encode(), key=b"nobody"
        )
    late = [c for c in sink.on("t.signals") if c["name"] == "payment_late"]
    assert [(c["change"], c["occurred_at"]) for c in late] == [
        ("signal_on", (T0 + timedelta(days=5)).isoformat().replace("+00:00", "Z"))
    ]
    assert "nobody" not in app.tenure_states
    assert app.tenure_due(clock.now(), 100) == []  # evaluated: nothing more to do


async def test_cohort_deltas_become_rates_that_change_another_customers_clv(harness: Any) -> None:
    app, sink, clock = harness
    clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))  # June is complete

    def delta(**fields: Any) -> bytes:
        body = {"plan": "basic", "month": "2026-06", "customers": 0, "lost": 0, "mrr": 0.0}
        return json.dumps({"expansion": 0.0, **body, **fields}).encode()

    async with app.tenure_agents["cohorts"].test_context() as agent:
        for _ in range(30):
            await agent.put(delta(customers=1, mrr=29.0), key=b"basic")
        for _ in range(15):
            await agent.put(delta(lost=1), key=b"basic")
        await agent.put(delta(month="2026-13"), key=b"basic")  # invalid: dead-lettered
    published = {"customers_at_start": 30, "customers_lost": 15, "mrr_at_start": 870.0}
    assert sink.on("t.scoring.cohort-stats")[-1] == {**published, "expansion_mrr": 0.0}
    stats = app.tenure_cohort_stats["basic"]  # what this worker's rules read
    assert (stats.customers_at_start, stats.customers_lost) == (30, 15)
    # published when the pooled counts change: each of these June deltas (June is complete)
    assert len(sink.on("t.scoring.cohort-stats")) == 45
    async with app.tenure_agents["cohorts"].test_context() as agent:
        await agent.put(delta(month="2026-07", customers=1, mrr=29.0), key=b"basic")
    assert len(sink.on("t.scoring.cohort-stats")) == 45  # July is in progress: not pooled
    assert [t for t, *_ in sink.records if t.endswith(".dlq")] == ["t.scoring.cohorts.dlq"]
    started = event("subscription_started", kind="payment", at=clock.now(), plan="basic")
    started = json.dumps({**json.loads(started), "mrr_after": 29.0}).encode()
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(started, key=b"c-1")
    snap = ScoreSnapshot.model_validate(sink.on("t.scores")[-1])
    assert snap.clv_rates_observed and snap.clv_monthly_churn == 0.5
    assert snap.clv == pytest.approx(29 * 0.8 * 2)  # not the default 29 x 0.8 x 20 x 1.2


async def test_a_customer_counted_at_a_months_start_sends_its_delta_keyed_by_plan(
    harness: Any,
) -> None:
    app, sink, clock = harness
    may = datetime(2026, 5, 10, tzinfo=UTC)
    started = json.loads(event("subscription_started", kind="payment", at=may, plan="pro"))
    login = event("login", kind="login", at=clock.now(), user_id="u-1")  # June 1st
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(json.dumps({**started, "mrr_after": 99.0}).encode(), key=b"c-1")
        await agent.put(login, key=b"c-1")
    sent = [(k, json.loads(v)) for t, k, v, _ in sink.records if t == "t.scoring.cohorts"]
    assert sent == [
        (
            b"pro",
            {
                "plan": "pro",
                "month": "2026-06",
                "customers": 1,
                "lost": 0,
                "mrr": 99.0,
                "expansion": 0.0,
            },
        )
    ]


async def test_a_redemption_through_the_agent_is_in_the_snapshot(harness: Any) -> None:
    app, sink, _ = harness
    async with app.tenure_agents["events"].test_context() as agent:
        for _ in range(3):
            await agent.put(event("referral"), key=b"c-1")
        await agent.put(event("reward_redeemed", kind="usage", reward="training"), key=b"c-1")
        await agent.put(event("reward_redeemed", kind="usage", reward="training"), key=b"c-1")
        await agent.put(event("reward_redeemed", kind="usage"), key=b"c-1")  # no reward: DLQ
    snap = ScoreSnapshot.model_validate(sink.on("t.scores")[-1])
    assert (snap.loyalty_points, snap.loyalty_points_earned) == (0, 300)
    assert [r.status for r in snap.redemptions] == ["accepted", "refused"]
    [(topic, headers)] = [(t, dict(h)) for t, _, _, h in sink.records if t.endswith(".dlq")]
    assert topic == "t.events.usage.dlq" and b"reward" in headers["dlq.error"]


async def test_events_waiting_together_are_one_batch_written_once_and_all_acked(
    harness: Any,
) -> None:
    app, sink, _ = harness
    table = app.tenure_states
    writes: list[str] = []
    on_key_set = table.on_key_set

    def counting(key: str, value: Any) -> None:
        writes.append(key)
        on_key_set(key, value)

    table.on_key_set = counting
    async with app.tenure_agents["events"].test_context() as agent:
        put = [await agent.put(event("referral"), key=b"c-1", wait=False) for _ in range(5)]
        for _ in range(200):  # until the agent handled them and went back to its stream
            await asyncio.sleep(0.01)
            if all(e.message.acked for e in put):
                break
    assert json.loads(table["c-1"])["events_counted"] == 5
    assert writes == ["c-1"]  # the customer's last state of the batch, once
    assert len(sink.on("t.scores")) == 5  # outputs stay per event
    # faust's iterator acks the stream's current event: the batch's first must be it again
    assert [e.message.acked for e in put] == [True] * 5
