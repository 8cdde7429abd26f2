"""Firing due steps: decide (pure rules), build the notifications, record what they did.

:func:`fire_batch` claims due timers under a lease and fires them in one transaction
per group (see ``entrypoints/timers.py`` for the worker around it): the state change,
the outbox row and the timer's status commit together or not at all. If a group's
transaction fails, its timers are fired one per transaction, so that one timer that
cannot be fired does not hold back the others; such a timer keeps its lease (retried
when it runs out) and is given up after ``max_attempts`` claims. A database outage is no
timer's failure: it is raised for the worker to wait out.

A group is fired with a handful of statements whatever its size (:class:`ports.Steps`):
the frequency-cap locks of its customers, one read of every fact the decisions need (and
one of the journeys of its CSM tasks, for what they say), then a statement per kind of row
written. The decision
is :func:`orchestrator.domain.decisions.decide_step`, taken one timer after the other, a
customer's in the order its steps take cap slots, on facts kept up to date in memory (a
message sent counts for the customer's next step, a step decided no longer waits for a
slot, a finished journey no longer blocks an expansion step, a journey's last pending
step finishes it), so the result is the one step-by-step firing would give. Rare
outcomes (a wait branch that exits, a playbook paused since the claim) are written at
once, after what was collected before them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from common import causation
from common.messages import Notification
from common.outage import unavailable
from orchestrator import metrics
from orchestrator.domain import decisions
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event, State
from orchestrator.domain.playbook import Step
from orchestrator.domain.reaction import reaction_ingested_at
from orchestrator.domain.story import StepRecord, journey_story
from orchestrator.service_layer.context import Context
from orchestrator.service_layer.journeys import end_journey
from orchestrator.service_layer.ports import (
    CustomerFacts,
    DueStep,
    JourneyStore,
    Lease,
    LiveJourney,
    OutboxRow,
    StepWrites,
    Stores,
    WaitingStep,
)

log = logging.getLogger(__name__)

TREATMENT = decisions.TREATMENT
OUTCOMES = {"send": "sent", "skip": "skipped", "defer": "deferred", "exit": "exited"}


async def fire_batch(
    *, stores: Stores, context: Context, lease: Lease, limit: int, concurrency: int = 1
) -> list[DueStep]:
    """Claim and fire up to ``limit`` due timers; the timers fired (or cancelled).

    With ``concurrency`` > 1 the claimed timers are split by customer into that many
    groups, each fired in its own transaction at the same time: a customer's timers stay
    in one group, in due order, so two groups never touch the same journey. Idempotent
    and safe to run concurrently from any number of processes.
    """
    now = context.clock.now()
    claimed = await stores.claim(lease, now, limit)
    if not claimed:
        return []
    groups: dict[int, list[int]] = {}
    for timer in claimed:
        groups.setdefault(zlib.crc32(timer.customer_id.encode()) % concurrency, []).append(timer.id)
    fired = await asyncio.gather(
        *(
            _fire_group(ids, stores=stores, context=context, lease=lease, now=now)
            for ids in groups.values()
        )
    )
    return [due for group in fired for due in group]


async def _fire_group(
    ids: list[int], *, stores: Stores, context: Context, lease: Lease, now: datetime
) -> list[DueStep]:
    try:
        async with stores.begin() as store:
            taken = await store.steps.take(lease, ids)
            # Customers in one order everywhere: a step takes its customer's cap lock, and
            # two replicas locking customers in opposite orders would deadlock. A
            # customer's own timers stay in due order.
            ordered = sorted(taken, key=lambda t: (t.customer_id, t.due_at, t.id))
            await fire_steps(ordered, store=store, context=context, now=now)
        return taken
    except Exception as exc:
        if unavailable(exc):
            raise  # no timer's fault: the worker waits for the database
        log.exception("firing a batch of %d timers failed; firing them one by one", len(ids))
    fired = []
    for timer_id in ids:
        try:
            async with stores.begin() as store:
                taken = await store.steps.take(lease, [timer_id])
                await fire_steps(taken, store=store, context=context, now=now)
            fired += taken
        except Exception as exc:
            if unavailable(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            async with stores.begin() as store:
                gave_up = await store.steps.record_failure(lease, timer_id, reason)
            metrics.TIMER_FAILURES.labels(outcome="failed" if gave_up else "retry").inc()
            log.warning(
                "timer could not be fired",
                extra={"timer_id": timer_id, "gave_up": gave_up, "error": reason[:500]},
            )
    return fired


async def fire_steps(
    due: Sequence[DueStep], *, store: JourneyStore, context: Context, now: datetime
) -> None:
    """Fire taken timers: send, skip, defer or exit, and advance their journeys.

    A customer's timers are decided in the order its waiting steps take cap slots
    (playbook priority, then the one waiting longest, then timer order); a marketing step
    also yields to the customer's steps outside the group that rank before it and wait
    for a slot. A timer of a journey that is no longer active is left alone when the
    journey is paused (it waits for the resume) and cancelled when the journey ended or
    its playbook is no longer shipped. Blocks on the cap locks of customers whose
    marketing steps another transaction is deciding.
    """
    if not due:
        return
    books = context.playbooks
    steps = {key: _step(context, *key) for key in {(t.playbook, t.step) for t in due}}
    marketing = [t for t in due if (s := steps[t.playbook, t.step]) and s.marketing]
    await store.steps.lock_caps([t.customer_id for t in marketing])
    facts, paused = await store.steps.gather(
        [t.customer_id for t in due], cap_since=now - context.rules.cap_window, now=now
    )
    waiting: dict[int, WaitingStep] = {}
    for timer in marketing:  # the group's own steps waiting for a slot (gather may not say)
        if (found := _add_waiting(facts[timer.customer_id], timer)) is not None:
            waiting[timer.id] = found
    ordered = sorted(due, key=lambda t: _order(context, t))
    tasks = [
        t.journey.journey_id
        for t in ordered
        if (s := steps[t.playbook, t.step]) and s.channel == "webhook"
    ]
    stories = await store.steps.stories(tasks)
    writes = StepWrites()
    slots: list[tuple[int, str]] = []  # (index in writes.deferred, customer): waiting for a slot
    counted: Counter[tuple[str, str, str]] = Counter()  # steps by playbook, step and outcome
    completed: Counter[str] = Counter()  # journeys finished, by playbook
    for timer in ordered:
        journey = timer.journey
        playbook = books.get(journey.playbook)
        if journey.state is State.PAUSED:
            continue
        if journey.state is not State.ACTIVE or playbook is None:
            writes.cancelled.append(timer.id)
            continue
        known = facts[timer.customer_id]
        if playbook.name in paused:
            # Paused between the claim and now: the journey waits with its playbook.
            await _flush(store, writes, slots, now)
            fresh = await store.journeys.get(journey.journey_id)
            change = fresh.apply(Event.PAUSE, now, {"by": "playbook"})
            fresh.paused_by = "playbook"
            await store.journeys.save(fresh, change)
            journey.state, journey.paused_by = fresh.state, fresh.paused_by
            continue
        live = next((j for j in known.live if j.journey_id == journey.journey_id), None)
        if live is None:  # ended since it was taken
            writes.cancelled.append(timer.id)
            continue
        step = steps[timer.playbook, timer.step] or playbook.step(timer.step)
        me = waiting.get(timer.id)
        since = timer.waiting_since or timer.due_at
        situation = decisions.Situation(
            customer=known.customer,
            arm=journey.arm or TREATMENT,
            live_lanes=_lanes(context, known, but=journey.journey_id),
            marketing_sent=tuple(known.sent),
            seen=journey.seen,
            ahead=_ahead(context, known, timer.id, playbook.priority, since)
            if step.marketing
            else 0,
            started_at=journey.started_at,
        )
        decision = decisions.decide_step(playbook, step, situation, now=now, rules=context.rules)
        counted[playbook.name, step.id, OUTCOMES[decision.action]] += 1
        metrics.TIMER_LATENESS.observe(max(0.0, context.clock.real_seconds(now - timer.due_at)))
        story = stories.get(journey.journey_id)
        if decision.action == "exit":
            await _flush(store, writes, slots, now)
            await end_journey(journey, Event.EXIT, decision.reason or "wait", store=store, now=now)
            _ended(context, known, live, writes, timer.customer_id)
            continue
        if decision.action == "defer":
            assert decision.until is not None
            detail: dict[str, Any] = {
                "step": step.id,
                "reason": decision.reason,
                "until": decision.until.isoformat(),
            }
            writes.changes.append(
                journey.apply(Event.STEP_DEFERRED, now, detail, pending=live.pending)
            )
            for_slot = decision.reason in decisions.CAP_REASONS
            writes.deferred.append((timer.id, decision.until, since if for_slot else None))
            if me is not None and for_slot:
                me.deferred = True
            elif me is not None and not me.deferred:
                known.waiting.remove(me)  # quiet hours: no longer due
            if me is not None and me.deferred:
                slots.append((len(writes.deferred) - 1, timer.customer_id))
            if story is not None:
                story[step.id] = StepRecord(step.id, "pending", decision.until)
            continue
        if me is not None:
            known.waiting.remove(me)
        if decision.send:
            notification = _notification(timer, step, known, context, story, now)
            writes.outbox.append(
                OutboxRow(
                    context.notifications_topic,
                    notification.customer_id,
                    notification.model_dump_json().encode(),
                    _headers(notification, timer),
                )
            )
            event = Event.STEP_SENT
            detail = {  # a customer message (channel) is recorded in journey_messages too
                "step": step.id,
                "notification_id": notification.notification_id,
                "marketing": step.marketing,
                "channel": step.channel,
            }
            if step.marketing:
                known.sent.append(now)
            if story is not None:
                story[step.id] = StepRecord(step.id, "queued", now)
        else:
            event = Event.STEP_SKIPPED
            detail = {"step": step.id, "reason": decision.reason}
            if me is not None and me.deferred:
                _wake(writes, slots, timer.customer_id, now)  # the slot it waited for is free
            if story is not None:
                story[step.id] = StepRecord(step.id, "skipped", now, decision.reason)
        writes.changes.append(journey.apply(event, now, detail, pending=live.pending))
        writes.fired.append(timer.id)
        for follow, at in decisions.follow_ups(playbook, step.id, now):
            writes.scheduled.append((journey.journey_id, follow, at))
            if story is not None:
                story[follow] = StepRecord(follow, "pending", at)
        live.pending -= 1
        if live.pending == 0:
            finish = journey.apply(Event.FINISH, now, {"reason": "last step"}, pending=0)
            writes.changes.append(finish)
            writes.finished.append(journey.journey_id)
            _ended(context, known, live, writes, timer.customer_id)
            completed[playbook.name] += 1
    await _flush(store, writes, slots, now)
    for (name, step_id, outcome), n in counted.items():  # once per kind, not per timer
        metrics.STEPS.labels(playbook=name, step=step_id, outcome=outcome).inc(n)
    for name, n in completed.items():
        metrics.JOURNEYS_ENDED.labels(playbook=name, reason="completed").inc(n)


async def _flush(
    store: JourneyStore, writes: StepWrites, slots: list[tuple[int, str]], now: datetime
) -> None:
    if writes:
        await store.steps.write(writes, now)
    writes.clear()
    slots.clear()


def _notification(
    timer: DueStep,
    step: Step,
    known: CustomerFacts,
    context: Context,
    story: dict[str, StepRecord] | None,
    now: datetime,
) -> Notification:
    journey = timer.journey
    playbook = context.playbooks[journey.playbook]
    told = (
        journey_story(playbook, story.values(), current=step.id, started_at=journey.started_at)
        if story is not None
        else None
    )
    return Notification(
        notification_id=decisions.notification_id(journey.journey_id, step.id),
        customer_id=journey.customer_id,
        journey_id=journey.journey_id,
        playbook=playbook.name,
        step=step.id,
        channel=step.channel,
        template=step.template,
        variant=journey.variant,
        priority=step.priority,
        recipient=decisions.recipient(step, known.customer.email),
        created_at=now,
        context=decisions.step_context(
            known.profile, known.score, journey.variant, timer.due_at, step, told
        ),
    )


def _headers(notification: Notification, timer: DueStep) -> dict[str, str]:
    """The outbox row's headers (the relay publishes them): the notification id, and the
    ingest instant of the event it reacts to when it is that reaction
    (:func:`orchestrator.domain.reaction.reaction_ingested_at`)."""
    headers = {"notification_id": notification.notification_id}
    at = reaction_ingested_at(timer.journey, due_at=timer.due_at, waiting_since=timer.waiting_since)
    if at is not None:
        name, value = causation.header(at)
        headers[name] = value.decode()
    return headers


def _wake(
    writes: StepWrites, slots: list[tuple[int, str]], customer_id: str, now: datetime
) -> None:
    """The customer's steps deferred for a cap slot are due now: those deferred in this
    group (not written yet) here, the others by the write (``woken``)."""
    writes.woken.add(customer_id)
    for index, customer in slots:
        timer_id, until, since = writes.deferred[index]
        if customer == customer_id and until > now:
            writes.deferred[index] = (timer_id, now, since)


def _add_waiting(known: CustomerFacts, timer: DueStep) -> WaitingStep | None:
    """A due marketing timer of an active treatment-arm journey waits for a slot: its entry
    in the customer's waiting steps (added unless the read found it), or None."""
    journey = timer.journey
    if journey.state is not State.ACTIVE or (journey.arm or TREATMENT) != TREATMENT:
        return None
    found = next((w for w in known.waiting if w.timer_id == timer.id), None)
    if found is None:
        since = timer.waiting_since or timer.due_at
        deferred = timer.waiting_since is not None
        found = WaitingStep(
            timer.id, journey.journey_id, journey.playbook, timer.step, since, deferred
        )
        known.waiting.append(found)
    return found


def _step(context: Context, playbook: str, step: str) -> Step | None:
    book = context.playbooks.get(playbook)
    return next((s for s in book.steps if s.id == step), None) if book else None


def _order(context: Context, timer: DueStep) -> tuple[Any, ...]:
    """A customer's timers in the order their steps take cap slots."""
    book = context.playbooks.get(timer.playbook)
    since = timer.waiting_since or timer.due_at
    return (timer.customer_id, -(book.priority if book else 0), since, timer.id)


def _lanes(context: Context, known: CustomerFacts, *, but: str) -> frozenset[str]:
    """The lanes of the customer's live journeys other than ``but``."""
    books = context.playbooks
    return frozenset(
        books[j.playbook].lane for j in known.live if j.journey_id != but and j.playbook in books
    )


def _ahead(
    context: Context, known: CustomerFacts, timer_id: int, priority: int, since: datetime
) -> int:
    """How many of the customer's marketing steps waiting for a cap slot go before this one."""
    if len(known.waiting) < 2 and all(w.timer_id == timer_id for w in known.waiting):
        return 0  # none but itself
    books = context.playbooks
    waiting = [
        decisions.Waiting(w.timer_id, books[w.playbook].priority, w.since)
        for w in known.waiting
        if w.playbook in books and books[w.playbook].step(w.step).marketing
    ]
    return decisions.ahead_of(decisions.Waiting(timer_id, priority, since), waiting)


def _ended(
    context: Context,
    known: CustomerFacts,
    journey: LiveJourney,
    writes: StepWrites,
    customer_id: str,
) -> None:
    """A journey of the group ended: it no longer blocks expansion nor waits for a slot;
    the triggers retention before expansion postponed are due if it no longer holds."""
    known.live.remove(journey)
    if known.waiting:
        known.waiting[:] = [w for w in known.waiting if w.journey_id != journey.journey_id]
    book = context.playbooks.get(journey.playbook)
    if not known.postponed or book is None or book.lane not in R.RETENTION_LANES:
        return  # only a retention journey's end can lift retention before expansion
    if not R.retention_first("expansion", known.customer.tier, _lanes(context, known, but="")):
        writes.lifted.add(customer_id)
