"""A scripted month (November 2026) of payment events, profiles and scores, with the
figures docs/domain.md section 6 gives for it, worked out by hand.

October: c1 (basic 100 EUR), c2 (pro 200), c3 (basic 100), c4 (team 300) and c5 (basic
50 USD) start; c6 (started in September at 100) cancels. November: c1 upgrades to 150
(+50), c2 downgrades to 150 (-50), c3 cancels (-100), c4 cancels (-300) and comes back
(+300), c6 comes back at 120, c7 starts at 80 and upgrades to 100 (+20), c5 upgrades to
70 USD (+20). December: c2 cancels (outside the month).

EUR: start 700 (c1-c4); new 80; reactivation 420; expansion 70; contraction 50; churned
400; end 820 (= 700 + 80 + 420 + 70 - 50 - 400). NRR 320 / 700, GRR 250 / 700,
expansion rate 0.1, average upgrade 35.00. USD: start 50, expansion 20, end 70, NRR
1.4, GRR 1.0, expansion rate 0.4, average upgrade 20.00.

Customers live at the start: c1-c5 (5); lost (live at the start, cancelled at the end):
c3 (1), so churn 0.2 a month, 1 - 0.8^12 a year; upgraded among them: c1, c5 (upsell
conversion 0.4); first upgrades in November: c1 36 days after its start, c5 29, c7 22
(median 29).

Beside the month, in September, two customers whose upgrades average half a cent
(``HALF_CENT``: 49.50 and 49.51 EUR, 49.505, which rounds to 49.51), both gone again by
its end, so that no later figure changes.

The profiles and scores of c1-c8 (``SCORES``; c8 has MRR in its profile only, and no
currency anywhere: the default currency's) and a playbook's November journeys
(``playbook_rows``) go with it. :func:`scripted_month` loads all of it into a database
through the orchestrator's consumers and opens the operator API over it: the one set-up
of test_portfolio_api.py, test_portfolio_dashboard.py and test_report.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from common.apikeys import KeyCache, KeyRepository, generate
from common.clock import FakeClock
from common.db import create_engine
from common.kafka import (
    DeadLetters,
    KafkaPublisher,
    Sequential,
    ensure_topics,
    make_consumer,
    run_consumer,
)
from common.messages import ScoreSnapshot, SignalExplanation
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.analytics import analytics_handler
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.consumers import ROUTES, router
from orchestrator.entrypoints.deps import Deps
from orchestrator.settings import OrchestratorSettings

PREFIX = "pm-"
C = PREFIX
AS_OF = datetime(2026, 12, 3, tzinfo=UTC)  # the scores' time and the API's clock


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 9, 0, tzinfo=UTC)


def pay(n: int, customer: str, type_: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{PREFIX}pay-{n:02d}",
        "customer_id": f"{PREFIX}{customer}",
        "occurred_at": when.isoformat(),
        "kind": "payment",
        "type": type_,
        **fields,
    }


EUR = {"currency": "EUR"}
PAYMENTS = [
    pay(1, "c6", "subscription_started", at(9, 1), plan="basic", mrr_after=100, **EUR),
    pay(2, "c1", "subscription_started", at(10, 5), plan="basic", mrr_after=100, **EUR),
    pay(3, "c2", "subscription_started", at(10, 10), plan="pro", mrr_after=200, **EUR),
    pay(4, "c3", "subscription_started", at(10, 12), plan="basic", mrr_after=100, **EUR),
    pay(5, "c4", "subscription_started", at(10, 15), plan="team", mrr_after=300, **EUR),
    pay(6, "c5", "subscription_started", at(10, 20), plan="basic", mrr_after=50, currency="USD"),
    pay(7, "c6", "subscription_cancelled", at(10, 25), **EUR),
    pay(8, "c1", "invoice_paid", at(11, 1), invoice_id="i-1", amount=100, **EUR),
    pay(9, "c7", "subscription_started", at(11, 3), plan="basic", mrr_after=80, **EUR),
    pay(10, "c4", "subscription_cancelled", at(11, 5), **EUR),
    pay(11, "c6", "subscription_reactivated", at(11, 8), plan="basic", mrr_after=120, **EUR),
    pay(12, "c1", "subscription_upgraded", at(11, 10), plan="pro", mrr_before=100, mrr_after=150),
    pay(13, "c2", "subscription_downgraded", at(11, 12), plan="team", mrr_after=150, **EUR),
    pay(14, "c3", "subscription_cancelled", at(11, 15), **EUR),
    pay(15, "c5", "subscription_upgraded", at(11, 18), plan="pro", mrr_after=70, currency="USD"),
    pay(16, "c4", "subscription_reactivated", at(11, 20), **EUR),  # restores its 300
    pay(17, "c7", "subscription_upgraded", at(11, 25), plan="pro", amount=20, **EUR),
    pay(18, "c2", "subscription_cancelled", at(12, 2), **EUR),
]

# September: two upgrades of 49.50 and 49.51 EUR, on average 49.505 (49.51 to the cent,
# halves away from zero); both customers have cancelled by 21 September.
HALF_CENT = [
    pay(81, "h1", "subscription_started", at(9, 2), plan="basic", mrr_after=100, **EUR),
    pay(82, "h2", "subscription_started", at(9, 3), plan="basic", mrr_after=100, **EUR),
    pay(83, "h1", "subscription_upgraded", at(9, 10), plan="pro", mrr_after=149.50, **EUR),
    pay(84, "h2", "subscription_upgraded", at(9, 11), plan="pro", mrr_after=149.51, **EUR),
    pay(85, "h1", "subscription_cancelled", at(9, 20), **EUR),
    pay(86, "h2", "subscription_cancelled", at(9, 21), **EUR),
]
HALF_CENT_MOVEMENTS = 6  # two new, two expansions, two churns
SEPTEMBER_AVERAGE_UPGRADE = "49.51"  # 99.01 / 2 = 49.505

# (event, kind, amount, currency, plan before, plan after)
D = Decimal
MOVEMENTS = {
    ("pay-01", "new", D(100), "EUR", None, "basic"),
    ("pay-02", "new", D(100), "EUR", None, "basic"),
    ("pay-03", "new", D(200), "EUR", None, "pro"),
    ("pay-04", "new", D(100), "EUR", None, "basic"),
    ("pay-05", "new", D(300), "EUR", None, "team"),
    ("pay-06", "new", D(50), "USD", None, "basic"),
    ("pay-07", "churn", D(100), "EUR", "basic", "basic"),
    ("pay-09", "new", D(80), "EUR", None, "basic"),
    ("pay-10", "churn", D(300), "EUR", "team", "team"),
    ("pay-11", "reactivation", D(120), "EUR", "basic", "basic"),
    ("pay-12", "expansion", D(50), "EUR", "basic", "pro"),
    ("pay-13", "contraction", D(50), "EUR", "pro", "team"),
    ("pay-14", "churn", D(100), "EUR", "basic", "basic"),
    ("pay-15", "expansion", D(20), "USD", "basic", "pro"),
    ("pay-16", "reactivation", D(300), "EUR", "team", "team"),
    ("pay-17", "expansion", D(20), "EUR", "basic", "pro"),
    ("pay-18", "churn", D(150), "EUR", "team", "team"),
}

NOVEMBER = {
    "EUR": {
        "mrr_start": "700.00",
        "mrr_end": "820.00",
        "new": "80.00",
        "expansion": "70.00",
        "contraction": "50.00",
        "churned": "400.00",
        "reactivation": "420.00",
        "upgrades": 2,
        "nrr": 320 / 700,
        "grr": 250 / 700,
        "expansion_rate": 0.1,
        "average_upgrade_value": "35.00",
    },
    "USD": {
        "mrr_start": "50.00",
        "mrr_end": "70.00",
        "new": "0.00",
        "expansion": "20.00",
        "contraction": "0.00",
        "churned": "0.00",
        "reactivation": "0.00",
        "upgrades": 1,
        "nrr": 1.4,
        "grr": 1.0,
        "expansion_rate": 0.4,
        "average_upgrade_value": "20.00",
    },
}
NOVEMBER_CUSTOMERS = {
    "at_start": 5,
    "lost": 1,
    "upgraded": 2,
    "churn_rate": 0.2,
    "annual_churn": 1 - 0.8**12,
    "upsell_conversion": 0.4,
    "median_days_to_upsell": 29.0,
}

# plan at the start of November -> (customers live then, of those cancelled at its end)
NOVEMBER_BY_PLAN = {"basic": (3, 1), "pro": (1, 0), "team": (1, 0)}


# --- the customers' profiles and scores ----------------------------------------------------


def sig(name: str, contribution: float) -> SignalExplanation:
    return SignalExplanation(
        name=name, group="engagement", value=1.0, threshold=0.5, contribution=contribution
    )


# customer: churn probability, tier, health, band, CLV, segment, signals, expansion signals
SCORES: dict[str, tuple[Any, ...]] = {
    "c1": (0.30, "medium", 60, "medium", 2000, "medium", [("low_logins", 20), ("tickets", 10)]),
    "c2": (0.95, "high", 10, "at_risk", 1000, "medium", []),
    "c4": (
        0.80,
        "high",
        20,
        "at_risk",
        900,
        "low",
        [("payment_failed", 30), ("low_logins", 25), ("nps_detractor", 15), ("competitor", 5)],
    ),
    "c5": (0.50, "medium", 45, "low", 15000, "high", [("low_logins", 20)]),
    "c6": (0.10, "low", 85, "high", 3000, "medium", []),
    "c7": (0.60, "high", 35, "low", None, None, [("low_logins", 22)]),
    "c8": (0.90, "high", None, None, 500, "low", [("inactive", 40)]),
}
PROFILED = ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8")


def snapshot(customer: str) -> ScoreSnapshot:
    p, tier, health, band, clv, segment, signals = SCORES[customer]
    return ScoreSnapshot(
        customer_id=C + customer,
        as_of=AS_OF,
        risk_score=p * 100,
        tier=tier,
        churn_probability=p,
        signals=tuple(sig(n, c) for n, c in signals),
        expansion_signals=(sig("power_user", 0),) if customer == "c6" else (),
        health_score=health,
        health_band=band,
        clv=clv,
        clv_segment=segment,
    )


def profile(customer: str) -> dict[str, Any]:
    # c8: no payment, MRR in its profile and no currency (the default currency's).
    extra = {"plan": "basic", "mrr": 40.0} if customer == "c8" else {}
    csm = "csm-a" if customer in ("c1", "c4") else "csm-b"
    return {
        "event_id": f"{C}profile-{customer}",
        "customer_id": C + customer,
        "occurred_at": at(9, 1).isoformat(),
        "kind": "profile",
        "type": "identify",
        "email": f"{customer}@example.com",
        "owner_csm": {"id": csm, "email": f"{csm}@example.com"},
        **extra,
    }


# --- loading it ----------------------------------------------------------------------------


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def consume(settings: CommonSettings, consumers: Deps) -> None:
    """Publish the profiles, payments (the month's and ``HALF_CENT``) and scores; run the
    orchestrator's journey and analytics consumers until all are in the database."""
    payments = [*PAYMENTS, *HALF_CENT]
    paying = {event["customer_id"] for event in payments}
    async with KafkaPublisher(settings, client_id="it-portfolio-month") as publisher:
        for customer in PROFILED:
            await publisher.publish(
                topic_name(Topic.EVENTS_PROFILE, settings.topic_prefix),
                C + customer,
                profile(customer),
            )
        for event in payments:
            topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
            await publisher.publish(topic, event["customer_id"], event)
        for customer in SCORES:
            topic = topic_name(Topic.SCORES, settings.topic_prefix)
            await publisher.publish(topic, C + customer, snapshot(customer))
        journeys = make_consumer(settings, ROUTES, group_id="it-pm-journeys")
        analytics = make_consumer(settings, [Topic.EVENTS_PAYMENT], group_id="it-pm-analytics")
        stop = asyncio.Event()
        loops = []
        for consumer, handler in ((journeys, router(consumers)), (analytics, None)):
            await consumer.start()
            loops.append(
                asyncio.create_task(
                    run_consumer(
                        consumer,
                        handler or analytics_handler(consumers),
                        DeadLetters(publisher, consumer_name="it"),
                        stop=stop,
                        name="it",
                        strategy=Sequential(),
                    )
                )
            )
        engine = consumers.engine
        try:
            for _ in range(300):
                if (
                    await count(engine, "mrr_movements") == len(MOVEMENTS) + HALF_CENT_MOVEMENTS
                    and await count(engine, "scores") == len(SCORES)
                    and await count(engine, "customers") == len(PROFILED)
                    and await count(engine, "customer_state") == len(paying)
                ):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*loops)
            await journeys.stop()
            await analytics.stop()


async def playbook_rows(engine: AsyncEngine) -> None:
    """upsell_results in November: 10 treatment journeys (3 converted, 50 EUR each, one
    email each) and 10 control journeys (1 converted, 20 EUR); one treatment journey
    started in October and one live in December (c1, in flight) that November leaves out."""
    rows: list[tuple[str, str, str, datetime, datetime | None, str]] = []
    for n in range(10):
        rows.append((f"{C}jt{n}", f"{C}t{n}", "treatment", at(11, 2 + n), at(11, 20), "completed"))
        rows.append((f"{C}jc{n}", f"{C}k{n}", "control", at(11, 2 + n), at(11, 20), "completed"))
    rows.append((f"{C}jold", f"{C}t0", "treatment", at(10, 2), at(10, 20), "completed"))
    rows.append((f"{C}jlive", f"{C}c1", "treatment", at(12, 1), None, "active"))
    async with engine.begin() as conn:
        for journey, customer, arm, started, ended, state in rows:
            await conn.execute(
                sa.text(
                    "INSERT INTO journeys (journey_id, customer_id, playbook, state, started_at,"
                    " ended_at, arm) VALUES (:j, :c, 'upsell_results', :s, :a, :e, :arm)"
                ),
                {"j": journey, "c": customer, "s": state, "a": started, "e": ended, "arm": arm},
            )
            if arm == "treatment":
                await conn.execute(
                    sa.text(
                        "INSERT INTO journey_transitions (journey_id, from_state, to_state,"
                        " event, at, detail) VALUES (:j, 'active', 'active', 'step_sent', :a,"
                        ' \'{"step": "first_month_free"}\'::jsonb)'
                    ),
                    {"j": journey, "a": started},
                )
        converted = [(f"{C}jt{n}", f"{C}t{n}", "treatment", 50) for n in range(3)]
        converted += [(f"{C}jold", f"{C}t0", "treatment", 70), (f"{C}jc0", f"{C}k0", "control", 20)]
        for n, (journey, customer, arm, revenue) in enumerate(converted):
            await conn.execute(
                sa.text(
                    "INSERT INTO attributions (event_id, playbook, journey_id, customer_id, arm,"
                    " event_type, revenue, currency, converted_at) VALUES (:e, 'upsell_results',"
                    " :j, :c, :arm, 'subscription_upgraded', :r, 'EUR', :at)"
                ),
                {
                    "e": f"{C}conv-{n}",
                    "j": journey,
                    "c": customer,
                    "arm": arm,
                    "r": revenue,
                    "at": at(11, 21),
                },
            )


@asynccontextmanager
async def operator_api(
    engine: AsyncEngine, settings: OrchestratorSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The orchestrator's operator API over ``engine`` (the shipped playbooks, the clock at
    ``AS_OF``, ``settings`` or the defaults), in process, with a new ``operator:read`` key
    sent on every request."""
    config = settings or OrchestratorSettings()
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=FakeClock(AS_OF),
        topic_prefix="unused.",
        rules=config.rules(),
        default_currency=config.default_currency,
    )
    repository = KeyRepository(engine)
    full, new = generate(f"reader-{uuid.uuid4().hex[:6]}", ["operator:read"])
    await repository.create(new)
    cache = KeyCache(repository)
    await cache.refresh()
    transport = httpx.ASGITransport(app=create_api(deps, settings=config, authenticator=cache))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-Key": full}
    ) as client:
        yield client


@dataclass(frozen=True)
class Loaded:
    engine: AsyncEngine  # the loaded database
    api: httpx.AsyncClient  # the operator API over it (operator_api), default settings


@asynccontextmanager
async def scripted_month(
    database_url: str, common: CommonSettings, *, name: str
) -> AsyncIterator[Loaded]:
    """The scripted month loaded into ``database_url`` (empty, migrated) by the
    orchestrator's consumers (the journey consumer without playbooks, so that it starts
    no journey, and the analytics consumer) on topics of their own (``it-<name>-...``),
    and the playbook's November journeys written as rows; then the operator API over it.
    The engine is disposed on the way out."""
    settings = common.model_copy(
        update={
            "database_url": database_url,
            "topic_prefix": f"it-{name}-{uuid.uuid4().hex[:6]}.",
        }
    )
    await ensure_topics(settings)
    engine = create_engine(database_url)
    try:
        quiet = Deps(
            engine=engine,
            playbooks={},
            clock=FakeClock(AS_OF),
            topic_prefix=settings.topic_prefix,
        )
        await consume(settings, quiet)
        await playbook_rows(engine)
        async with operator_api(engine) as client:
            yield Loaded(engine, client)
    finally:
        await engine.dispose()
