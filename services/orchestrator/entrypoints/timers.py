"""The timer workers: due steps and due held triggers. Any number of replicas may run them.

Each round of :func:`run_timers` claims a batch of due timers under a lease (short
transaction, ``FOR UPDATE SKIP LOCKED``), then fires the batch in one transaction that
re-takes only the timers still leased to this replica
(:func:`orchestrator.service_layer.steps.fire_batch`): the state change, the outbox row
and the timer's status commit together or not at all. A replica killed at any point
loses nothing (its uncommitted work rolls back, its leases run out and another replica
claims them) and doubles nothing (a timer is fired only by the transaction that changes
its status from ``pending``). See ``orchestrator.adapters.timer_store`` for what the
lease protects. A database outage is no timer's failure: the worker waits for the
database (:func:`common.outage.ride_out`), and the timers whose leases ran out meanwhile
are claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from common.outage import DatabaseUnavailable, ride_out
from common.runtime import sleep_or_stop
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer import journeys
from orchestrator.service_layer.ports import Lease
from orchestrator.service_layer.steps import fire_batch
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


async def fire_due(
    deps: Deps, *, limit: int, lease: Lease | None = None, concurrency: int = 1
) -> int:
    """Fire up to ``limit`` due timers; returns how many were handled."""
    fired = await fire_batch(
        stores=deps.stores,
        context=deps.context,
        lease=lease or _default_lease(),
        limit=limit,
        concurrency=concurrency,
    )
    return len(fired)


async def fire_due_triggers(deps: Deps, *, limit: int) -> int:
    """Fire up to ``limit`` due held triggers; returns how many fired."""
    return await journeys.fire_due_triggers(stores=deps.stores, context=deps.context, limit=limit)


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


async def run_held_triggers(deps: Deps, *, stop: asyncio.Event, poll_s: float, batch: int) -> None:
    """Fire due held-signal triggers until ``stop``; errors are logged and retried, a
    database outage waited out."""

    while not stop.is_set():
        try:
            fired = await ride_out(
                lambda: fire_due_triggers(deps, limit=batch), what="held triggers", stop=stop
            )
        except DatabaseUnavailable:
            break  # stopping during an outage
        except Exception:
            log.exception("held-trigger batch failed; will retry")
            fired = 0
        if fired < batch:
            await sleep_or_stop(stop, poll_s)
