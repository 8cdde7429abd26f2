"""Firing one due step: decide, build the notification, record the transition.

Runs inside the transaction that claimed the timer (see ``timers``), so the state
change and the outbox row commit together or not at all.
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
from orchestrator.entrypoints.deps import Deps


async def fire_step(
    conn: AsyncConnection, deps: Deps, timer: sa.Row[Any], now: datetime, topic: str
) -> None:
    """Fire one claimed timer: send (or skip) its step and advance the journey."""
    playbook = deps.playbooks.get(timer.playbook)
    if timer.state != "active" or playbook is None:
        await repo.cancel_timer(conn, timer.id)
        return
    step = playbook.step(timer.step)
    profile, score = await repo.customer_view(conn, timer.customer_id)
    decision = decisions.decide_step(
        playbook,
        step.id,
        email=profile.get("email"),
        consent_email=bool(profile.get("consent_email")),
        consent_in_app=bool(profile.get("consent_in_app", True)),
    )
    notification = None
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
            recipient=profile.get("email") if step.recipient == "customer" else step.recipient,
            created_at=now,
            context=decisions.step_context(profile, score, timer.variant, timer.due_at, step.after),
        )
    await repo.fire_timer(
        conn,
        timer,
        now,
        notification=notification,
        topic=topic,
        skip_reason=decision.reason,
        last=playbook.is_last(step.id),
    )
    metrics.STEPS.labels(
        playbook=playbook.name, step=step.id, outcome="sent" if decision.send else "skipped"
    ).inc()
    metrics.TIMER_LATENESS.observe(max(0.0, deps.clock.real_seconds(now - timer.due_at)))
    if playbook.is_last(step.id):
        metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason="completed").inc()
