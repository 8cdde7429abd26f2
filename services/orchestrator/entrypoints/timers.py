"""The timer worker: fires due steps. Any number of replicas may run it.

Each round claims a batch of due timers under a lease (short transaction, ``FOR UPDATE
SKIP LOCKED``), then fires the batch in one transaction that re-takes only the timers
still leased to this replica: the state change, the outbox row and the timer's status
commit together or not at all. A replica killed at any point loses nothing (its
uncommitted work rolls back, its leases run out and another replica claims them) and
doubles nothing (a timer is fired only by the transaction that changes its status from
``pending``). See ``orchestrator.adapters.timer_store`` for what the lease protects.

If the batch transaction fails, its timers are fired one per transaction, so that one
timer that cannot be fired does not hold back the others; such a timer keeps its lease
(retried when it runs out) and is marked ``failed`` after ``max_attempts`` claims. A
database outage is no timer's failure: the worker waits for the database
(:func:`common.outage.ride_out`), and the timers whose leases ran out meanwhile are
claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
import zlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from common.outage import DatabaseUnavailable, ride_out, unavailable
from common.runtime import sleep_or_stop
from common.topics import Topic, topic_name
from orchestrator import metrics
from orchestrator.adapters import timer_store
from orchestrator.adapters.timer_store import Lease
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.steps import fire_step, fire_steps
from orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)


def replica_name() -> str:
    """A lease owner unique to this process: host, pid and a random part (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_from_settings(settings: OrchestratorSettings, owner: str | None = None) -> Lease:
    return Lease(
        owner=owner or replica_name(),
        seconds=settings.timer_lease_s,
        max_attempts=settings.timer_max_attempts,
    )


_DEFAULT_LEASE: Lease | None = None


def _default_lease() -> Lease:
    global _DEFAULT_LEASE
    if _DEFAULT_LEASE is None:
        _DEFAULT_LEASE = lease_from_settings(OrchestratorSettings())
    return _DEFAULT_LEASE


async def fire_batch(
    deps: Deps, *, limit: int, lease: Lease, concurrency: int = 1
) -> list[sa.Row[Any]]:
    """Claim and fire up to ``limit`` due timers; the timers fired (or cancelled) by this call.

    With ``concurrency`` > 1 the claimed timers are split by customer into that many
    groups, each fired in its own transaction on its own connection at the same time:
    a customer's timers stay in one group, in due order, so two groups never touch the
    same journey. Idempotent and safe to run concurrently from any number of processes.
    """
    now = deps.clock.now()
    async with deps.engine.connect() as conn:
        # One statement, atomic on its own: no BEGIN and COMMIT round trips around it.
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        claimed = await timer_store.claim(conn, lease, now, limit)
    if not claimed:
        return []
    topic = topic_name(Topic.NOTIFICATIONS, deps.topic_prefix)
    groups: dict[int, list[int]] = {}
    for timer in claimed:
        groups.setdefault(zlib.crc32(timer.customer_id.encode()) % concurrency, []).append(timer.id)
    fired = await asyncio.gather(
        *(_fire_group(deps, ids, now, topic, lease) for ids in groups.values())
    )
    return [row for group in fired for row in group]


async def _fire_group(
    deps: Deps, ids: list[int], now: datetime, topic: str, lease: Lease
) -> list[sa.Row[Any]]:
    try:
        async with deps.engine.begin() as conn:
            taken = await timer_store.take_leased(conn, lease, ids)
            # Customers in one order everywhere: a step takes its customer's cap lock, and
            # two replicas locking customers in opposite orders would deadlock. A
            # customer's own timers stay in due order.
            ordered = sorted(taken, key=lambda t: (t.customer_id, t.due_at, t.id))
            await fire_steps(conn, deps, ordered, now, topic)
        return taken
    except Exception as exc:
        if unavailable(exc):
            raise  # no timer's fault: the worker waits for the database
        log.exception("firing a batch of %d timers failed; firing them one by one", len(ids))
    return await _fire_each(deps, ids, now, topic, lease)


async def _fire_each(
    deps: Deps, ids: list[int], now: datetime, topic: str, lease: Lease
) -> list[sa.Row[Any]]:
    fired = []
    for timer_id in ids:
        try:
            async with deps.engine.begin() as conn:
                taken = await timer_store.take_leased(conn, lease, [timer_id])
                for timer in taken:
                    await fire_step(conn, deps, timer, now, topic)
            fired += taken
        except Exception as exc:
            if unavailable(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            async with deps.engine.begin() as conn:
                gave_up = await timer_store.record_failure(conn, lease, timer_id, reason)
            metrics.TIMER_FAILURES.labels(outcome="failed" if gave_up else "retry").inc()
            log.warning(
                "timer could not be fired",
                extra={"timer_id": timer_id, "gave_up": gave_up, "error": reason[:500]},
            )
    return fired


async def fire_due(
    deps: Deps, *, limit: int, lease: Lease | None = None, concurrency: int = 1
) -> int:
    """Fire up to ``limit`` due timers; returns how many were handled."""
    lease = lease or _default_lease()
    return len(await fire_batch(deps, limit=limit, lease=lease, concurrency=concurrency))


async def run_timers(
    deps: Deps,
    *,
    stop: asyncio.Event,
    poll_s: float,
    batch: int,
    lease: Lease | None = None,
    concurrency: int = 1,
) -> None:
    """Fire due timers until ``stop``: back to back while claims find some, else poll.

    A claim that comes back short is followed by another at once, not by the poll
    interval: at a high rate, timers come due while a batch is fired (at 3,000/s, a
    0.25 s sleep queues 750 of them). At a low rate this costs one more (empty) claim
    per poll.
    """
    lease = lease or _default_lease()
    log.info("timer worker started", extra={"lease_owner": lease.owner})
    while not stop.is_set():
        try:
            fired = await ride_out(
                lambda: fire_due(deps, limit=batch, lease=lease, concurrency=concurrency),
                what="timer worker",
                stop=stop,
            )
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("timer batch failed; will retry")
            fired = 0
        if not fired:
            await sleep_or_stop(stop, poll_s)
