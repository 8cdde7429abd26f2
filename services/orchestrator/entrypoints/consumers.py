"""Kafka consumers: project profiles, scores and what the orchestrator learns; start,
arm and exit journeys. Idempotent: a record processed twice changes nothing more.

Each handler decodes its record into a fact (:mod:`orchestrator.domain.decisions`),
then :func:`apply_fact` runs the pure rules on it in one transaction: exits of the
customer's live journeys (and the journeys an exit triggers, e.g. re-engaged ->
course_upsell), then the triggers of every playbook. Undecodable records raise a
decode error and go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from common.events import LoginEvent, PaymentEvent, ProfileEvent, parse_event
from common.kafka import Handler, InvalidRecord, Record
from common.messages import Delivery, ScoreSnapshot, SignalChange
from common.outage import DatabaseUnavailable, ride_out
from common.runtime import sleep_or_stop
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import attribution as attribution_store
from orchestrator.adapters import journeys as repo
from orchestrator.adapters import privacy, triggers
from orchestrator.domain import attribution as A
from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event
from orchestrator.domain.playbook import Playbook
from orchestrator.entrypoints.deps import Deps

log = logging.getLogger(__name__)

# Score snapshot fields the playbooks may test (ScoreTrigger / ScoreExit ``field``).
SCORE_FIELDS = ("churn_probability", "risk_score", "feature_adoption", "health_score")
# Payment events that change the customer's plan.
PLAN_CHANGES = frozenset(
    {"subscription_upgraded", "subscription_downgraded", "subscription_started"}
)


async def apply_fact(conn: AsyncConnection, deps: Deps, customer_id: str, fact: D.Fact) -> None:
    """Exits, then triggers, for one fact about one customer, inside ``conn``'s transaction.

    A signal trigger whose start retention before expansion or a cancelled subscription
    blocks is postponed (a blocked row in ``held_triggers``) until the block lifts:
    after a cancellation the triggers of the playbooks a cancelled customer may not be
    in are suspended, after a reactivation they count again; once the risk tier is not
    high and no retention journey is live, the needs retention held back are due.
    """
    now = deps.clock.now()
    chained: list[D.Fact] = []
    ended = False
    for journey in await repo.live_journeys(conn, customer_id):
        playbook = deps.playbooks.get(journey.playbook)
        if playbook is None:
            continue
        seen = D.observed(playbook, fact, journey.journey_id)
        if seen:
            await repo.add_seen(conn, journey.journey_id, seen)
        reason = D.exit_reason(playbook, fact, journey.journey_id)
        if reason:
            await repo.end_journey(conn, journey, Event.EXIT, now, reason)
            ended = True
            metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason=reason).inc()
            chained.append(D.JourneyEndFact(playbook.name, reason, now))
    for playbook in sorted(deps.playbooks.values(), key=lambda b: -b.priority):
        effect = D.trigger_effect(playbook, fact)
        if effect == "start":
            _, block = await try_start(conn, deps, customer_id, playbook, now, _why(fact))
            hold = D.postpone_reason(playbook, block)
            if hold and isinstance(fact, D.SignalFact):
                await triggers.block(
                    conn,
                    customer_id=customer_id,
                    playbook=playbook.name,
                    signal=fact.name,
                    why=hold,
                    now=now,
                    replace=True,
                )
        elif effect == "arm" and isinstance(fact, D.SignalFact):
            await arm_held(conn, deps, customer_id, playbook, fact, now)
        elif effect == "disarm" and isinstance(fact, D.SignalFact):
            await triggers.disarm(conn, customer_id, playbook.name, fact.name)
    if isinstance(fact, D.EventFact) and fact.type in R.SUBSCRIPTION_STATES:
        await subscription_changed(conn, deps, customer_id, R.SUBSCRIPTION_STATES[fact.type], now)
    if ended or isinstance(fact, D.ScoreFact):
        await lift_retention_first(conn, deps, customer_id, now)
    for follow in chained:
        await apply_fact(conn, deps, customer_id, follow)


async def arm_held(
    conn: AsyncConnection,
    deps: Deps,
    customer_id: str,
    playbook: Playbook,
    fact: D.SignalFact,
    now: datetime,
) -> None:
    """Arm a held-signal trigger: due once the signal has been held, or blocked until the
    reactivation when the customer is cancelled (:func:`decisions.arm_block`)."""
    hold = D.arm_block(playbook, await repo.customer_facts(conn, customer_id))
    if hold:
        await triggers.block(
            conn,
            customer_id=customer_id,
            playbook=playbook.name,
            signal=fact.name,
            why=hold,
            now=now,
            replace=False,
        )
        return
    await triggers.arm(
        conn,
        customer_id=customer_id,
        playbook=playbook.name,
        signal=fact.name,
        now=now,
        due_at=fact.at + D.held_for(playbook),
    )


async def subscription_changed(
    conn: AsyncConnection, deps: Deps, customer_id: str, state: str, now: datetime
) -> None:
    """A cancellation suspends the pending triggers of every playbook a cancelled customer
    may not be in; a reactivation (or a new subscription) makes them due again, each once
    its signal has been held again (:func:`decisions.unblock_due`)."""
    if state == "cancelled":
        names = [b.name for b in deps.playbooks.values() if not b.admits_cancelled]
        await triggers.suspend(conn, customer_id, names, why=D.CANCELLED)
        return
    due = {
        name: D.unblock_due(deps.playbooks[name], D.CANCELLED, now)
        for name in await triggers.blocked(conn, customer_id, D.CANCELLED)
        if name in deps.playbooks
    }
    await triggers.lift(conn, customer_id, D.CANCELLED, due)


async def lift_retention_first(
    conn: AsyncConnection, deps: Deps, customer_id: str, now: datetime
) -> None:
    """Make the triggers retention before expansion postponed due now, once it no longer
    holds: the risk tier is not high and no retention journey is live. Call it after a
    score (the tier may have fallen) and after a journey ended."""
    waiting = await triggers.blocked(conn, customer_id, R.RETENTION_FIRST)
    if not waiting:
        return
    live = await repo.live_journeys(conn, customer_id, lock=False)
    lanes = [deps.playbooks[j.playbook].lane for j in live if j.playbook in deps.playbooks]
    customer = await repo.customer_facts(conn, customer_id)
    if R.retention_first("expansion", customer.tier, lanes):
        return
    due = {name: now for name in waiting}
    await triggers.lift(conn, customer_id, R.RETENTION_FIRST, due)


def _why(fact: D.Fact) -> dict[str, Any]:
    if isinstance(fact, D.ScoreFact):
        return {"trigger": "score", "values": dict(fact.values)}
    if isinstance(fact, D.SignalFact):
        return {"trigger": "signal", "signal": fact.name}
    if isinstance(fact, D.EventFact):
        return {"trigger": "event", "type": fact.type}
    if isinstance(fact, D.JourneyEndFact):
        return {"trigger": "journey", "playbook": fact.playbook, "reason": fact.reason}
    return {"trigger": "delivery", "status": fact.status}


async def try_start(
    conn: AsyncConnection,
    deps: Deps,
    customer_id: str,
    playbook: Playbook,
    now: datetime,
    detail: dict[str, Any],
) -> tuple[str | None, str | None]:
    """Start a journey of ``playbook`` unless a rule blocks it: (its id, None), or
    (None, the block)."""
    live = await repo.live_journeys(conn, customer_id)
    block = D.start_block(
        playbook,
        await repo.customer_facts(conn, customer_id),
        live_lanes=frozenset(
            deps.playbooks[j.playbook].lane for j in live if j.playbook in deps.playbooks
        ),
        last_ended_at=await repo.last_ended_at(conn, customer_id, playbook.name),
        has_live_journey=any(j.playbook == playbook.name for j in live),
        paused=await repo.playbook_paused(conn, playbook.name),
        now=now,
    )
    if block:
        return None, block
    started = await repo.start_journey(
        conn,
        customer_id=customer_id,
        playbook=playbook.name,
        variant=D.pick_variant(playbook, customer_id),
        arm=D.assign_arm(playbook, customer_id),
        schedule=D.schedule(playbook, now),
        now=now,
        detail=detail,
    )
    if started is None:
        return None, "journey already live"
    metrics.JOURNEYS_STARTED.labels(playbook=playbook.name).inc()
    return started, None


# --- one handler per topic ----------------------------------------------------------------


async def on_profile(record: Record, deps: Deps) -> None:
    event = parse_event(record.value)
    if not isinstance(event, ProfileEvent):
        raise InvalidRecord(f"kind: expected a profile event, got {event.kind}")
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
        erased = await privacy.erased_since(conn, event.customer_id)
        if erased is not None and event.occurred_at <= erased:
            metrics.ERASED_RECORDS.inc()
            return  # a profile from before the customer's erasure: erased, not new
        await repo.upsert_customer(conn, row)


async def on_score(record: Record, deps: Deps) -> None:
    if not record.value and record.key:  # scoring's tombstone: it erased the customer
        async with deps.engine.begin() as conn:
            await repo.delete_score(conn, record.key)
            completed = await privacy.scoring_erased(
                conn,
                record.key,
                now=deps.clock.now(),
                erasures_topic=topic_name(Topic.ERASURES, deps.topic_prefix),
            )
        if completed:
            metrics.ERASURES.labels(stage="scoring").inc()
        return
    snapshot = ScoreSnapshot.model_validate_json(record.value)
    values = {
        name: float(value)
        for name in SCORE_FIELDS
        if (value := getattr(snapshot, name, None)) is not None
    }
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
        fact = D.ScoreFact(values, snapshot.as_of, snapshot.tier)
        await apply_fact(conn, deps, snapshot.customer_id, fact)


async def on_signal(record: Record, deps: Deps) -> None:
    change = SignalChange.model_validate_json(record.value)
    async with deps.engine.begin() as conn:
        if change.change in ("signal_on", "signal_off"):
            fact = D.SignalFact(change.name, change.change == "signal_on", change.occurred_at)
            await apply_fact(conn, deps, change.customer_id, fact)
        elif change.change == "segment_changed":
            await repo.note_segment(conn, change.customer_id, change.current)
        elif change.change == "loyalty_tier_changed":
            await repo.note_loyalty_tier(conn, change.customer_id, change.current)
        # tier and band changes arrive with the score snapshot too: nothing more to do.


async def on_payment(record: Record, deps: Deps) -> None:
    event = parse_event(record.value)
    if not isinstance(event, PaymentEvent):
        raise InvalidRecord(f"kind: expected a payment event, got {event.kind}")
    async with deps.engine.begin() as conn:
        if event.type in PLAN_CHANGES and event.plan:
            await repo.note_plan(conn, event.customer_id, event.plan, event.occurred_at)
        if event.type == "purchase" and event.product:
            await repo.note_purchase(conn, event.customer_id, event.product)
        if event.type in R.SUBSCRIPTION_STATES:
            state = R.SUBSCRIPTION_STATES[event.type]
            await repo.note_subscription(conn, event.customer_id, state, event.occurred_at)
        # Before the exits: a conversion counts for the journeys as they were when it came.
        await attribute_payment(conn, deps, event)
        fact = D.EventFact(event.type, event.occurred_at, event.plan, event.product)
        await apply_fact(conn, deps, event.customer_id, fact)


async def attribute_payment(conn: AsyncConnection, deps: Deps, event: PaymentEvent) -> None:
    """Attribute a payment that meets playbook goals to the customer's journeys (idempotent
    on the event id: a replayed record adds nothing)."""
    payment = A.Payment(
        event_id=event.event_id,
        type=event.type,
        at=event.occurred_at,
        plan=event.plan,
        product=event.product,
        amount=event.amount,
        currency=event.currency,
        mrr_before=event.mrr_before,
        mrr_after=event.mrr_after,
    )
    goals = [
        book
        for book in deps.playbooks.values()
        if book.conversion is not None and A.meets_goal(book.conversion, payment)
    ]
    if not goals:
        return
    spans = await attribution_store.journey_spans(
        conn,
        event.customer_id,
        [book.name for book in goals],
        at=payment.at,
        longest_window=max(book.attribution_window for book in goals),
    )
    found = A.attribute(payment, spans, deps.playbooks, default_currency=deps.default_currency)
    for recorded in await attribution_store.record(conn, event.customer_id, found):
        metrics.ATTRIBUTIONS.labels(playbook=recorded.playbook, arm=recorded.arm).inc()


async def on_login(record: Record, deps: Deps) -> None:
    event = parse_event(record.value)
    if not isinstance(event, LoginEvent):
        raise InvalidRecord(f"kind: expected a login event, got {event.kind}")
    async with deps.engine.begin() as conn:
        await apply_fact(conn, deps, event.customer_id, D.EventFact(event.type, event.occurred_at))


async def on_delivery(record: Record, deps: Deps) -> None:
    delivery = Delivery.model_validate_json(record.value)
    async with deps.engine.begin() as conn:
        if delivery.status == "unsubscribed":
            await repo.note_unsubscribed(conn, delivery.customer_id, delivery.occurred_at)
        if await repo.note_outcome(conn, delivery):
            # Not sent: its cap slot is free, for the steps waiting for one.
            await repo.wake_waiting(conn, delivery.customer_id, deps.clock.now())
        fact = D.DeliveryFact(
            delivery.status, delivery.occurred_at, delivery.journey_id, delivery.notification_id
        )
        await apply_fact(conn, deps, delivery.customer_id, fact)


ROUTES: dict[Topic, Callable[[Record, Deps], Awaitable[None]]] = {
    Topic.EVENTS_PROFILE: on_profile,
    Topic.EVENTS_PAYMENT: on_payment,
    Topic.EVENTS_LOGIN: on_login,
    Topic.SIGNALS: on_signal,
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


# --- held-signal triggers: a durable timer per (customer, playbook) -------------------------


async def fire_due_triggers(deps: Deps, *, limit: int) -> int:
    """Start the journeys whose signal has been held long enough, or whose postponed start
    is due again (its block lifted); how many triggers fired.

    The signal_off that would have disarmed a trigger commits before or after this
    transaction, never in the middle (the row is locked), so a trigger fires only if
    its signal stayed on. A start blocked again by retention before expansion or a
    cancellation waits for that block to lift; otherwise, while a held signal stays on,
    the trigger is armed again (:func:`decisions.rearm_at`): a customer still in that
    state re-enters after the cooldown. A postponed unheld trigger fires once. Safe to
    run from any number of replicas (SKIP LOCKED).
    """
    now = deps.clock.now()
    async with deps.engine.begin() as conn:
        due = await triggers.claim_due(conn, now, limit)
        for trigger in due:
            await triggers.mark_fired(conn, trigger.id)
            playbook = deps.playbooks.get(trigger.playbook)
            if playbook is None:
                continue
            held = D.held_for(playbook) > timedelta(0)
            kind = "signal_held" if held else "signal_postponed"
            detail = {"trigger": kind, "signal": trigger.signal}
            _, block = await try_start(conn, deps, trigger.customer_id, playbook, now, detail)
            hold = D.postpone_reason(playbook, block)
            if hold:
                await triggers.block(
                    conn,
                    customer_id=trigger.customer_id,
                    playbook=playbook.name,
                    signal=trigger.signal,
                    why=hold,
                    now=now,
                    replace=True,
                )
            elif held:
                ended = await repo.last_ended_at(conn, trigger.customer_id, playbook.name)
                await triggers.arm(
                    conn,
                    customer_id=trigger.customer_id,
                    playbook=playbook.name,
                    signal=trigger.signal,
                    now=now,
                    due_at=D.rearm_at(playbook, block, now=now, last_ended_at=ended),
                )
    return len(due)


async def run_held_triggers(deps: Deps, *, stop: asyncio.Event, poll_s: float, batch: int) -> None:
    """Fire due held-signal triggers until ``stop``; errors are logged and retried, a
    database outage waited out."""
    while not stop.is_set():
        try:
            fired = await ride_out(
                lambda: fire_due_triggers(deps, limit=batch), what="held triggers", stop=stop
            )
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("held-trigger batch failed; will retry")
            fired = 0
        if fired < batch:
            await sleep_or_stop(stop, poll_s)
