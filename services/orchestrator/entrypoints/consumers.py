"""Kafka consumers: project profiles and scores, start and exit journeys. Idempotent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from common.events import ProfileEvent, parse_event
from common.kafka import Handler, InvalidRecord, Record
from common.messages import Delivery, ScoreSnapshot
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import journeys as repo
from orchestrator.domain import decisions
from orchestrator.domain.journey import Event
from orchestrator.entrypoints.deps import Deps


async def on_profile(record: Record, deps: Deps) -> None:
    event = parse_event(record.value)
    if not isinstance(event, ProfileEvent):
        raise InvalidRecord(f"expected a profile event, got {event.kind}")
    consent = event.consent
    row = {
        "customer_id": event.customer_id,
        "email": event.email,
        "first_name": event.first_name,
        "time_zone": event.time_zone,
        "plan": event.plan,
        "mrr": event.mrr,
        "consent_email": consent.email_marketing if consent else False,
        "consent_in_app": consent.in_app if consent else True,
        "owner_csm_id": event.owner_csm.id if event.owner_csm else None,
        "owner_csm_email": event.owner_csm.email if event.owner_csm else None,
        "profile": event.model_dump(mode="json"),
        "profile_at": event.occurred_at,
    }
    async with deps.engine.begin() as conn:
        await repo.upsert_customer(conn, row)


async def on_score(record: Record, deps: Deps) -> None:
    snapshot = ScoreSnapshot.model_validate_json(record.value)
    now = deps.clock.now()
    async with deps.engine.begin() as conn:
        await repo.upsert_score(
            conn,
            {
                "customer_id": snapshot.customer_id,
                "as_of": snapshot.as_of,
                "risk_score": snapshot.risk_score,
                "tier": snapshot.tier,
                "churn_probability": snapshot.churn_probability,
                "snapshot": snapshot.model_dump(mode="json"),
            },
        )
        for playbook in deps.playbooks.values():
            live = await repo.live_journey(conn, snapshot.customer_id, playbook.name, lock=True)
            if live is not None:
                reason = decisions.exit_on_score(playbook, snapshot.churn_probability)
                if reason:
                    await repo.end_journey(conn, live, Event.EXIT, now, reason)
                    metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason=reason).inc()
                continue
            ended = await repo.last_ended_at(conn, snapshot.customer_id, playbook.name)
            if decisions.should_start(
                playbook,
                churn_probability=snapshot.churn_probability,
                last_ended_at=ended,
                has_live_journey=False,
                now=now,
            ):
                started = await repo.start_journey(
                    conn,
                    customer_id=snapshot.customer_id,
                    playbook=playbook.name,
                    variant=decisions.pick_variant(playbook, snapshot.customer_id),
                    schedule=decisions.schedule(playbook, now),
                    now=now,
                    detail={"trigger": "churn_probability", "value": snapshot.churn_probability},
                )
                if started:
                    metrics.JOURNEYS_STARTED.labels(playbook=playbook.name).inc()


async def on_delivery(record: Record, deps: Deps) -> None:
    delivery = Delivery.model_validate_json(record.value)
    if delivery.playbook is None or delivery.playbook not in deps.playbooks:
        return
    playbook = deps.playbooks[delivery.playbook]
    reason = decisions.exit_on_delivery(playbook, delivery.status)
    if reason is None:
        return
    async with deps.engine.begin() as conn:
        live = await repo.live_journey(conn, delivery.customer_id, playbook.name, lock=True)
        if live is not None and live.journey_id == delivery.journey_id:
            await repo.end_journey(conn, live, Event.EXIT, deps.clock.now(), reason)
            metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason=reason).inc()


ROUTES: dict[Topic, Callable[[Record, Deps], Awaitable[None]]] = {
    Topic.EVENTS_PROFILE: on_profile,
    Topic.SCORES: on_score,
    Topic.DELIVERIES: on_delivery,
}


def router(deps: Deps) -> Handler:
    """One handler for the consumer loop, dispatching on the record's topic."""
    by_name = {topic_name(t, deps.topic_prefix): (t, h) for t, h in ROUTES.items()}

    async def handle(record: Record) -> None:
        topic, handler = by_name[record.topic]
        metrics.RECORDS.labels(topic=topic.value).inc()
        await handler(record, deps)

    return handle
