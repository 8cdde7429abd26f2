"""Which notifications carry the ingest instant of the event they react to (docs/decisions.md,
"The business latency"): the pure rule, and the use cases on the in-memory store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from orchestrator.domain import decisions as D
from orchestrator.domain.journey import Event, Journey, State
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.domain.reaction import reaction_ingested_at
from orchestrator.service_layer.messages import handle
from orchestrator.settings import OrchestratorSettings
from tests.unit.orchestrator.sim import Sim
from tests.unit.orchestrator.test_timelines import CUSTOMER, T0, score

BOOKS = load_playbooks(SHIPPED)
RULES = OrchestratorSettings().rules()
INGESTED = T0 - timedelta(seconds=3)


def journey(**over: Any) -> Journey:
    values: dict[str, Any] = {
        "journey_id": "j",
        "customer_id": "c",
        "playbook": "retention_offer",
        "state": State.ACTIVE,
        "started_at": T0,
        "ingested_at": INGESTED,
        **over,
    }
    return Journey(**values)


def test_only_a_step_due_at_the_start_and_never_deferred_is_the_reaction() -> None:
    assert reaction_ingested_at(journey(), due_at=T0, waiting_since=None) == INGESTED
    later = T0 + timedelta(days=1)
    assert reaction_ingested_at(journey(), due_at=later, waiting_since=None) is None
    assert reaction_ingested_at(journey(), due_at=T0, waiting_since=T0) is None  # cap slot
    assert reaction_ingested_at(journey(), due_at=None, waiting_since=None) is None
    assert reaction_ingested_at(journey(ingested_at=None), due_at=T0, waiting_since=None) is None


def test_a_pause_forgets_the_instant() -> None:
    j = journey()
    j.apply(Event.PAUSE, T0)
    j.apply(Event.RESUME, T0 + timedelta(hours=1))
    assert j.ingested_at is None


def outbox(sim: Sim) -> dict[str, dict[str, str]]:
    """Step -> the headers of its notification's outbox row."""
    return {
        orjson.loads(row.payload)["step"]: dict(row.headers) for row in sim.stores.tables.outbox
    }


async def retention(sim: Sim, ingested_at: datetime | None) -> dict[str, dict[str, str]]:
    """A snapshot over 0.70 with ``ingested_at``, then five days."""
    message = sim.message(score(churn_probability=0.9)(sim.now))
    await handle(message, stores=sim.stores, context=sim.context, ingested_at=ingested_at)
    await sim.advance_to(sim.now + timedelta(days=5))
    return outbox(sim)


async def test_the_offer_carries_the_instant_and_the_later_steps_do_not() -> None:
    sim = Sim(BOOKS, CUSTOMER, RULES, T0)
    headers = await retention(sim, INGESTED)
    assert set(headers) == {"offer", "retention_call", "escalation"}
    assert headers["offer"]["ingested_at"] == INGESTED.isoformat()
    assert "ingested_at" not in headers["retention_call"]  # +1 d from the offer
    assert "ingested_at" not in headers["escalation"]  # +3 d
    assert all("notification_id" in h for h in headers.values())


async def test_an_offer_held_by_quiet_hours_is_not_the_reaction() -> None:
    at_night = replace(CUSTOMER, time_zone="America/Los_Angeles")  # 03:00 local at T0
    sim = Sim(BOOKS, at_night, RULES, T0)
    headers = await retention(sim, INGESTED)
    assert "offer" in headers
    assert "ingested_at" not in headers["offer"]


async def test_a_record_without_the_header_starts_a_journey_that_is_not_observed() -> None:
    sim = Sim(BOOKS, CUSTOMER, RULES, T0)
    headers = await retention(sim, None)
    assert "ingested_at" not in headers["offer"]
    [row] = sim.stores.tables.journeys.values()
    assert row.ingested_at is None


async def test_a_journey_started_by_a_held_signal_is_not_the_reaction() -> None:
    sim = Sim(BOOKS, CUSTOMER, RULES, T0)
    message = sim.message(D.SignalFact("engagement_low", True, T0))
    await handle(message, stores=sim.stores, context=sim.context, ingested_at=INGESTED)
    await sim.advance_to(T0 + timedelta(days=20))
    started = [j for j in sim.stores.tables.journeys.values() if j.playbook == "re_engagement"]
    assert started and all(j.ingested_at is None for j in started)
    assert outbox(sim) and all("ingested_at" not in h for h in outbox(sim).values())
