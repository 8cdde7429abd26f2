"""The scoring agents through faust's ``agent.test_context()`` and the memory store.

No broker: the agents write the same RocksDB tables as in production, by the same path;
their records, and the tables' changelog records, go to a list (the ``Sink`` port), time
to a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faust.types import TP

from common.clock import FakeClock
from common.messages import Delivery, Erasure, ScoreSnapshot, SignalChange
from scoring.adapters.memory import ListSink
from scoring.bootstrap import Scoring, bootstrap
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.service import Emit, Tick
from scoring.settings import ScoringSettings

MODEL = load_model(DEFAULT_MODEL_PATH)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Harness:
    scoring: Scoring
    sink: ListSink
    clock: FakeClock

    @property
    def table(self) -> Any:
        """The customers' states, as faust's table holds them (the state's JSON)."""
        return self.scoring.tables.states

    def stored(self, customer_id: str) -> bool:
        return self.table.get(customer_id) is not None

    def state(self, customer_id: str) -> dict[str, Any]:
        """The stored state of ``customer_id`` (as the JSON faust's table holds)."""
        raw = self.table.get(customer_id)
        assert raw is not None, f"no state stored for {customer_id}"
        return dict(json.loads(raw))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return self.sink.values(topic)

    def dead(self) -> list[Emit]:
        return [r for r in self.sink.records if r.topic.endswith(".dlq")]

    @asynccontextmanager
    async def agent(self, name: str) -> AsyncIterator[Feed]:
        """The agent in faust's test context; on leaving, every value put was handled."""
        async with self.scoring.agents[name].test_context() as agent:
            feed = Feed(agent)
            yield feed
            await feed.handled()


class Feed:
    """Puts values to an agent under test. ``take_events`` hands the agent a batch after
    ``batch_within_ms`` at most and acks it once handled: wait for the acks."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent
        self.events: list[Any] = []

    async def put(self, value: bytes, key: bytes = b"c-1") -> Any:
        sent = await self._agent.put(value, key=key, wait=False)
        self.events.append(sent)
        return sent

    async def handled(self) -> None:
        for _ in range(500):
            if all(e.message.acked for e in self.events):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the agent did not handle every value put within 5 s")


def make_harness(settings: ScoringSettings) -> Harness:
    """The worker wired as production wires it (RocksDB tables in a temporary folder),
    with faust set up for its test context (flow control on: faust's testing guide)."""
    sink = ListSink()
    clock = FakeClock(T0)
    scoring = bootstrap(settings, model=MODEL, clock=clock, sink=sink)
    scoring.app.finalize()
    scoring.app.flow_control.resume()
    # no broker, so no rebalance: this worker holds every partition of its tables
    held = {
        TP(table.changelog_topic.get_topic_name(), partition)
        for table in (scoring.tables.states, scoring.tables.cohorts)
        for partition in range(settings.common.topic_partitions)
    }
    scoring.app.assignor.assigned_actives = lambda: held
    return Harness(scoring, sink, clock)


@pytest.fixture
def harness(unit_settings: ScoringSettings) -> Harness:
    return make_harness(unit_settings)


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


async def test_events_become_signal_changes_and_a_snapshot(harness: Harness) -> None:
    async with harness.agent("events") as agent:
        await agent.put(event("competitor_trial"))
        await agent.put(event("alternative_search"))
    changes = [SignalChange.model_validate(c) for c in harness.on("t.signals")]
    assert [(c.change, c.name) for c in changes if c.change.startswith("signal")] == [
        ("signal_on", "competitor_trial"),
        ("signal_on", "alternative_search"),
    ]
    assert [(c.previous, c.current) for c in changes if c.change == "tier_changed"] == [
        ("low", "medium")
    ]
    last = ScoreSnapshot.model_validate(harness.on("t.scores")[-1])
    assert last.churn_probability == 0.90 and [f.name for f in last.red_flags] == [
        "trial_and_search"
    ]
    assert harness.state("c-1")["events_counted"] == 2


async def test_an_erasure_drops_the_state_and_sends_a_tombstone_on_scores(
    harness: Harness,
) -> None:
    async with harness.agent("events") as agent:
        await agent.put(event("competitor_trial"))
    assert harness.stored("c-1")
    erasure = Erasure(erasure_id="e-1", customer_id="c-1", erased_at=T0)
    async with harness.agent("erasures") as agent:
        await agent.put(erasure.model_dump_json().encode())
        await agent.put(b"not json")
        await agent.put(erasure.model_dump_json().encode())  # again: idempotent
    assert not harness.stored("c-1")
    tombstones = [r for r in harness.sink.records if r.topic == "t.scores" and r.value is None]
    assert [(r.key, r.headers) for r in tombstones] == [(b"c-1", ()), (b"c-1", ())]
    assert [r.topic for r in harness.dead()] == ["t.erasures.dlq"]
    # A later event starts the customer over: one event counted.
    async with harness.agent("events") as agent:
        await agent.put(event("alternative_search"))
    assert harness.state("c-1")["events_counted"] == 1


async def test_a_duplicate_event_is_counted_once_and_emits_nothing(harness: Harness) -> None:
    once = event("competitor_trial")
    async with harness.agent("events") as agent:
        await agent.put(once)
    emitted = len(harness.sink.records)
    async with harness.agent("events") as agent:
        await agent.put(once)
    assert len(harness.sink.records) == emitted
    assert harness.state("c-1")["events_counted"] == 1


async def test_an_invalid_event_goes_to_the_dead_letter_topic_and_the_agent_goes_on(
    harness: Harness,
) -> None:
    bad = json.dumps({"event_id": "x", "customer_id": "c-1", "kind": "intent"}).encode()
    async with harness.agent("events") as agent:
        await agent.put(b"not json")
        await agent.put(bad)
        await agent.put(event("competitor_trial"))
    dead = harness.dead()
    assert len(dead) == 2
    headers = dict(dead[1].headers)
    assert dead[1].topic == "t.events.usage.dlq" and dead[1].value == bad
    assert b"occurred_at" in headers["dlq.error"] and b"type" in headers["dlq.error"]
    assert headers["dlq.consumer"] == b"scoring" and headers["dlq.offset"] == b"1"
    assert harness.state("c-1")["events_counted"] == 1  # the good one after them


async def test_deliveries_feed_engagement_low(harness: Harness) -> None:
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

    async with harness.agent("deliveries") as agent:
        await agent.put(delivery("n1", "sent"))
        await agent.put(delivery("n2", "sent"))
        await agent.put(b"{}")
    on = [c["name"] for c in harness.on("t.signals") if c["change"] == "signal_on"]
    assert on == ["engagement_low"]
    assert [r.topic for r in harness.dead()] == ["t.deliveries.dlq"]
    async with harness.agent("deliveries") as agent:
        await agent.put(delivery("n1", "opened"))
    off = [c["name"] for c in harness.on("t.signals") if c["change"] == "signal_off"]
    assert off == ["engagement_low"]


async def test_the_clock_turns_a_signal_on_without_a_new_event(harness: Harness) -> None:
    clock, sweep = harness.clock, harness.scoring.sweep
    overdue = event("invoice_overdue", kind="payment", invoice_id="i-1", days_late=3)
    async with harness.agent("events") as agent:
        await agent.put(overdue)
    assert not [c for c in harness.on("t.signals") if c["name"] == "payment_late"]
    assert sweep.due(clock.now(), 100) == []  # nothing would change yet
    clock.advance(timedelta(days=5))
    await sweep()  # the timer's call: a tick for each due customer
    [tick] = [r for r in harness.sink.records if r.topic == "t.scoring.ticks"]
    assert tick.key == b"c-1" and Tick.model_validate_json(tick.value or b"").at == clock.now()
    async with harness.agent("ticks") as agent:
        await agent.put(tick.value or b"")
        nobody = Tick(customer_id="nobody", at=clock.now()).model_dump_json().encode()
        await agent.put(nobody, key=b"nobody")
    late = [c for c in harness.on("t.signals") if c["name"] == "payment_late"]
    assert [(c["change"], c["occurred_at"]) for c in late] == [
        ("signal_on", (T0 + timedelta(days=5)).isoformat().replace("+00:00", "Z"))
    ]
    assert not harness.stored("nobody")  # a tick never creates a state
    assert sweep.due(clock.now(), 100) == []  # evaluated: nothing more to do


async def test_cohort_deltas_become_rates_that_change_another_customers_clv(
    harness: Harness,
) -> None:
    harness.clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))  # June is complete

    def delta(**fields: Any) -> bytes:
        body = {"plan": "basic", "month": "2026-06", "customers": 0, "lost": 0, "mrr": 0.0}
        return json.dumps({"expansion": 0.0, **body, **fields}).encode()

    async with harness.agent("cohorts") as agent:
        for _ in range(30):
            await agent.put(delta(customers=1, mrr=29.0), key=b"basic")
        for _ in range(15):
            await agent.put(delta(lost=1), key=b"basic")
        await agent.put(delta(month="2026-13"), key=b"basic")  # invalid: dead-lettered
    published = {"customers_at_start": 30, "customers_lost": 15, "mrr_at_start": 870.0}
    assert harness.on("t.scoring.cohort-stats")[-1] == {**published, "expansion_mrr": 0.0}
    stats = harness.scoring.cohort_stats["basic"]  # what this worker's rules read
    assert (stats.customers_at_start, stats.customers_lost) == (30, 15)
    # published when the pooled counts change: each of these June deltas (June is complete)
    assert len(harness.on("t.scoring.cohort-stats")) == 45
    async with harness.agent("cohorts") as agent:
        await agent.put(delta(month="2026-07", customers=1, mrr=29.0), key=b"basic")
    assert len(harness.on("t.scoring.cohort-stats")) == 45  # July is in progress: not pooled
    assert [r.topic for r in harness.dead()] == ["t.scoring.cohorts.dlq"]
    started = event("subscription_started", kind="payment", at=harness.clock.now(), plan="basic")
    started = json.dumps({**json.loads(started), "mrr_after": 29.0}).encode()
    async with harness.agent("events") as agent:
        await agent.put(started)
    snap = ScoreSnapshot.model_validate(harness.on("t.scores")[-1])
    assert snap.clv_rates_observed and snap.clv_monthly_churn == 0.5
    assert snap.clv == pytest.approx(29 * 0.8 * 2)  # not the default 29 x 0.8 x 20 x 1.2


async def test_a_customer_counted_at_a_months_start_sends_its_delta_keyed_by_plan(
    harness: Harness,
) -> None:
    may = datetime(2026, 5, 10, tzinfo=UTC)
    started = json.loads(event("subscription_started", kind="payment", at=may, plan="pro"))
    login = event("login", kind="login", at=harness.clock.now(), user_id="u-1")  # June 1st
    async with harness.agent("events") as agent:
        await agent.put(json.dumps({**started, "mrr_after": 99.0}).encode())
        await agent.put(login)
    sent = [
        (r.key, json.loads(r.value or b""))
        for r in harness.sink.records
        if r.topic == "t.scoring.cohorts"
    ]
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


async def test_a_redemption_through_the_agent_is_in_the_snapshot(harness: Harness) -> None:
    async with harness.agent("events") as agent:
        for _ in range(3):
            await agent.put(event("referral"))
        await agent.put(event("reward_redeemed", kind="usage", reward="training"))
        await agent.put(event("reward_redeemed", kind="usage", reward="training"))
        await agent.put(event("reward_redeemed", kind="usage"))  # no reward: DLQ
    snap = ScoreSnapshot.model_validate(harness.on("t.scores")[-1])
    assert (snap.loyalty_points, snap.loyalty_points_earned) == (0, 300)
    assert [r.status for r in snap.redemptions] == ["accepted", "refused"]
    [dead] = harness.dead()
    assert dead.topic == "t.events.usage.dlq" and b"reward" in dict(dead.headers)["dlq.error"]


async def test_a_batch_stores_each_customers_last_state_once_and_outputs_per_event(
    unit_settings: ScoringSettings,
) -> None:
    # one batch of the six events put: the agent waits up to a second for them to queue
    settings = unit_settings.model_copy(update={"batch_max_events": 6, "batch_within_ms": 1000})
    harness = make_harness(settings)
    changelog = harness.table.changelog_topic.get_topic_name()
    async with harness.agent("events") as agent:
        for _ in range(5):
            await agent.put(event("referral"))
        await agent.put(event("referral", customer_id="c-2"), key=b"c-2")
    assert harness.state("c-1")["events_counted"] == 5
    written = [r for r in harness.sink.records if r.topic == changelog]
    # each customer's last state of the batch, once, encoded as faust encodes the table
    assert [(r.key, json.loads(r.value or b"")["events_counted"]) for r in written] == [
        (b'"c-1"', 5),
        (b'"c-2"', 1),
    ]
    assert {r.partition for r in written} == {0}  # the partition of the customers' events
    assert len(harness.on("t.scores")) == 6  # outputs stay per event
