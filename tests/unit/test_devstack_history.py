"""devstack.history: the simulator's past months (counts, months covered, determinism),
checked against the ingest's event model and the orchestrator's MRR classifier."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from common.clock import FakeClock
from common.events import PaymentEvent, event_adapter
from devstack.history import Account, History, HistoryRates, generate, span
from devstack.simulator import Simulator, SimulatorSettings
from devstack.stack import Stack
from ingest.settings import IngestSettings
from orchestrator.domain.movements import Kind, State, Subscription, classify
from orchestrator.service_layer.analytics import payment_of

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
RATES = SimulatorSettings().history_rates()


def accounts(n: int) -> list[Account]:
    profiles = ("healthy", "slipping", "churning")
    plans = list(RATES.plan_mrr)
    return [Account(f"h-{i:04d}", profiles[i % 3], plans[i % len(plans)]) for i in range(n)]


def history(n: int = 200, seed: int = 7, rates: HistoryRates = RATES) -> History:
    return generate(accounts(n), now=NOW, rates=rates, rng=random.Random(seed))


def replay(found: History) -> tuple[Counter[Kind], dict[str, Subscription]]:
    """The events through the orchestrator's classifier, as the analytics consumer does."""
    kinds: Counter[Kind] = Counter()
    subscriptions: dict[str, Subscription] = {}
    for raw in found.events:
        event = event_adapter.validate_python(raw)
        assert isinstance(event, PaymentEvent)
        before = subscriptions.get(event.customer_id)
        done = classify(event.customer_id, payment_of(event), before, default_currency="EUR")
        assert done is not None, raw
        if done.movement is not None:
            kinds[done.movement.kind] += 1
        s = done.state
        subscriptions[event.customer_id] = Subscription(
            s.state, s.mrr, s.plan, s.currency, s.mrr_when_cancelled
        )
    return kinds, subscriptions


def test_the_history_covers_the_months_before_now_s() -> None:
    found = history()
    # The month before the history (the existing customers' starts), then four months.
    assert found.months() == ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]
    times = [datetime.fromisoformat(e["occurred_at"]) for e in found.events]
    assert times == sorted(times)
    assert min(times) >= datetime(2026, 7, 1, tzinfo=UTC)
    assert max(times) < datetime(2026, 12, 1, tzinfo=UTC)
    assert NOW - min(times) <= span(RATES)
    per_month = Counter(e["occurred_at"][:7] for e in found.events)
    assert all(per_month[m] >= 10 for m in found.months()), per_month


def test_every_account_starts_once_and_changes_follow_the_rates() -> None:
    found = history()
    types = Counter(e["type"] for e in found.events)
    starts = Counter(e["customer_id"] for e in found.events if e["type"] == "subscription_started")
    assert set(starts.values()) == {1} and len(starts) == 200
    existing = sum(
        1
        for e in found.events
        if e["type"] == "subscription_started" and e["occurred_at"] < "2026-08"
    )
    assert 70 <= existing <= 130  # existing_share 0.5 of 200
    # 200 accounts, about 150 live a month for 4 months: a few % each.
    assert 15 <= types["subscription_upgraded"] <= 70, types
    assert 5 <= types["subscription_downgraded"] <= 40, types
    assert 40 <= types["subscription_cancelled"] <= 110, types
    assert 2 <= types["subscription_reactivated"] <= 30, types
    churning = {a.customer_id for a in accounts(200) if a.profile == "churning"}
    cancelled = [e["customer_id"] for e in found.events if e["type"] == "subscription_cancelled"]
    assert sum(c in churning for c in cancelled) > len(cancelled) / 2  # the churning profile's 0.2


def test_the_classifier_sees_every_kind_of_movement_and_the_final_states() -> None:
    found = history()
    kinds, subscriptions = replay(found)
    assert set(kinds) == set(Kind)
    assert kinds[Kind.NEW] == 200
    for cid, sub in subscriptions.items():
        assert (sub.state is State.CANCELLED) == (cid in found.cancelled), cid
        assert sub.plan == found.plans[cid]
        if sub.state is not State.CANCELLED:
            assert sub.mrr == Decimal(str(RATES.plan_mrr[sub.plan])).quantize(Decimal("0.01"))


def test_a_seed_gives_the_same_history_event_ids_included() -> None:
    assert history(seed=11).events == history(seed=11).events
    assert history(seed=11).events != history(seed=12).events


def test_the_rates_come_from_the_settings() -> None:
    assert history(rates=replace(RATES, months=0)).events == []
    assert span(replace(RATES, months=0)) == timedelta(0)
    quiet = replace(RATES, cancel={}, upgrade=0.0, downgrade=0.0)
    assert {e["type"] for e in history(rates=quiet).events} == {"subscription_started"}
    two = history(rates=replace(RATES, months=2))
    assert two.months() == ["2026-09", "2026-10", "2026-11"]
    with pytest.raises(ValueError, match="plan_mrr"):
        generate([Account("x", "healthy", "gold")], now=NOW, rates=RATES, rng=random.Random(1))


def test_make_run_lets_ingest_admit_the_history(tmp_path: Path) -> None:
    stack = Stack(
        root=tmp_path, database_url="postgresql+asyncpg://u@/db", ingest_max_event_age=span(RATES)
    )
    env = stack.env()
    admitted = IngestSettings.model_validate(
        {"max_event_age": env["TENURE_INGEST_MAX_EVENT_AGE"], "api_key": "k"}
    ).max_event_age
    assert admitted >= span(RATES) > timedelta(days=120)
    assert "TENURE_INGEST_MAX_EVENT_AGE" not in Stack(root=tmp_path, database_url="x").env()


async def test_the_simulator_posts_the_history_then_lives_on_from_it() -> None:
    posted: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(202)

    settings = SimulatorSettings(customers=30, duration_s=0.01, tick_s=0.01)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://ingest"
    ) as client:
        sim = Simulator(settings, FakeClock(NOW), client, random.Random(settings.seed))
        await sim.run(asyncio.Event())
    payments = [e for e in posted if e["kind"] == "payment"]
    months = {str(e["occurred_at"])[:7] for e in payments}
    assert {"2026-08", "2026-09", "2026-10", "2026-11"} <= months
    starts = [e for e in payments if e["type"] == "subscription_started"]
    assert len(starts) == 30  # the history's, none again at start-up
    cancelled = {c.customer_id for c in sim.customers if c.cancelled}
    last_type = {
        e["customer_id"]: e["type"] for e in payments if e["type"].startswith("subscription_")
    }
    assert cancelled == {c for c, t in last_type.items() if t == "subscription_cancelled"}
