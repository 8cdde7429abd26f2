"""Scoring carries the causing event's ``ingested_at`` onto its signal changes and score
snapshots, and observes ingest -> snapshot; through faust's test context as in
``test_agents.py``."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from common import causation
from scoring.service import Emit, Topics, caused_by
from tests.unit.scoring.test_agents import T0, Harness, event, harness  # noqa: F401

NAME = "tenure_scoring_ingest_to_snapshot_seconds_count"
TOPICS = Topics(
    events=("t.events.intent",),
    deliveries="t.deliveries",
    erasures="t.erasures",
    ticks="t.ticks",
    signals="t.signals",
    scores="t.scores",
    cohorts="t.cohorts",
    cohort_stats="t.cohort-stats",
)


def test_only_the_records_the_orchestrator_reacts_to_are_stamped() -> None:
    records = (
        Emit("t.signals", b"c", b"{}"),
        Emit("t.scores", b"c", b"{}", headers=(("x", b"1"),)),
        Emit("t.scores", b"c", None),  # a tombstone
        Emit("t.cohorts", b"pro", b"{}"),
    )
    stamp = causation.header(T0)
    assert caused_by(records, None, TOPICS) == records
    assert [r.headers for r in caused_by(records, T0, TOPICS)] == [
        (stamp,),
        (("x", b"1"), stamp),
        (),
        (),
    ]


async def test_an_events_instant_reaches_its_snapshot_and_is_observed(
    harness: Harness,  # noqa: F811
) -> None:
    ingested = T0 - timedelta(seconds=2)
    before = REGISTRY.get_sample_value(NAME) or 0.0
    async with harness.scoring.agents["events"].test_context() as agent:
        await agent.put(event("competitor_trial"), key=b"c-1", headers=[causation.header(ingested)])
        await agent.put(event("alternative_search"), key=b"c-1")  # no header: older
    scores = [r for r in harness.sink.records if r.topic == "t.scores"]
    signals = [r for r in harness.sink.records if r.topic == "t.signals"]
    assert len(scores) == 2 and signals
    assert causation.ingested_at(scores[0].headers) == ingested
    assert causation.ingested_at(scores[1].headers) is None
    stamped = [s for s in signals if causation.ingested_at(s.headers) == ingested]
    assert stamped and len(stamped) < len(signals)  # the second event's are not stamped
    assert (REGISTRY.get_sample_value(NAME) or 0.0) == before + 1
