"""The timer worker: fires due steps. Any number of replicas may run it (SKIP LOCKED).

Claiming, the state change and the outbox write happen in one transaction: a crash
rolls all of it back and another replica fires the timer; nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import logging

from common.messages import Notification
from common.runtime import sleep_or_stop
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import journeys as repo
from orchestrator.domain import decisions
from orchestrator.entrypoints.deps import Deps

log = logging.getLogger(__name__)


async def fire_due(deps: Deps, *, limit: int) -> int:
    """Fire up to ``limit`` due timers; returns how many were handled."""
    now = deps.clock.now()
    topic = topic_name(Topic.NOTIFICATIONS, deps.topic_prefix)
    async with deps.engine.begin() as conn:
        due = await repo.claim_due_timers(conn, now, limit)
        for timer in due:
            playbook = deps.playbooks.get(timer.playbook)
            if timer.state != "active" or playbook is None:
                await repo.cancel_timer(conn, timer.id)
                continue
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
                    recipient=profile.get("email")
                    if step.recipient == "customer"
                    else step.recipient,
                    created_at=now,
                    context=decisions.step_context(
                        profile, score, timer.variant, timer.due_at, step.after
                    ),
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
            lateness = deps.clock.real_seconds(now - timer.due_at)
            metrics.TIMER_LATENESS.observe(max(0.0, lateness))
            if playbook.is_last(step.id):
                metrics.JOURNEYS_ENDED.labels(playbook=playbook.name, reason="completed").inc()
    return len(due)


async def run_timers(deps: Deps, *, stop: asyncio.Event, poll_s: float, batch: int) -> None:
    while not stop.is_set():
        try:
            fired = await fire_due(deps, limit=batch)
        except Exception:
            log.exception("timer batch failed; will retry")
            fired = 0
        if fired < batch:
            await sleep_or_stop(stop, poll_s)
