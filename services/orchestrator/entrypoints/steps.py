"""Firing one due step: decide (pure rules), build the notification, record the transition.

Runs inside the transaction that took the timer (see ``timers``), so the state
change and the outbox row commit together or not at all. The decision is
:func:`orchestrator.domain.decisions.decide_step`, the same function the in-memory
engine of the unit timelines uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.messages import Notification
from orchestrator import metrics
from orchestrator.adapters import journeys as repo
from orchestrator.domain import decisions
from orchestrator.domain.journey import State
from orchestrator.entrypoints.deps import Deps


async def fire_step(
    conn: AsyncConnection, deps: Deps, timer: sa.Row[Any], now: datetime, topic: str
) -> None:
    """Fire one taken timer: send, skip, defer or exit, and advance the journey.

    A timer of a journey that is no longer active is left alone when the journey is
    paused (it waits for the resume) and cancelled when the journey ended or its
    playbook is no longer shipped.
    """
    playbook = deps.playbooks.get(timer.playbook)
    if timer.state == State.PAUSED.value:
        return
    if timer.state != State.ACTIVE.value or playbook is None:
        await repo.cancel_timer(conn, timer.id)
        return
    if await repo.playbook_paused(conn, playbook.name):
        # Paused between the claim and now: the journey waits with its playbook.
        await repo.pause_journey(conn, timer.journey_id, now, by="playbook")
        return
    step = playbook.step(timer.step)
    if step.marketing:
        await repo.lock_customer_messages(conn, timer.customer_id)
    customer = await repo.customer_facts(conn, timer.customer_id)
    live = await repo.live_journeys(conn, timer.customer_id, lock=False)
    situation = decisions.Situation(
        customer=customer,
        arm=timer.arm or decisions.TREATMENT,
        live_lanes=frozenset(
            deps.playbooks[j.playbook].lane
            for j in live
            if j.journey_id != timer.journey_id and j.playbook in deps.playbooks
        ),
        marketing_sent=tuple(
            await repo.marketing_sent(conn, timer.customer_id, now - deps.rules.cap_window)
        ),
        seen=frozenset(timer.seen or ()),
    )
    decision = decisions.decide_step(playbook, step, situation, now=now, rules=deps.rules)
    notification = None
    if decision.send:
        profile, score = await repo.customer_view(conn, timer.customer_id)
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
            recipient=decisions.recipient(step, customer.email),
            created_at=now,
            context=decisions.step_context(profile, score, timer.variant, timer.due_at, step),
        )
    state = await repo.record_step(
        conn,
        timer,
        now,
        decision=decision,
        notification=notification,
        topic=topic,
        marketing=step.marketing,
    )
    outcome = {"send": "sent", "skip": "skipped", "defer": "deferred", "exit": "exited"}
    metrics.STEPS.labels(
        playbook=playbook.name, step=step.id, outcome=outcome[decision.action]
    ).inc()
    metrics.TIMER_LATENESS.observe(max(0.0, deps.clock.real_seconds(now - timer.due_at)))
    if state is State.COMPLETED:
        metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason="completed").inc()
    elif state is State.EXITED:
        metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason=decision.reason).inc()
