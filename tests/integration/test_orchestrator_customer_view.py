"""The customer view shows the scoring state as it is, or names a field for what it is.

- ``learned.loyalty_tier`` was null for bronze customers: scoring sends a tier change
  only when the tier changes, never for the first (bronze) one.
- ``events_counted`` looked like the customer's event count but lagged: a snapshot is
  published only when the score changes. It is now ``events_counted_at_as_of``.

Scoring's own rules make the snapshots; the orchestrator's consumer projects them; the
operator API (real PostgreSQL, a real key) shows them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from common.apikeys import KeyCache, KeyRepository, generate
from common.clock import FakeClock
from common.db import create_engine
from common.events import EXAMPLES, parse_event
from common.kafka import Record, encode
from common.topics import Topic, topic_name
from devstack.stack import Stack
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.consumers import router
from orchestrator.entrypoints.deps import Deps
from scoring.domain.model import load_model
from scoring.domain.rules import score
from scoring.domain.state import CustomerState
from scoring.settings import ScoringSettings

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PREFIX = "it-view."


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_customer_view")


@pytest.fixture(scope="module")
async def view(database_url: str):
    engine = create_engine(database_url)
    deps = Deps(
        engine=engine, playbooks=load_playbooks(SHIPPED), clock=FakeClock(T0), topic_prefix=PREFIX
    )
    full, new = generate("reader", ["operator:read"])
    await KeyRepository(engine).create(new)
    cache = KeyCache(KeyRepository(engine))
    await cache.refresh()
    transport = httpx.ASGITransport(app=create_api(deps, authenticator=cache))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.headers["X-API-Key"] = full
        yield deps, client
    await engine.dispose()


def feature_used(customer: str, at: datetime) -> dict[str, object]:
    return {
        **EXAMPLES["usage"],
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": at.isoformat(),
    }


async def test_the_view_shows_a_bronze_tier_and_names_the_count_of_the_snapshot(view) -> None:
    deps, client = view
    handle = router(deps)
    model = load_model(ScoringSettings().model_path)
    customer = f"c-{uuid.uuid4().hex[:8]}"
    state = CustomerState(customer)
    snapshots = []
    for n in range(3):  # the same feature thrice: only the first use changes the score
        outcome = score(
            state, parse_event(encode(feature_used(customer, T0 + timedelta(seconds=n)))), model
        )
        state = outcome.state
        if outcome.snapshot is not None:
            snapshots.append(outcome.snapshot)
        for change in outcome.changes:
            await handle(_record(Topic.SIGNALS, customer, change))
    assert state.events_counted == 3 and len(snapshots) < 3  # the lag this is about
    for snapshot in snapshots:
        await handle(_record(Topic.SCORES, customer, snapshot))

    response = await client.get(f"/v1/customers/{customer}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["learned"] is not None and body["learned"]["loyalty_tier"] == "bronze"
    assert body["score"]["events_counted_at_as_of"] == snapshots[-1].events_counted
    assert "events_counted" not in body["score"]["explanation"]


def _record(topic: Topic, key: str, value: object) -> Record:
    return Record(
        topic=topic_name(topic, PREFIX),
        partition=0,
        offset=0,
        key=key,
        value=encode(value),  # type: ignore[arg-type]
        headers=(),
        timestamp_ms=0,
    )
