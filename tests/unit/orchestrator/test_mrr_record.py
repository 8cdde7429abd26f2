"""Recording MRR movements (``service_layer.analytics.record_payment``) on the in-memory
ledger: the rows depend on the events, not on the order they arrive in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.clock import FakeClock
from common.events import PaymentEvent
from orchestrator.adapters.memory import MemoryStores
from orchestrator.domain.movements import Kind
from orchestrator.service_layer.analytics import record_payment
from orchestrator.service_layer.context import Context
from orchestrator.settings import OrchestratorSettings

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
CONTEXT = Context(playbooks={}, rules=OrchestratorSettings().rules(), clock=FakeClock(T0))


def event(n: int, type_: str, day: int, **fields: Any) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"e{n:02d}",
        customer_id="c1",
        occurred_at=T0 + timedelta(days=day),
        kind="payment",
        type=type_,  # type: ignore[arg-type]
        **fields,
    )


def rows(stores: MemoryStores) -> tuple[dict[str, Any], dict[str, Any]]:
    return dict(stores.tables.subscriptions), dict(stores.tables.movements)


def record_all(events: list[PaymentEvent]) -> MemoryStores:
    stores = MemoryStores()

    async def run() -> None:
        for e in events:
            await record_payment(e, stores=stores, context=CONTEXT)

    asyncio.run(run())
    return stores


def test_a_late_start_re_derives_what_followed_it() -> None:
    upgrade = event(2, "subscription_upgraded", 5, mrr_after=150.0)
    cancel = event(3, "subscription_cancelled", 9)
    start = event(1, "subscription_started", 1, plan="basic", mrr_after=100.0)
    stores = record_all([upgrade, cancel, start])  # the start arrives last
    moved = {m.event_id: (m.kind, m.amount) for m in stores.tables.movements.values()}
    assert moved == {
        "e01": (Kind.NEW, Decimal(100)),
        "e02": (Kind.EXPANSION, Decimal(50)),
        "e03": (Kind.CHURN, Decimal(150)),
    }
    assert rows(stores) == rows(record_all([start, upgrade, cancel]))


def test_invoices_are_not_logged_and_a_replay_changes_nothing() -> None:
    events = [
        event(1, "subscription_started", 1, mrr_after=10.0),
        event(2, "invoice_paid", 2, amount=10.0),
    ]
    stores = record_all(events + events)
    assert list(stores.tables.subscription_log) == ["e01"]
    assert rows(stores) == rows(record_all(events))


TYPES = st.sampled_from(
    [
        "subscription_started",
        "subscription_upgraded",
        "subscription_downgraded",
        "subscription_cancelled",
        "subscription_reactivated",
        "invoice_paid",
    ]
)
MONEY = st.none() | st.integers(0, 500).map(float)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(TYPES, st.integers(0, 20), MONEY, MONEY), min_size=1, max_size=8),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order_gives_the_same_rows(
    spec: list[tuple[str, int, float | None, float | None]], rng: Any
) -> None:
    events = [
        event(n, type_, day, amount=amount, mrr_after=after)
        for n, (type_, day, amount, after) in enumerate(spec)
    ]
    in_order = rows(record_all(sorted(events, key=lambda e: (e.occurred_at, e.event_id))))
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert rows(record_all(shuffled)) == in_order
