"""The business dashboard's queries on the real PostgreSQL, as the read-only role.

The scripted month (tests/integration/portfolio_month.py) is consumed into the MRR record
by the orchestrator's consumers, as in test_portfolio_api.py. A login user is made a
member of ``tenure_analytics`` by deploy/postgres/analytics-login.sql (run with psql, as an
operator would), and every panel's SQL of deploy/grafana/dashboards/tenure-business.json,
its Grafana macros and variables replaced for November 2026, runs as that user: each
answers rows, and the figures are those GET /v1/metrics/portfolio and GET /v1/customers
answer, those of the domain's formulas over the API's counts
(``orchestrator.adapters.portfolio``) and the ones worked out by hand. The role reads no
table and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pgserver
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import create_engine
from common.kafka import ensure_topics
from common.settings import CommonSettings
from devstack.stack import Stack
from orchestrator import bootstrap
from orchestrator.adapters import portfolio as counts
from orchestrator.domain import portfolio as P
from orchestrator.domain.movements import Kind
from orchestrator.service_layer.portfolio import share_settings
from orchestrator.settings import OrchestratorSettings
from tests.integration import portfolio_month as M

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tenure-business.json"
LOGIN_SQL = ROOT / "deploy" / "postgres" / "analytics-login.sql"
PSQL = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
NOVEMBER = P.Month(2026, 11)
C = M.PREFIX


def panels() -> dict[str, str]:
    """Panel title (variables left in) -> its SQL."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        [target] = panel["targets"]
        found[panel["title"]] = target["rawSql"]
    return found


def grafana_sql(sql: str, *, month: P.Month, currency: str) -> str:
    """``sql`` as Grafana sends it for ``month`` as the time range and the variables."""
    start, end = month.start.isoformat(), (month.end - timedelta(seconds=1)).isoformat()
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    sql = sql.replace("$month", str(month)).replace("$currency", currency)
    assert "$" not in sql, f"a macro or variable left: {sql}"
    return sql


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_portfolio_dashboard")


@pytest.fixture(scope="module")
def reader_url(database_url: str) -> Iterator[str]:
    """A login user in the role tenure_analytics, made as docs/operations.md says."""
    url = make_url(database_url)
    user, password = f"it_grafana_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    env = {
        **os.environ,
        "PGHOST": str(url.query.get("host") or url.host),
        "PGPORT": str(url.port or 5432),
        "PGUSER": str(url.username),
        "PGDATABASE": str(url.database),
        "ANALYTICS_DB_USER": user,
        "ANALYTICS_DB_PASSWORD": password,
    }
    for _ in range(2):  # a second run finds the user and only sets its password again
        done = subprocess.run(
            [str(PSQL), "-X", "-q", "-f", str(LOGIN_SQL)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    without = {k: v for k, v in env.items() if k != "ANALYTICS_DB_USER"}
    refused = subprocess.run(
        [str(PSQL), "-X", "-q", "-f", str(LOGIN_SQL)],
        env=without,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "ANALYTICS_DB_USER is not set" in refused.stderr
    yield url.set(username=user, password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
async def month(database_url: str, common_settings: CommonSettings) -> AsyncIterator[M.Loaded]:
    """The scripted month in the record, and the playbook's November journeys."""
    async with M.scripted_month(database_url, common_settings, name="pd") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def loaded(month: M.Loaded) -> AsyncEngine:
    return month.engine


@pytest.fixture(scope="module")
async def api_month(month: M.Loaded) -> dict[str, Any]:
    """What GET /v1/metrics/portfolio and GET /v1/customers answer for November (EUR)."""
    portfolio = await month.api.get("/v1/metrics/portfolio", params={"period": str(NOVEMBER)})
    customers = await month.api.get(
        "/v1/customers", params={"sort": "mrr_at_risk", "currency": "EUR"}
    )
    assert portfolio.status_code == 200 and customers.status_code == 200
    [found] = portfolio.json()["months"]
    return {"month": found, "customers": customers.json()["customers"]}


@pytest.fixture(scope="module")
async def reader(loaded: AsyncEngine, reader_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(reader_url, pool_size=1)
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(sa.text(sql))).mappings().all()]


def f(value: Any) -> float | None:
    return None if value is None else float(value)


async def test_every_panel_answers_the_month_as_the_read_only_role(
    reader: AsyncEngine, api_month: dict[str, Any]
) -> None:
    got = {}
    for title, sql in panels().items():
        for currency in ("EUR", "USD"):
            found = await rows(reader, grafana_sql(sql, month=NOVEMBER, currency=currency))
            got[title.replace("$currency", currency)] = found
        assert got[title.replace("$currency", "EUR")], f"{title}: no rows for November"
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    picks = {
        v["name"]: [next(iter(r.values())) for r in await rows(reader, v["query"])]
        for v in variables
    }
    assert picks["currency"] == ["EUR", "USD"] and str(NOVEMBER) in picks["month"]
    assert set(panels()) == {
        "MRR waterfall ($month, $currency)",
        "MRR movements by month ($currency)",
        "NRR and GRR by month ($currency)",
        "Customer churn by month",
        "Churn by plan ($month)",
        "MRR at risk now by tier ($currency)",
        "At-risk customers ($currency)",
        "Playbook uplift against holdout ($month)",
        "Playbook incremental revenue ($month, $currency)",
    }

    # The waterfall: each step stands where the previous one ended; it ends at the MRR
    # at the month's end as the API counts it.
    waterfall = [
        (r["step"], f(r["base"]), f(r["rise"]), f(r["fall"]))
        for r in got["MRR waterfall ($month, EUR)"]
    ]
    assert waterfall == [
        ("start", 0, 700, 0),
        ("new", 700, 80, 0),
        ("reactivation", 780, 420, 0),
        ("expansion", 1200, 70, 0),
        ("contraction", 1220, 0, 50),
        ("churned", 820, 0, 400),
        ("end", 0, 820, 0),
    ]
    month = api_month["month"]
    steps = {
        "start": "mrr_start",
        "new": "new",
        "reactivation": "reactivation",
        "expansion": "expansion",
        "contraction": "contraction",
        "churned": "churned",
        "end": "mrr_end",
    }
    for currency in ("EUR", "USD"):
        api = month["currencies"][currency]
        drawn = {
            r["step"]: (f(r["rise"]) or 0) + (f(r["fall"]) or 0)
            for r in got[f"MRR waterfall ($month, {currency})"]
        }
        assert drawn == {step: api[name] for step, name in steps.items()}, currency

    [moved] = got["MRR movements by month (EUR)"]
    assert {k: f(v) for k, v in moved.items() if k != "time"} == {
        "new": 80,
        "reactivation": 420,
        "expansion": 70,
        "contraction": -50,
        "churned": -400,
    }
    for currency, expected in M.NOVEMBER.items():
        [retention] = got[f"NRR and GRR by month ({currency})"]
        assert retention["nrr"] == pytest.approx(expected["nrr"])
        assert retention["grr"] == pytest.approx(expected["grr"])
        api = month["currencies"][currency]
        assert (retention["nrr"], retention["grr"]) == pytest.approx((api["nrr"], api["grr"]))

    [churn] = got["Customer churn by month"]
    assert churn["churn_rate"] == pytest.approx(M.NOVEMBER_CUSTOMERS["churn_rate"])
    assert churn["annual_churn"] == pytest.approx(M.NOVEMBER_CUSTOMERS["annual_churn"])
    people = month["customers"]
    assert sum(r["at_start"] for r in got["Churn by plan ($month)"]) == people["at_start"]
    assert sum(r["lost"] for r in got["Churn by plan ($month)"]) == people["lost"]
    assert (churn["churn_rate"], churn["annual_churn"]) == pytest.approx(
        (people["churn_rate"], people["annual_churn"])
    )

    # c1, c3 and c5 were on basic on 1 November, c2 on pro, c4 on team; c3 left.
    by_plan = {
        r["plan"]: (r["at_start"], r["lost"], r["churn_rate"])
        for r in got["Churn by plan ($month)"]
    }
    assert by_plan == {
        "basic": (3, 1, P.monthly_churn_rate(1, 3)),
        "pro": (1, 0, 0.0),
        "team": (1, 0, 0.0),
    }

    # MRR x churn probability of the live customers (test_portfolio_api's at-risk list).
    listed = [
        (r["customer_id"].removeprefix(C), f(r["mrr_at_risk"]))
        for r in got["At-risk customers (EUR)"]
    ]
    assert listed == [("c4", 240), ("c7", 60), ("c1", 45), ("c8", 36), ("c6", 12)]
    assert listed == [
        (r["customer_id"].removeprefix(C), r["mrr_at_risk"]) for r in api_month["customers"]
    ]
    tiers = {r["tier"]: f(r["mrr_at_risk"]) for r in got["MRR at risk now by tier (EUR)"]}
    assert tiers == {"high": 336, "medium": 45, "low": 12}
    assert sum(tiers.values()) == sum(v or 0 for _, v in listed)
    assert [f(r["mrr_at_risk"]) for r in got["MRR at risk now by tier (USD)"]] == [35]

    [uplift] = got["Playbook uplift against holdout ($month)"]
    interval = P.uplift_interval(
        3, 10, 1, 10, confidence=OrchestratorSettings().portfolio_confidence
    )
    assert interval is not None
    assert (uplift["playbook"], uplift["journeys"], uplift["control_journeys"]) == (
        "upsell_results",
        10,
        10,
    )
    assert (uplift["conversion_rate"], uplift["control_conversion_rate"]) == (0.3, 0.1)
    assert uplift["uplift"] == pytest.approx(interval.estimate)
    assert uplift["uplift_low"] == pytest.approx(interval.low)
    assert uplift["uplift_high"] == pytest.approx(interval.high)
    api = month["playbooks"]["upsell_results"]
    assert uplift["confidence"] == api["uplift"]["confidence"] == 0.95
    assert (uplift["uplift"], uplift["uplift_low"], uplift["uplift_high"]) == pytest.approx(
        (api["uplift"]["estimate"], api["uplift"]["low"], api["uplift"]["high"])
    )
    assert (uplift["journeys"], uplift["conversions"]) == (api["journeys"], api["conversions"])
    assert (uplift["control_journeys"], uplift["control_conversions"]) == (
        api["control_journeys"],
        api["control_conversions"],
    )

    [revenue] = got["Playbook incremental revenue ($month, EUR)"]
    assert (f(revenue["revenue"]), f(revenue["control_revenue"])) == (150, 20)
    assert f(revenue["incremental_revenue"]) == 130
    assert f(revenue["incremental_revenue"]) == api["incremental_revenue"]["EUR"]
    assert f(revenue["revenue"]) == api["revenue"]["EUR"]
    assert got["Playbook incremental revenue ($month, USD)"] == []


async def test_the_views_agree_with_the_domain_formulas_every_month(
    loaded: AsyncEngine, reader: AsyncEngine
) -> None:
    """September to December: each view's figure is the domain's formula over the counts
    the API reads (orchestrator.adapters.portfolio); September's average upgrade is half
    a cent (49.505), rounded as the views round it (49.51)."""
    retention = {
        (str(r["month"]), r["currency"]): r
        for r in await rows(reader, "SELECT * FROM portfolio_retention_monthly")
    }
    churn = {
        str(r["month"]): r for r in await rows(reader, "SELECT * FROM portfolio_churn_monthly")
    }
    checked = 0
    for month in P.months(P.Month(2026, 9), P.Month(2026, 12), limit=4):
        async with loaded.connect() as conn:
            found = await counts.month_counts(conn, month.start, month.end)
        for currency in sorted(set(found.mrr_start) | set(found.mrr_end) | set(found.moved)):
            by_kind = found.moved.get(currency, {})
            domain = P.mrr_figures(
                found.mrr_start.get(currency, Decimal(0)),
                found.mrr_end.get(currency, Decimal(0)),
                counts.sums(by_kind),
                upgrades=by_kind.get(Kind.EXPANSION, (Decimal(0), 0))[1],
            )
            view = retention[(str(month), currency)]
            assert (view["mrr_start"], view["mrr_end"]) == (domain.start, domain.end), month
            assert view["nrr"] == pytest.approx(domain.nrr), (month, currency)
            assert view["grr"] == pytest.approx(domain.grr), (month, currency)
            assert view["expansion_rate"] == pytest.approx(domain.expansion_rate)
            assert view["average_upgrade_value"] == domain.average_upgrade_value
            checked += 1
        people = P.customer_figures(found.at_start, found.lost, found.upgraded, [])
        if str(month) not in churn:  # September: nobody was live on the 1st
            assert (people.at_start, people.churn_rate) == (0, None), month
            continue
        row = churn[str(month)]
        assert (row["at_start"], row["lost"]) == (people.at_start, people.lost), month
        assert row["churn_rate"] == pytest.approx(people.churn_rate), month
        assert row["annual_churn"] == pytest.approx(people.annual_churn), month
    assert checked >= 6  # EUR in each month, USD where it had MRR
    september = retention[("2026-09", "EUR")]
    assert september["average_upgrade_value"] == Decimal(M.SEPTEMBER_AVERAGE_UPGRADE)


async def test_the_role_reads_only_the_views_and_writes_nothing(reader: AsyncEngine) -> None:
    refused = [
        "SELECT count(*) FROM mrr_movements",
        "SELECT count(*) FROM subscription_states",
        "SELECT count(*) FROM scores",
        "SELECT count(*) FROM customers",
        "SELECT count(*) FROM portfolio_settings",
        "UPDATE portfolio_settings SET confidence = 0.5",
        "INSERT INTO mrr_movements (event_id, customer_id, kind, amount, currency, mrr_before,"
        " mrr_after, event_type, occurred_at) VALUES ('x', 'x', 'new', 1, 'EUR', 0, 1,"
        " 'subscription_started', now())",
        "DELETE FROM journeys",
        "CREATE TABLE grafana_scratch (x int)",
    ]
    for sql in refused:
        with pytest.raises(DBAPIError, match="permission denied"):
            async with reader.begin() as conn:
                await conn.execute(sa.text(sql))
    grants = await rows(
        reader,
        "SELECT g.table_name, g.privilege_type, t.table_type FROM information_schema."
        "role_table_grants g JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE g.grantee = 'tenure_analytics' ORDER BY 1",
    )
    assert {(g["privilege_type"], g["table_type"]) for g in grants} == {("SELECT", "VIEW")}
    assert {g["table_name"] for g in grants} >= {
        "portfolio_mrr_waterfall",
        "portfolio_retention_monthly",
        "portfolio_at_risk",
    }


async def test_the_dashboard_follows_the_orchestrator_s_settings(
    month: M.Loaded, reader: AsyncEngine, database_url: str, common_settings: CommonSettings
) -> None:
    """c8 names no currency (neither a subscription nor its profile) and the uplift
    interval has a configured confidence. With TENURE_ORCHESTRATOR_DEFAULT_CURRENCY=USD
    and TENURE_ORCHESTRATOR_PORTFOLIO_CONFIDENCE=0.8, the orchestrator (``bootstrap.run``,
    on topics of its own, nothing to consume) writes them when it starts; then the
    at-risk panels count c8 under USD and the uplift panel draws the 80 % interval: what
    the API with those settings answers. The defaults are written back at the end."""
    run_id = uuid.uuid4().hex[:6]
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-pd-run-{run_id}."}
    )
    await ensure_topics(common)
    settings = OrchestratorSettings(
        common=common,
        group_id=f"it-pd-run-{run_id}",
        watched_groups=[],
        default_currency="USD",
        portfolio_confidence=0.8,
    )
    by_title = panels()
    written = "SELECT default_currency, confidence FROM portfolio_settings"

    async def panel(title: str, currency: str) -> list[dict[str, Any]]:
        return await rows(reader, grafana_sql(by_title[title], month=NOVEMBER, currency=currency))

    stop = asyncio.Event()
    orchestrator = asyncio.create_task(bootstrap.run(settings, stop, serve_api=False))
    try:
        for _ in range(300):
            if await rows(month.engine, written) == [
                {"default_currency": "USD", "confidence": 0.8}
            ]:
                break
            assert not orchestrator.done(), orchestrator.exception()
            await asyncio.sleep(0.1)
        stop.set()
        await orchestrator
        assert await rows(month.engine, written) == [{"default_currency": "USD", "confidence": 0.8}]
        async with M.operator_api(month.engine, settings) as api:
            listed = await api.get(
                "/v1/customers", params={"sort": "mrr_at_risk", "currency": "USD"}
            )
            portfolio = await api.get("/v1/metrics/portfolio", params={"period": str(NOVEMBER)})
        assert listed.status_code == 200 and portfolio.status_code == 200
        usd = [
            (r["customer_id"].removeprefix(C), f(r["mrr_at_risk"]))
            for r in await panel("At-risk customers ($currency)", "USD")
        ]
        assert usd == [("c8", 36), ("c5", 35)]
        assert usd == [
            (r["customer_id"].removeprefix(C), r["mrr_at_risk"]) for r in listed.json()["customers"]
        ]
        eur = await panel("At-risk customers ($currency)", "EUR")
        assert f"{C}c8" not in {r["customer_id"] for r in eur}
        tiers = {
            r["tier"]: f(r["mrr_at_risk"])
            for r in await panel("MRR at risk now by tier ($currency)", "USD")
        }
        assert tiers == {"high": 36, "medium": 35}

        [uplift] = await panel("Playbook uplift against holdout ($month)", "EUR")
        api = portfolio.json()["months"][0]["playbooks"]["upsell_results"]["uplift"]
        interval = P.uplift_interval(3, 10, 1, 10, confidence=0.8)
        assert interval is not None and api["confidence"] == uplift["confidence"] == 0.8
        assert (uplift["uplift_low"], uplift["uplift_high"]) == pytest.approx(
            (interval.low, interval.high)
        )
        assert (uplift["uplift_low"], uplift["uplift_high"]) == pytest.approx(
            (api["low"], api["high"])
        )
        # 0.2 +- 1.281552 * 0.173205 = 0.2 +- 0.221971: narrower than the 95 % one (0.2 +- 0.339476)
        assert uplift["uplift_high"] == pytest.approx(0.2 + 0.221971, abs=1e-6)
    finally:
        stop.set()
        await asyncio.wait_for(orchestrator, 30)
        await share_settings(month.engine, OrchestratorSettings().figure_rules())
