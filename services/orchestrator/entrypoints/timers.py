"""The timer worker: fires due steps. Any number of replicas may run it (SKIP LOCKED).

Claiming, the state change and the outbox write happen in one transaction: a crash
rolls all of it back and another replica fires the timer; nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import logging

from common.runtime import sleep_or_stop
from common.topics import Topic, topic_name
from orchestrator.adapters import journeys as repo
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.steps import fire_step

log = logging.getLogger(__name__)


async def fire_due(deps: Deps, *, limit: int) -> int:
    """Fire up to ``limit`` due timers; returns how many were handled."""
    now = deps.clock.now()
    topic = topic_name(Topic.NOTIFICATIONS, deps.topic_prefix)
    async with deps.engine.begin() as conn:
        due = await repo.claim_due_timers(conn, now, limit)
        for timer in due:
            await fire_step(conn, deps, timer, now, topic)
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
