"""``GET /v1/customers`` and ``GET /v1/metrics/portfolio`` on the real broker and PostgreSQL.

The scripted month (tests/integration/portfolio_month.py) and its customers' profiles and
scores are published to their topics and consumed by the orchestrator's consumers (the
journey consumer, without playbooks so that it starts no journey, and the analytics
consumer); a playbook's November journeys and attributions are written as rows. The
operator API, with a real key, answers with the figures worked out by hand.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

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
from devstack.stack import Stack
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.analytics import analytics_handler
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.consumers import ROUTES, router
from orchestrator.entrypoints.deps import Deps
from tests.integration import portfolio_month as M

AS_OF = datetime(2026, 12, 3, tzinfo=UTC)
C = M.PREFIX


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
    extra = {"plan": "basic", "mrr": 40.0, "currency": "EUR"} if customer == "c8" else {}
    csm = "csm-a" if customer in ("c1", "c4") else "csm-b"
    return {
        "event_id": f"{C}profile-{customer}",
        "customer_id": C + customer,
        "occurred_at": M.at(9, 1).isoformat(),
        "kind": "profile",
        "type": "identify",
        "email": f"{customer}@example.com",
        "owner_csm": {"id": csm, "email": f"{csm}@example.com"},
        **extra,
    }


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_portfolio_api")


async def count(engine: Any, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def consume(settings: CommonSettings, consumers: Deps) -> None:
    async with KafkaPublisher(settings, client_id="it-portfolio-api") as publisher:
        for customer in ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"):
            await publisher.publish(
                topic_name(Topic.EVENTS_PROFILE, settings.topic_prefix),
                C + customer,
                profile(customer),
            )
        for event in M.PAYMENTS:
            topic = topic_name(Topic.EVENTS_PAYMENT, settings.topic_prefix)
            await publisher.publish(topic, event["customer_id"], event)
        for customer in SCORES:
            topic = topic_name(Topic.SCORES, settings.topic_prefix)
            await publisher.publish(topic, C + customer, snapshot(customer))
        journeys = make_consumer(settings, ROUTES, group_id="it-pa-journeys")
        analytics = make_consumer(settings, [Topic.EVENTS_PAYMENT], group_id="it-pa-analytics")
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
                    await count(engine, "mrr_movements") == len(M.MOVEMENTS)
                    and await count(engine, "scores") == len(SCORES)
                    and await count(engine, "customers") == 8
                    and await count(engine, "customer_state") == 7
                ):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*loops)
            await journeys.stop()
            await analytics.stop()


async def playbook_rows(engine: Any) -> None:
    """upsell_results in November: 10 treatment journeys (3 converted, 50 EUR each, one
    email each) and 10 control journeys (1 converted, 20 EUR); one treatment journey
    started in October and one live in December (c1, in flight) that November leaves out."""
    rows: list[tuple[str, str, str, datetime, datetime | None, str]] = []
    for n in range(10):
        rows.append(
            (f"{C}jt{n}", f"{C}t{n}", "treatment", M.at(11, 2 + n), M.at(11, 20), "completed")
        )
        rows.append(
            (f"{C}jc{n}", f"{C}k{n}", "control", M.at(11, 2 + n), M.at(11, 20), "completed")
        )
    rows.append((f"{C}jold", f"{C}t0", "treatment", M.at(10, 2), M.at(10, 20), "completed"))
    rows.append((f"{C}jlive", f"{C}c1", "treatment", M.at(12, 1), None, "active"))
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
                    "at": M.at(11, 21),
                },
            )


@pytest.fixture(scope="module")
async def api(database_url: str, common_settings: CommonSettings):
    settings = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-pa-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    engine = create_engine(database_url)
    clock = FakeClock(AS_OF)
    # Consumers without playbooks start no journey; the API reports on the shipped ones.
    quiet = Deps(engine=engine, playbooks={}, clock=clock, topic_prefix=settings.topic_prefix)
    await consume(settings, quiet)
    await playbook_rows(engine)
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=clock,
        topic_prefix=settings.topic_prefix,
    )
    repository = KeyRepository(engine)
    full, new = generate("reader", ["operator:read"])
    await repository.create(new)
    cache = KeyCache(repository)
    await cache.refresh()
    transport = httpx.ASGITransport(app=create_api(deps, authenticator=cache))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-Key": full}
    ) as client:
        yield client
    await engine.dispose()


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/v1/customers", params=params)
    assert response.status_code == 200, response.text
    return [row["customer_id"].removeprefix(C) for row in response.json()["customers"]]


async def test_the_at_risk_list_sorts_by_churn_mrr_at_risk_clv_and_health(api) -> None:
    assert await listed(api) == ["c8", "c4", "c7", "c5", "c1", "c6"]
    assert await listed(api, sort="mrr_at_risk") == ["c4", "c7", "c1", "c8", "c5", "c6"]
    assert await listed(api, sort="clv") == ["c5", "c6", "c1", "c4", "c8", "c7"]
    assert await listed(api, sort="health") == ["c4", "c7", "c5", "c1", "c6", "c8"]
    assert await listed(api, sort="churn_probability", order="asc") == [
        "c6",
        "c1",
        "c5",
        "c7",
        "c4",
        "c8",
    ]
    assert await listed(api, include_cancelled="true") == ["c2", "c8", "c4", "c7", "c5", "c1", "c6"]


async def test_a_row_has_mrr_at_risk_and_the_top_factors_of_its_score(api) -> None:
    response = await api.get("/v1/customers", params={"sort": "mrr_at_risk", "limit": 1})
    [row] = response.json()["customers"]
    assert {k: row[k] for k in ("customer_id", "mrr", "currency", "mrr_at_risk", "plan")} == {
        "customer_id": f"{C}c4",
        "mrr": 300.0,
        "currency": "EUR",
        "mrr_at_risk": 240.0,
        "plan": "team",
    }
    assert (row["tier"], row["health_band"], row["clv_segment"], row["owner_csm_id"]) == (
        "high",
        "at_risk",
        "low",
        "csm-a",
    )
    assert [(f["name"], f["contribution"]) for f in row["top_factors"]] == [
        ("payment_failed", 30),
        ("low_logins", 25),
        ("nps_detractor", 15),
    ]
    assert row["subscription"] == "reactivated"
    c8 = (await api.get("/v1/customers", params={"limit": 1})).json()["customers"][0]
    assert (c8["mrr"], c8["currency"], c8["mrr_at_risk"]) == (40.0, "EUR", 36.0)  # its profile


async def test_the_filters(api) -> None:
    assert await listed(api, risk_tier="high") == ["c8", "c4", "c7"]
    assert await listed(api, health_band=["low", "high"]) == ["c7", "c5", "c6"]
    assert await listed(api, clv_segment="low") == ["c8", "c4"]
    assert await listed(api, plan="pro") == ["c7", "c5", "c1"]
    assert await listed(api, owner_csm="csm-a") == ["c4", "c1"]
    assert await listed(api, signal="low_logins") == ["c4", "c7", "c5", "c1"]
    assert await listed(api, signal="power_user") == ["c6"]
    assert await listed(api, playbook="upsell_results") == ["c1"]
    assert await listed(api, currency="USD") == ["c5"]
    assert await listed(api, risk_tier="high", plan="pro") == ["c7"]
    response = await api.get("/v1/customers", params={"playbook": "upsell_results"})
    assert response.json()["customers"][0]["playbooks_in_flight"] == ["upsell_results"]


async def test_cursor_pagination_walks_the_list_once(api) -> None:
    for sort in ("churn_probability", "mrr_at_risk", "clv", "health"):
        whole = await listed(api, sort=sort)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await api.get("/v1/customers", params=params)).json()
            seen += [row["customer_id"].removeprefix(C) for row in body["customers"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == whole


async def test_bad_list_parameters_get_422_naming_them(api) -> None:
    first = (await api.get("/v1/customers", params={"limit": 2})).json()["next_cursor"]
    cases = {
        "risk_tier": {"risk_tier": "extreme"},
        "sort": {"sort": "revenue"},
        "cursor": {"cursor": "not-a-cursor"},
        "limit": {"limit": 0},
    }
    for name, params in cases.items():
        response = await api.get("/v1/customers", params=params)
        assert response.status_code == 422, (name, response.text)
        assert name in response.text
    response = await api.get("/v1/customers", params={"cursor": first, "sort": "clv"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert "sorted by churn_probability desc" in error["msg"]
    assert (await api.get("/v1/customers", headers={"X-API-Key": "nope"})).status_code == 401


async def test_the_portfolio_month(api) -> None:
    response = await api.get("/v1/metrics/portfolio", params={"period": "2026-11"})
    assert response.status_code == 200, response.text
    [month] = response.json()["months"]
    assert month["period"] == "2026-11"
    for currency, expected in M.NOVEMBER.items():
        got = month["currencies"][currency]
        for name, value in expected.items():
            wanted = float(value) if isinstance(value, str) else value
            assert got[name] == pytest.approx(wanted, abs=1e-9), (currency, name)
    for name, value in M.NOVEMBER_CUSTOMERS.items():
        assert month["customers"][name] == pytest.approx(value, abs=1e-9), name
    assert set(month["currencies"]) == {"EUR", "USD"}
    by_plan = {p: (c["at_start"], c["lost"]) for p, c in month["churn_by_plan"].items()}
    assert by_plan == M.NOVEMBER_BY_PLAN
    assert month["churn_by_plan"]["basic"]["churn_rate"] == pytest.approx(1 / 3)
    assert month["churn_by_plan"]["basic"]["annual_churn"] == pytest.approx(1 - (2 / 3) ** 12)


async def test_a_playbook_s_month_against_its_holdout(api) -> None:
    body = (await api.get("/v1/metrics/portfolio", params={"period": "2026-11"})).json()
    [month] = body["months"]
    assert list(month["playbooks"]) == ["upsell_results"]
    got = month["playbooks"]["upsell_results"]
    assert {k: got[k] for k in ("journeys", "control_journeys", "conversions")} == {
        "journeys": 10,
        "control_journeys": 10,
        "conversions": 3,
    }
    assert (got["conversion_rate"], got["control_conversion_rate"]) == (0.3, 0.1)
    # 0.2 +- 1.959964 * sqrt(.3 * .7 / 10 + .1 * .9 / 10) = 0.2 +- 0.339476
    uplift = got["uplift"]
    assert uplift["estimate"] == pytest.approx(0.2)
    assert (uplift["low"], uplift["high"]) == (
        pytest.approx(0.2 - 0.339476, abs=1e-6),
        pytest.approx(0.2 + 0.339476, abs=1e-6),
    )
    assert uplift["confidence"] == 0.95
    assert got["revenue"] == {"EUR": 150.0}
    assert got["incremental_revenue"] == {"EUR": 130.0}  # (150 / 10 - 20 / 10) x 10
    assert (got["messages_sent"], got["revenue_per_message"]) == (10, {"EUR": 15.0})
    october = (await api.get("/v1/metrics/portfolio", params={"period": "2026-10"})).json()
    upsell = october["months"][0]["playbooks"]["upsell_results"]
    assert (upsell["journeys"], upsell["revenue"], upsell["uplift"]) == (1, {"EUR": 70.0}, None)


async def test_months_from_to_and_average_clv(api) -> None:
    body = (
        await api.get("/v1/metrics/portfolio", params={"from": "2026-10", "to": "2026-12"})
    ).json()
    assert [m["period"] for m in body["months"]] == ["2026-10", "2026-11", "2026-12"]
    october, november, december = body["months"]
    assert october["currencies"]["EUR"]["mrr_end"] == november["currencies"]["EUR"]["mrr_start"]
    assert december["currencies"]["EUR"]["churned"] == 150.0  # c2, 2 December
    assert october["customers"]["at_start"] == 1  # c6, started in September
    clv = {
        cur: {g: (v["customers"], v["average_clv"]) for g, v in groups.items()}
        for cur, groups in body["clv_by_segment"].items()
    }
    assert clv == {"EUR": {"low": (2, 700.0), "medium": (3, 2000.0)}, "USD": {"high": (1, 15000.0)}}
    plans = {
        cur: {g: (v["customers"], v["average_clv"]) for g, v in groups.items()}
        for cur, groups in body["clv_by_plan"].items()
    }
    assert plans == {
        "EUR": {"basic": (2, 1750.0), "pro": (1, 2000.0), "team": (2, 950.0)},
        "USD": {"pro": (1, 15000.0)},
    }


async def test_bad_periods_get_422_naming_the_parameter(api) -> None:
    cases = [
        ({}, "period", "required"),
        ({"period": "2026-13"}, "period", "YYYY-MM"),
        ({"period": "2026-11", "from": "2026-10"}, "period", "not both"),
        ({"from": "2026-11", "to": "2026-10"}, "to", "before"),
        ({"from": "2020-01", "to": "2026-10"}, "to", "more than 36 months"),
        ({"to": "2026-10"}, "from", "required with to"),
    ]
    for params, named, why in cases:
        response = await api.get("/v1/metrics/portfolio", params=params)
        assert response.status_code == 422, (params, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", named] and why in error["msg"], (params, error)


async def test_the_dashboard_views_agree_with_the_api(api, database_url: str) -> None:
    """The SQL views a dashboard reads (migration 0010) give the API's November."""
    body = (await api.get("/v1/metrics/portfolio", params={"period": "2026-11"})).json()
    [month] = body["months"]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            waterfall = (
                (
                    await conn.execute(
                        sa.text(
                            "SELECT * FROM portfolio_mrr_monthly WHERE month_start = :m "
                            "ORDER BY currency"
                        ),
                        {"m": M.at(11, 1).replace(hour=0)},
                    )
                )
                .mappings()
                .all()
            )
            people = (
                (
                    await conn.execute(
                        sa.text("SELECT * FROM portfolio_customers_monthly WHERE month_start = :m"),
                        {"m": M.at(11, 1).replace(hour=0)},
                    )
                )
                .mappings()
                .one()
            )
            at_risk = (
                await conn.execute(
                    sa.text(
                        "SELECT customer_id, mrr_at_risk FROM portfolio_at_risk "
                        "WHERE subscription IS DISTINCT FROM 'cancelled' "
                        "ORDER BY mrr_at_risk DESC, customer_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [row["currency"] for row in waterfall] == ["EUR", "USD"]
    for row in waterfall:
        api_row = month["currencies"][row["currency"]]
        for name in ("mrr_start", "new", "reactivation", "expansion", "contraction", "churned"):
            assert float(row[name]) == api_row[name], (row["currency"], name)
        assert row["upgrades"] == api_row["upgrades"]
    assert (people["at_start"], people["lost"]) == (5, 1)
    assert [(c.removeprefix(C), float(v)) for c, v in at_risk] == [
        ("c4", 240.0),
        ("c7", 60.0),
        ("c1", 45.0),
        ("c8", 36.0),
        ("c5", 35.0),
        ("c6", 12.0),
    ]
