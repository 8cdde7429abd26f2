"""The simulator's past months reach the MRR record through the real path: the simulator
posts them to the ingest API (in-process, on the real broker, with the event age
``make run`` gives it), the orchestrator's analytics consumer records them in the real
PostgreSQL, and the dashboard's views show several months with MRR and movements.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

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
from common.settings import CommonSettings
from common.topics import Topic
from devstack.history import span
from devstack.simulator import Simulator, SimulatorSettings
from devstack.stack import Stack
from ingest.api import create_app
from ingest.bootstrap import make_publisher
from ingest.settings import IngestSettings
from orchestrator.entrypoints.analytics import analytics_handler
from orchestrator.entrypoints.deps import Deps

CUSTOMERS = 30


async def scalar(engine: Any, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql))).scalar_one()


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_simulator_history")


async def test_the_history_fills_several_months_of_the_record(
    database_url: str, common_settings: CommonSettings
) -> None:
    common = common_settings.model_copy(
        update={
            "topic_prefix": f"it-hist-{uuid.uuid4().hex[:6]}.",
            "time_scale": 1.0,
            "clock_epoch": None,
            "database_url": database_url,
        }
    )
    await ensure_topics(common)
    sim_settings = SimulatorSettings(customers=CUSTOMERS, duration_s=0.01, tick_s=0.01)
    rates = sim_settings.history_rates()
    settings = IngestSettings(common=common, api_key="k", max_event_age=span(rates))
    now = datetime.now(UTC)
    publisher = make_publisher(settings, transactional_id=f"it-hist-{uuid.uuid4().hex[:6]}")
    async with publisher:
        app = create_app(settings, publisher=publisher)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://ingest",
            headers={"X-API-Key": "k"},
        ) as client:
            # With ingest's default age (30 days) the oldest months would be refused.
            assert IngestSettings(common=common, api_key="k").max_event_age < span(rates)
            sim = Simulator(sim_settings, FakeClock(now), client, random.Random(sim_settings.seed))
            await sim.run(asyncio.Event())
    history = sim.sent - CUSTOMERS  # the profiles, then the past payments, all accepted
    assert history > CUSTOMERS
    engine = create_engine(common.database_url)
    deps = Deps(engine=engine, playbooks={}, clock=FakeClock(now), topic_prefix=common.topic_prefix)
    consumer = make_consumer(common, [Topic.EVENTS_PAYMENT], group_id="it-hist-analytics")
    stop = asyncio.Event()
    await consumer.start()
    try:
        async with KafkaPublisher(common, client_id="it-hist") as dead:
            loop = asyncio.create_task(
                run_consumer(
                    consumer,
                    analytics_handler(deps),
                    DeadLetters(dead, consumer_name="it"),
                    stop=stop,
                    name="it",
                    strategy=Sequential(),
                )
            )
            # Every past payment changes a subscription: one state row each.
            for _ in range(600):
                recorded = await scalar(engine, "SELECT count(*) FROM subscription_states")
                if recorded >= history:
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await loop
        months = await scalar(
            engine,
            "SELECT count(DISTINCT month) FROM portfolio_retention_monthly"
            " WHERE mrr_start > 0 AND new + expansion + contraction + churned"
            " + reactivation > 0",
        )
        async with engine.connect() as conn:
            kinds = set((await conn.execute(sa.text("SELECT kind FROM mrr_movements"))).scalars())
        churn_months = await scalar(
            engine, "SELECT count(*) FROM portfolio_churn_monthly WHERE at_start > 0"
        )
        starts = await scalar(engine, "SELECT count(*) FROM mrr_movements WHERE kind = 'new'")
    finally:
        await consumer.stop()
        await engine.dispose()
    assert recorded == history
    assert starts == CUSTOMERS
    assert months >= 4, months  # August to November, each with MRR and movements
    assert churn_months >= 4
    assert {"new", "expansion", "churn"} <= kinds, kinds
