"""Use cases of a fact about a customer: exits, starts, held triggers and their blocks.

:func:`apply_fact` runs the pure rules (:mod:`orchestrator.domain.decisions`) on one
fact inside the caller's transaction: exits of the customer's live journeys (and the
journeys an exit triggers, e.g. re-engaged -> course_upsell), then the triggers of every
playbook. :func:`fire_due_triggers` starts the journeys whose held signal has been held
long enough, or whose postponed start is due again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from orchestrator import metrics
from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event, Journey, start
from orchestrator.domain.playbook import Playbook
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.ports import JourneyStore, Stores

log = logging.getLogger(__name__)


async def apply_fact(
    customer_id: str,
    fact: D.Fact,
    *,
    store: JourneyStore,
    context: Context,
    ingested_at: datetime | None = None,
) -> None:
    """Exits, then triggers, for one fact about one customer.

    ``ingested_at``: when ingest accepted the event behind the fact (None: unknown); a
    journey the fact starts, or the end of a journey it causes starts, keeps it
    (:mod:`orchestrator.domain.reaction`).

    A signal trigger whose start retention before expansion or a cancelled subscription
    blocks is postponed (a blocked trigger) until the block lifts: after a cancellation
    the triggers of the playbooks a cancelled customer may not be in are suspended, after
    a reactivation they count again; once the risk tier is not high and no retention
    journey is live, the needs retention held back are due. Locks the customer's live
    journeys.
    """
    now = context.clock.now()
    playbooks = context.playbooks
    chained: list[D.Fact] = []
    ended = False
    for journey in await store.journeys.live(customer_id):
        playbook = playbooks.get(journey.playbook)
        if playbook is None:
            continue
        seen = D.observed(playbook, fact, journey.journey_id)
        if seen:
            await store.journeys.add_seen(journey.journey_id, seen)
        reason = D.exit_reason(playbook, fact, journey.journey_id)
        if reason:
            await end_journey(journey, Event.EXIT, reason, store=store, now=now)
            ended = True
            chained.append(D.JourneyEndFact(playbook.name, reason, now))
    for playbook in sorted(playbooks.values(), key=lambda b: -b.priority):
        effect = D.trigger_effect(playbook, fact)
        if effect == "start" and D.too_old_to_start(fact, now, context.rules):
            metrics.OLD_TRIGGERS.labels(playbook=playbook.name).inc()
            log.debug(
                "%s not started for %s: its trigger happened at %s, more than %s ago",
                playbook.name,
                customer_id,
                fact.at.isoformat(),
                context.rules.event_trigger_max_age,
            )
        elif effect == "start":
            _, block = await try_start(
                customer_id,
                playbook,
                _why(fact),
                store=store,
                context=context,
                ingested_at=ingested_at,
            )
            hold = D.postpone_reason(playbook, block)
            if hold and isinstance(fact, D.SignalFact):
                await store.triggers.block(
                    customer_id=customer_id,
                    playbook=playbook.name,
                    signal=fact.name,
                    why=hold,
                    now=now,
                    replace=True,
                )
        elif effect == "arm" and isinstance(fact, D.SignalFact):
            await _arm_held(customer_id, playbook, fact, store=store, now=now)
        elif effect == "disarm" and isinstance(fact, D.SignalFact):
            await store.triggers.disarm(customer_id, playbook.name, fact.name)
    if isinstance(fact, D.EventFact) and fact.type in R.SUBSCRIPTION_STATES:
        state = R.SUBSCRIPTION_STATES[fact.type]
        await _subscription_changed(customer_id, state, store=store, context=context)
    if ended or isinstance(fact, D.ScoreFact):
        await lift_retention_first(customer_id, store=store, context=context)
    for follow in chained:
        await apply_fact(customer_id, follow, store=store, context=context, ingested_at=ingested_at)


async def end_journey(
    journey: Journey,
    event: Event,
    reason: str,
    *,
    store: JourneyStore,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Exit, finish or cancel a live journey and its pending steps (raises
    ``IllegalTransition`` if it already ended). If one of them was waiting for a
    frequency-cap slot, the customer's other steps waiting for one are due now: the slot
    may be theirs."""
    change = journey.apply(event, now, {"reason": reason, **(detail or {})})
    if await store.journeys.end(journey, change, reason):
        await store.journeys.wake_waiting(journey.customer_id, now)
    metrics.JOURNEYS_ENDED.labels(playbook=journey.playbook, reason=reason).inc()


async def cancel_live(customer_id: str, reason: str, *, store: JourneyStore, now: datetime) -> None:
    """Cancel every live journey of the customer (an erasure)."""
    for journey in await store.journeys.live(customer_id):
        await end_journey(journey, Event.CANCEL, reason, store=store, now=now)


async def try_start(
    customer_id: str,
    playbook: Playbook,
    detail: Mapping[str, Any],
    *,
    store: JourneyStore,
    context: Context,
    ingested_at: datetime | None = None,
) -> tuple[str | None, str | None]:
    """Start a journey of ``playbook`` unless a rule blocks it: (its id, None), or
    (None, the block). ``ingested_at``: that of the event whose fact starts it, if any."""
    now = context.clock.now()
    live = await store.journeys.live(customer_id)
    books = context.playbooks
    block = D.start_block(
        playbook,
        await store.customers.get(customer_id),
        live_lanes=frozenset(books[j.playbook].lane for j in live if j.playbook in books),
        last_ended_at=await store.journeys.last_ended_at(customer_id, playbook.name),
        has_live_journey=any(j.playbook == playbook.name for j in live),
        paused=await store.pauses.is_paused(playbook.name),
        now=now,
    )
    if block:
        return None, block
    arm = D.assign_arm(playbook, customer_id)
    journey_id = store.journeys.new_id(playbook.name)
    change = start(journey_id, now, {**detail, "arm": arm})
    journey = Journey(
        journey_id=journey_id,
        customer_id=customer_id,
        playbook=playbook.name,
        state=change.after,
        started_at=now,
        arm=arm,
        variant=D.pick_variant(playbook, customer_id),
        ingested_at=ingested_at,
    )
    if not await store.journeys.start(journey, change, D.schedule(playbook, now)):
        return None, "journey already live"
    metrics.JOURNEYS_STARTED.labels(playbook=playbook.name).inc()
    return journey_id, None


async def _arm_held(
    customer_id: str,
    playbook: Playbook,
    fact: D.SignalFact,
    *,
    store: JourneyStore,
    now: datetime,
) -> None:
    """Arm a held-signal trigger: due once the signal has been held, or blocked until the
    reactivation when the customer is cancelled (:func:`decisions.arm_block`)."""
    hold = D.arm_block(playbook, await store.customers.get(customer_id))
    if hold:
        await store.triggers.block(
            customer_id=customer_id,
            playbook=playbook.name,
            signal=fact.name,
            why=hold,
            now=now,
            replace=False,
        )
        return
    await store.triggers.arm(
        customer_id=customer_id,
        playbook=playbook.name,
        signal=fact.name,
        now=now,
        due_at=fact.at + D.held_for(playbook),
    )


async def _subscription_changed(
    customer_id: str, state: str, *, store: JourneyStore, context: Context
) -> None:
    """A cancellation suspends the pending triggers of every playbook a cancelled customer
    may not be in; a reactivation (or a new subscription) makes them due again, each once
    its signal has been held again (:func:`decisions.unblock_due`)."""
    books = context.playbooks
    if state == "cancelled":
        names = [b.name for b in books.values() if not b.admits_cancelled]
        await store.triggers.suspend(customer_id, names, why=D.CANCELLED)
        return
    now = context.clock.now()
    due = {
        name: D.unblock_due(books[name], D.CANCELLED, now)
        for name in await store.triggers.blocked(customer_id, D.CANCELLED)
        if name in books
    }
    await store.triggers.lift(customer_id, D.CANCELLED, due)


async def lift_retention_first(customer_id: str, *, store: JourneyStore, context: Context) -> None:
    """Make the triggers retention before expansion postponed due now, once it no longer
    holds: the risk tier is not high and no retention journey is live. Call it after a
    score (the tier may have fallen) and after a journey ended."""
    waiting = await store.triggers.blocked(customer_id, R.RETENTION_FIRST)
    if not waiting:
        return
    books = context.playbooks
    live = await store.journeys.live(customer_id, lock=False)
    lanes = [books[j.playbook].lane for j in live if j.playbook in books]
    customer = await store.customers.get(customer_id)
    if R.retention_first("expansion", customer.tier, lanes):
        return
    now = context.clock.now()
    await store.triggers.lift(customer_id, R.RETENTION_FIRST, {name: now for name in waiting})


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


# --- held-signal triggers: a durable timer per (customer, playbook) -------------------------


async def fire_due_triggers(*, stores: Stores, context: Context, limit: int) -> int:
    """Start the journeys whose signal has been held long enough, or whose postponed start
    is due again (its block lifted); how many triggers fired.

    The signal_off that would have disarmed a trigger commits before or after this
    transaction, never in the middle (the trigger is locked), so a trigger fires only if
    its signal stayed on. A start blocked again by retention before expansion or a
    cancellation waits for that block to lift; otherwise, while a held signal stays on,
    the trigger is armed again (:func:`decisions.rearm_at`): a customer still in that
    state re-enters after the cooldown. A postponed unheld trigger fires once. Safe to
    run from any number of replicas.
    """
    now = context.clock.now()
    async with stores.begin() as store:
        due = await store.triggers.claim_due(now, limit)
        for trigger in due:
            await store.triggers.mark_fired(trigger.id)
            playbook = context.playbooks.get(trigger.playbook)
            if playbook is None:
                continue
            held = D.held_for(playbook) > timedelta(0)
            kind = "signal_held" if held else "signal_postponed"
            detail = {"trigger": kind, "signal": trigger.signal}
            _, block = await try_start(
                trigger.customer_id, playbook, detail, store=store, context=context
            )
            hold = D.postpone_reason(playbook, block)
            if hold:
                await store.triggers.block(
                    customer_id=trigger.customer_id,
                    playbook=playbook.name,
                    signal=trigger.signal,
                    why=hold,
                    now=now,
                    replace=True,
                )
            elif held:
                ended = await store.journeys.last_ended_at(trigger.customer_id, playbook.name)
                await store.triggers.arm(
                    customer_id=trigger.customer_id,
                    playbook=playbook.name,
                    signal=trigger.signal,
                    now=now,
                    due_at=D.rearm_at(playbook, block, now=now, last_ended_at=ended),
                )
    return len(due)
