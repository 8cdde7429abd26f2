"""Firing due steps: decide (pure rules), build the notifications, record the transitions.

Runs inside the transaction that took the timers (see ``timers``), so the state
changes and the outbox rows commit together or not at all. The decision is
:func:`orchestrator.domain.decisions.decide_step`, the same function the in-memory
engine of the unit timelines uses.

A group of timers is fired with a handful of statements whatever its size
(``adapters.step_store``): the frequency-cap locks of its customers, one read of every
fact the decisions need (and one of the journeys of its CSM tasks, for what they say),
then one write. The decisions are taken one timer after the other, a customer's in the
order its steps take cap slots, on facts kept up to date in memory (a message sent
counts for the customer's next step, a step decided no longer waits for a slot, a
finished journey no longer blocks an expansion step, a journey's last pending step
finishes it), so the result is the one step-by-step firing would give. Rare outcomes
(a wait branch that exits, a playbook paused since the claim) are written at once,
after what was collected before them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.messages import Notification
from orchestrator import metrics
from orchestrator.adapters import journeys as repo
from orchestrator.adapters import step_store
from orchestrator.domain import decisions
from orchestrator.domain import rules as R
from orchestrator.domain.journey import Event, Facts, State, transition
from orchestrator.domain.playbook import Step
from orchestrator.domain.story import StepRecord, journey_story
from orchestrator.entrypoints.deps import Deps

TREATMENT = decisions.TREATMENT
OUTCOMES = {"send": "sent", "skip": "skipped", "defer": "deferred", "exit": "exited"}


async def fire_steps(
    conn: AsyncConnection, deps: Deps, timers: Sequence[sa.Row[Any]], now: datetime, topic: str
) -> None:
    """Fire taken timers: send, skip, defer or exit, and advance their journeys.

    Each row carries the timer (``id``, ``step``, ``due_at``, ``waiting_since``) and its
    journey's columns (``journey_id``, ``customer_id``, ``playbook``, ``state``, ``arm``,
    ``variant``, ``seen``, ``started_at``). A customer's timers are decided in the order
    its waiting steps take cap slots (playbook priority, then the one waiting longest,
    then timer order); a marketing step also yields to the customer's steps outside the
    group that rank before it and wait for a slot. A timer of a journey that is no longer
    active is left alone when the journey is paused (it waits for the resume) and
    cancelled when the journey ended or its playbook is no longer shipped. Blocks on the
    cap locks of customers whose marketing steps another transaction is deciding.
    """
    if not timers:
        return
    steps = {key: _step(deps, *key) for key in {(t.playbook, t.step) for t in timers}}
    marketing = [t for t in timers if (s := steps[t.playbook, t.step]) and s.marketing]
    await step_store.lock_caps(conn, [t.customer_id for t in marketing])
    facts, paused = await step_store.gather(
        conn, [t.customer_id for t in timers], cap_since=now - deps.rules.cap_window, now=now
    )
    waiting: dict[int, step_store.WaitingStep] = {}
    for timer in marketing:  # the group's own steps waiting for a slot (gather may not say)
        if (found := _add_waiting(facts[timer.customer_id], timer)) is not None:
            waiting[timer.id] = found
    ordered = sorted(timers, key=lambda t: _order(deps, t))
    tasks = [
        t.journey_id for t in ordered if (s := steps[t.playbook, t.step]) and s.channel == "webhook"
    ]
    stories = await step_store.stories(conn, tasks)
    writes = step_store.Writes()
    states: dict[str, State] = {}  # journeys whose state changed in this group
    slots: list[tuple[int, str]] = []  # (index in writes.deferred, customer): waiting for a slot
    for timer in ordered:
        state = states.get(timer.journey_id, State(timer.state))
        playbook = deps.playbooks.get(timer.playbook)
        if state is State.PAUSED:
            continue
        if state is not State.ACTIVE or playbook is None:
            writes.cancelled.append(timer.id)
            continue
        known = facts[timer.customer_id]
        if playbook.name in paused:
            # Paused between the claim and now: the journey waits with its playbook.
            await writes.flush(conn, now)
            slots.clear()
            states[timer.journey_id] = await repo.pause_journey(
                conn, timer.journey_id, now, by="playbook"
            )
            continue
        journey = next((j for j in known.live if j.journey_id == timer.journey_id), None)
        if journey is None:  # ended since it was taken
            writes.cancelled.append(timer.id)
            continue
        step = steps[timer.playbook, timer.step] or playbook.step(timer.step)
        me = waiting.get(timer.id)
        since = timer.waiting_since or timer.due_at
        situation = decisions.Situation(
            customer=known.customer,
            arm=timer.arm or decisions.TREATMENT,
            live_lanes=_lanes(deps, known, but=timer.journey_id),
            marketing_sent=tuple(known.sent),
            seen=frozenset(timer.seen or ()),
            ahead=_ahead(deps, known, timer.id, playbook.priority, since) if step.marketing else 0,
        )
        decision = decisions.decide_step(playbook, step, situation, now=now, rules=deps.rules)
        metrics.STEPS.labels(
            playbook=playbook.name, step=step.id, outcome=OUTCOMES[decision.action]
        ).inc()
        metrics.TIMER_LATENESS.observe(max(0.0, deps.clock.real_seconds(now - timer.due_at)))
        story = stories.get(timer.journey_id)
        pending = Facts(pending_steps=journey.pending)
        if decision.action == "exit":
            await writes.flush(conn, now)
            slots.clear()
            await repo.end_journey(conn, timer, Event.EXIT, now, decision.reason or "wait")
            states[timer.journey_id] = State.EXITED
            _ended(deps, known, journey, writes, timer.customer_id)
            metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason=decision.reason).inc()
            continue
        if decision.action == "defer":
            assert decision.until is not None
            new = transition(state, Event.STEP_DEFERRED, pending)
            detail: dict[str, Any] = {
                "step": step.id,
                "reason": decision.reason,
                "until": decision.until.isoformat(),
            }
            writes.transition(
                timer.journey_id, state.value, new.value, Event.STEP_DEFERRED.value, now, detail
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
            notification = Notification(
                notification_id=decisions.notification_id(timer.journey_id, step.id),
                customer_id=timer.customer_id,
                journey_id=timer.journey_id,
                playbook=playbook.name,
                step=step.id,
                channel=step.channel,
                template=step.template,
                variant=timer.variant,
                priority=step.priority,
                recipient=decisions.recipient(step, known.customer.email),
                created_at=now,
                context=decisions.step_context(
                    known.profile,
                    known.score,
                    timer.variant,
                    timer.due_at,
                    step,
                    journey_story(
                        playbook, story.values(), current=step.id, started_at=timer.started_at
                    )
                    if story is not None
                    else None,
                ),
            )
            writes.outbox.append(
                (
                    topic,
                    notification.customer_id,
                    notification.model_dump_json().encode(),
                    orjson.dumps({"notification_id": notification.notification_id}).decode(),
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
        new = transition(state, event, pending)
        writes.transition(timer.journey_id, state.value, new.value, event.value, now, detail)
        writes.fired.append(timer.id)
        for follow, due in decisions.follow_ups(playbook, step.id, now):
            writes.scheduled.append((timer.journey_id, follow, due))
            if story is not None:
                story[follow] = StepRecord(follow, "pending", due)
        journey.pending -= 1
        if journey.pending == 0:
            done = transition(new, Event.FINISH, Facts(0))
            writes.transition(
                timer.journey_id,
                new.value,
                done.value,
                Event.FINISH.value,
                now,
                {"reason": "last step"},
            )
            writes.finished.append(timer.journey_id)
            states[timer.journey_id] = done
            _ended(deps, known, journey, writes, timer.customer_id)
            metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason="completed").inc()
    await writes.flush(conn, now)


def _wake(
    writes: step_store.Writes, slots: list[tuple[int, str]], customer_id: str, now: datetime
) -> None:
    """The customer's steps deferred for a cap slot are due now: those deferred in this
    group (not written yet) here, the others by the write (``woken``)."""
    writes.woken.add(customer_id)
    for index, customer in slots:
        timer_id, until, since = writes.deferred[index]
        if customer == customer_id and until > now:
            writes.deferred[index] = (timer_id, now, since)


def _add_waiting(
    known: step_store.CustomerFacts, timer: sa.Row[Any]
) -> step_store.WaitingStep | None:
    """A due marketing timer of an active treatment-arm journey waits for a slot: its entry
    in the customer's waiting steps (added unless the read found it), or None."""
    if timer.state != State.ACTIVE.value or (timer.arm or TREATMENT) != TREATMENT:
        return None
    found = next((w for w in known.waiting if w.timer_id == timer.id), None)
    if found is None:
        since = timer.waiting_since or timer.due_at
        deferred = timer.waiting_since is not None
        found = step_store.WaitingStep(
            timer.id, timer.journey_id, timer.playbook, timer.step, since, deferred
        )
        known.waiting.append(found)
    return found


def _step(deps: Deps, playbook: str, step: str) -> Step | None:
    book = deps.playbooks.get(playbook)
    return next((s for s in book.steps if s.id == step), None) if book else None


def _order(deps: Deps, timer: sa.Row[Any]) -> tuple[Any, ...]:
    """A customer's timers in the order their steps take cap slots (the in-memory engine
    fires the steps due at one instant in the same order)."""
    book = deps.playbooks.get(timer.playbook)
    since = timer.waiting_since or timer.due_at
    return (timer.customer_id, -(book.priority if book else 0), since, timer.id)


def _lanes(deps: Deps, known: step_store.CustomerFacts, *, but: str) -> frozenset[str]:
    """The lanes of the customer's live journeys other than ``but``."""
    return frozenset(
        deps.playbooks[j.playbook].lane
        for j in known.live
        if j.journey_id != but and j.playbook in deps.playbooks
    )


def _ahead(
    deps: Deps, known: step_store.CustomerFacts, timer_id: int, priority: int, since: datetime
) -> int:
    """How many of the customer's marketing steps waiting for a cap slot go before this one."""
    if len(known.waiting) < 2 and all(w.timer_id == timer_id for w in known.waiting):
        return 0  # none but itself
    waiting = [
        decisions.Waiting(w.timer_id, deps.playbooks[w.playbook].priority, w.since)
        for w in known.waiting
        if w.playbook in deps.playbooks and deps.playbooks[w.playbook].step(w.step).marketing
    ]
    return decisions.ahead_of(decisions.Waiting(timer_id, priority, since), waiting)


def _ended(
    deps: Deps,
    known: step_store.CustomerFacts,
    journey: step_store.LiveJourney,
    writes: step_store.Writes,
    customer_id: str,
) -> None:
    """A journey of the group ended: it no longer blocks expansion nor waits for a slot;
    the triggers retention before expansion postponed are due if it no longer holds."""
    known.live.remove(journey)
    if known.waiting:
        known.waiting[:] = [w for w in known.waiting if w.journey_id != journey.journey_id]
    book = deps.playbooks.get(journey.playbook)
    if not known.postponed or book is None or book.lane not in R.RETENTION_LANES:
        return  # only a retention journey's end can lift retention before expansion
    if not R.retention_first("expansion", known.customer.tier, _lanes(deps, known, but="")):
        writes.lifted.add(customer_id)


async def fire_step(
    conn: AsyncConnection, deps: Deps, timer: sa.Row[Any], now: datetime, topic: str
) -> None:
    """Fire one taken timer (see :func:`fire_steps`)."""
    await fire_steps(conn, deps, [timer], now, topic)
