"""Operator actions: pause, resume or cancel a journey; pause or resume a playbook.

Each runs in a transaction of its own and raises, changing nothing, when the journey
machine forbids it: :class:`~orchestrator.domain.journey.IllegalTransition`, or
:class:`~orchestrator.domain.errors.JourneyNotFound` /
:class:`~orchestrator.domain.errors.PlaybookNotFound`.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.domain.errors import PlaybookNotFound
from orchestrator.domain.journey import Event, IllegalTransition, Journey, State
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.journeys import end_journey, lift_retention_first
from orchestrator.service_layer.ports import JourneyStore, Stores


async def pause_journey(
    journey_id: str, *, stores: Stores, context: Context, by: str = "operator"
) -> Journey:
    """Pause an active journey: its due steps wait (they are not claimed) until resumed."""
    async with stores.begin() as store:
        return await _pause(store, journey_id, context.clock.now(), by)


async def resume_journey(
    journey_id: str, *, stores: Stores, context: Context, by: str = "operator"
) -> Journey:
    """Resume a paused journey; steps that fell due meanwhile fire at the next claim.
    Illegal while its playbook is paused."""
    async with stores.begin() as store:
        return await _resume(store, journey_id, context.clock.now(), by, check_playbook=True)


async def cancel_journey(
    journey_id: str,
    *,
    stores: Stores,
    context: Context,
    by: str = "operator",
    reason: str = "cancelled by operator",
) -> Journey:
    """Cancel a live (active or paused) journey and its pending steps; a cancelled
    retention journey no longer holds expansion back."""
    async with stores.begin() as store:
        journey = await store.journeys.get(journey_id)
        now = context.clock.now()
        await end_journey(journey, Event.CANCEL, reason, store=store, now=now, detail={"by": by})
        await lift_retention_first(journey.customer_id, store=store, context=context)
        return journey


async def pause_playbook(
    name: str, *, stores: Stores, context: Context, by: str = "operator"
) -> int:
    """Pause a playbook: no journey of it starts, and its active journeys are paused
    (``paused_by = 'playbook'``) so that their due steps wait. Idempotent; how many
    journeys it paused."""
    if name not in context.playbooks:
        raise PlaybookNotFound(f"playbook {name} not found")
    now = context.clock.now()
    async with stores.begin() as store:
        await store.pauses.pause(name, now, by)
        active = await store.journeys.of_playbook(name, State.ACTIVE, paused_by=None)
        for journey_id in active:
            await _pause(store, journey_id, now, "playbook")
    return len(active)


async def resume_playbook(
    name: str, *, stores: Stores, context: Context, by: str = "operator"
) -> int:
    """Resume a paused playbook and the journeys its pause paused (not those an operator
    paused one by one). Idempotent; how many journeys it resumed."""
    if name not in context.playbooks:
        raise PlaybookNotFound(f"playbook {name} not found")
    now = context.clock.now()
    async with stores.begin() as store:
        await store.pauses.resume(name)
        paused = await store.journeys.of_playbook(name, State.PAUSED, paused_by="playbook")
        for journey_id in paused:
            await _resume(store, journey_id, now, by, check_playbook=False)
    return len(paused)


async def _pause(store: JourneyStore, journey_id: str, now: datetime, by: str) -> Journey:
    journey = await store.journeys.get(journey_id)
    change = journey.apply(Event.PAUSE, now, {"by": by})
    journey.paused_by = by
    await store.journeys.save(journey, change)
    return journey


async def _resume(
    store: JourneyStore, journey_id: str, now: datetime, by: str, *, check_playbook: bool
) -> Journey:
    journey = await store.journeys.get(journey_id)
    if check_playbook and await store.pauses.is_paused(journey.playbook):
        raise IllegalTransition(f"playbook {journey.playbook} is paused: resume it first")
    change = journey.apply(Event.RESUME, now, {"by": by})
    journey.paused_by = None
    await store.journeys.save(journey, change)
    return journey
