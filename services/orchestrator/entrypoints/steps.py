"""Firing due steps: decide (pure rules), build the notifications, record the transitions.

Runs inside the transaction that took the timers (see ``timers``), so the state
changes and the outbox rows commit together or not at all. The decision is
:func:`orchestrator.domain.decisions.decide_step`, the same function the in-memory
engine of the unit timelines uses.

A group of timers is fired with a handful of statements whatever its size
(``adapters.step_store``): the frequency-cap locks of its customers, one read of every
fact the decisions need, then one write per table. The decisions are taken one timer
after the other, in the order given, on facts kept up to date in memory (a message
sent counts for the customer's next step, a finished journey no longer blocks an
expansion step, a journey's last pending step finishes it), so the result is the one
step-by-step firing would give. Rare outcomes (a wait branch that exits, a playbook
paused since the claim) are written at once, after what was collected before them.
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
from orchestrator.domain.journey import Event, Facts, State, transition
from orchestrator.entrypoints.deps import Deps

OUTCOMES = {"send": "sent", "skip": "skipped", "defer": "deferred", "exit": "exited"}


async def fire_steps(
    conn: AsyncConnection, deps: Deps, timers: Sequence[sa.Row[Any]], now: datetime, topic: str
) -> None:
    """Fire taken timers, in the order given: send, skip, defer or exit, and advance
    their journeys.

    Each row carries the timer (``id``, ``step``, ``due_at``) and its journey's columns
    (``journey_id``, ``customer_id``, ``playbook``, ``state``, ``arm``, ``variant``,
    ``seen``). A timer of a journey that is no longer active is left alone when the
    journey is paused (it waits for the resume) and cancelled when the journey ended or
    its playbook is no longer shipped. Blocks on the cap locks of customers whose
    marketing steps another transaction is deciding.
    """
    if not timers:
        return
    marketing = [
        t.customer_id
        for t in timers
        if (book := deps.playbooks.get(t.playbook)) is not None
        and any(s.id == t.step and s.marketing for s in book.steps)
    ]
    await step_store.lock_caps(conn, marketing)
    facts, paused = await step_store.gather(
        conn, [t.customer_id for t in timers], cap_since=now - deps.rules.cap_window
    )
    writes = step_store.Writes()
    states: dict[str, State] = {}  # journeys whose state changed in this group
    for timer in timers:
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
            states[timer.journey_id] = await repo.pause_journey(
                conn, timer.journey_id, now, by="playbook"
            )
            continue
        journey = next((j for j in known.live if j.journey_id == timer.journey_id), None)
        if journey is None:  # ended since it was taken
            writes.cancelled.append(timer.id)
            continue
        step = playbook.step(timer.step)
        situation = decisions.Situation(
            customer=known.customer,
            arm=timer.arm or decisions.TREATMENT,
            live_lanes=frozenset(
                deps.playbooks[j.playbook].lane
                for j in known.live
                if j.journey_id != timer.journey_id and j.playbook in deps.playbooks
            ),
            marketing_sent=tuple(known.sent),
            seen=frozenset(timer.seen or ()),
        )
        decision = decisions.decide_step(playbook, step, situation, now=now, rules=deps.rules)
        metrics.STEPS.labels(
            playbook=playbook.name, step=step.id, outcome=OUTCOMES[decision.action]
        ).inc()
        metrics.TIMER_LATENESS.observe(max(0.0, deps.clock.real_seconds(now - timer.due_at)))
        pending = Facts(pending_steps=journey.pending)
        if decision.action == "exit":
            await writes.flush(conn, now)
            await repo.end_journey(conn, timer, Event.EXIT, now, decision.reason or "wait")
            states[timer.journey_id] = State.EXITED
            known.live.remove(journey)
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
            writes.deferred.append((timer.id, decision.until))
            continue
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
                    known.profile, known.score, timer.variant, timer.due_at, step
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
            detail = {
                "step": step.id,
                "notification_id": notification.notification_id,
                "marketing": step.marketing,
            }
            if step.marketing:
                known.sent.append(now)
        else:
            event = Event.STEP_SKIPPED
            detail = {"step": step.id, "reason": decision.reason}
        new = transition(state, event, pending)
        writes.transition(timer.journey_id, state.value, new.value, event.value, now, detail)
        writes.fired.append(timer.id)
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
            known.live.remove(journey)
            metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason="completed").inc()
    await writes.flush(conn, now)


async def fire_step(
    conn: AsyncConnection, deps: Deps, timer: sa.Row[Any], now: datetime, topic: str
) -> None:
    """Fire one taken timer (see :func:`fire_steps`)."""
    await fire_steps(conn, deps, [timer], now, topic)
