"""``GET /v1/customers`` and ``GET /v1/metrics/portfolio`` on the real broker and PostgreSQL.

The scripted month (tests/integration/portfolio_month.py) and its customers' profiles and
scores are published to their topics and consumed by the orchestrator's consumers (the
journey consumer, without playbooks so that it starts no journey, and the analytics
consumer); a playbook's November journeys and attributions are written as rows. The
operator API, with a real key, answers with the figures worked out by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.db import create_engine
from common.settings import CommonSettings
from devstack.stack import Stack
from tests.integration import portfolio_month as M

C = M.PREFIX


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_portfolio_api")


@pytest.fixture(scope="module")
async def api(
    database_url: str, common_settings: CommonSettings
) -> AsyncIterator[httpx.AsyncClient]:
    async with M.scripted_month(database_url, common_settings, name="pa") as loaded:
        yield loaded.api


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
    # MRR from its profile, which names no currency: the default currency's
    assert (c8["mrr"], c8["currency"], c8["mrr_at_risk"]) == (40.0, "EUR", 36.0)


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


async def test_a_half_cent_rounds_away_from_zero(api) -> None:
    """September's upgrades of 49.50 and 49.51 EUR average 49.505: 49.51, as the
    dashboard's round(numeric, 2) has it (half to even gave 49.50)."""
    body = (await api.get("/v1/metrics/portfolio", params={"period": "2026-09"})).json()
    eur = body["months"][0]["currencies"]["EUR"]
    assert (eur["expansion"], eur["upgrades"]) == (99.01, 2)
    assert eur["average_upgrade_value"] == float(M.SEPTEMBER_AVERAGE_UPGRADE) == 49.51


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
