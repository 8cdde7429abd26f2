"""The stream logic of the faust agents, with ``test_context()`` and the memory store.

No broker: the agents' output goes to a list (the ``Sink`` port), time to a fake clock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.clock import FakeClock
from common.messages import Delivery, ScoreSnapshot, SignalChange
from common.settings import CommonSettings
from scoring.app import Tick, create_app
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.settings import ScoringSettings

MODEL = load_model(DEFAULT_MODEL_PATH)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> None:
        self.records.append((topic, key, value, list(headers or [])))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(v) for t, _, v, _ in self.records if t == topic]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[tuple[Any, ListSink, FakeClock]]:
    settings = ScoringSettings(
        app_id=f"test-scoring-{uuid.uuid4().hex[:8]}",
        store="memory://",
        data_dir=tmp_path,
        read_committed=False,
        common=CommonSettings(topic_prefix="t.", kafka_bootstrap="127.0.0.1:1"),
    )
    sink = ListSink()
    clock = FakeClock(T0)
    app = create_app(settings, MODEL, clock=clock, sink=sink)
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
    assert app.tenure_states["c-1"]["events_counted"] == 2


async def test_a_duplicate_event_is_counted_once_and_emits_nothing(harness: Any) -> None:
    app, sink, _ = harness
    once = event("competitor_trial")
    async with app.tenure_agents["events"].test_context() as agent:
        await agent.put(once, key=b"c-1")
        emitted = len(sink.records)
        await agent.put(once, key=b"c-1")
    assert len(sink.records) == emitted
    assert app.tenure_states["c-1"]["events_counted"] == 1


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
    assert app.tenure_states["c-1"]["events_counted"] == 1  # the good one after them


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
