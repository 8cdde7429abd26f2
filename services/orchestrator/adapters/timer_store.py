"""Timer leases: which replica may fire which due timers, and for how long.

A replica first *claims* up to a batch of due timers in a short transaction
(``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on each other nor take
the same rows) and writes its name and a lease deadline on them. It then *fires* them
in a second transaction that takes the rows again only while they are still its own
and still pending. Firing (state change + outbox row + ``status = 'fired'``) commits
all at once, so:

- a replica killed at any point loses nothing: uncommitted firing rolls back with its
  connection, and its claimed timers become claimable again when the lease runs out;
- a replica that hangs (stopped, stuck in a long GC or I/O) holds no row lock while
  it hangs between the two transactions; its timers go to another replica after the
  lease, and when it wakes up its firing transaction finds them no longer its own (or
  no longer pending) and fires nothing: the lease owner and the status are the fence.

``lease_until`` is compared with the database's ``clock_timestamp()``, never with a
replica's clock: replicas whose clocks disagree still agree on whose lease ran out.
Due times are on the deployment's (possibly scaled) clock and come from the caller.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import journeys, timers
from orchestrator.service_layer.ports import Claimed, Lease

__all__ = ["Claimed", "Lease", "claim", "pending_due", "record_failure", "take_leased"]


async def claim(conn: AsyncConnection, lease: Lease, now: datetime, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` timers due at ``now`` that nobody holds, earliest first.

    Only timers of active journeys are claimed (a paused or ended journey fires
    nothing). Each claim counts as an attempt. Commit promptly: the lease starts now.
    """
    free = sa.or_(timers.c.lease_until.is_(None), timers.c.lease_until < sa.func.clock_timestamp())
    candidates = (
        sa.select(timers.c.id, journeys.c.customer_id)
        .join(journeys, journeys.c.journey_id == timers.c.journey_id)
        .where(
            timers.c.status == "pending",
            timers.c.due_at <= now,
            journeys.c.state == "active",
            free,
        )
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(of=timers, skip_locked=True)
        .subquery("candidates")
    )
    until = sa.func.clock_timestamp() + sa.literal(timedelta(seconds=lease.seconds), sa.Interval)
    # The customer comes with the candidates (the journey row was read to check its
    # state): joining the journeys again in the update would read each one twice.
    rows = await conn.execute(
        timers.update()
        .where(timers.c.id == candidates.c.id)
        .values(lease_owner=lease.owner, lease_until=until, attempts=timers.c.attempts + 1)
        .returning(timers.c.id, candidates.c.customer_id, timers.c.due_at)
    )
    found = [Claimed(r.id, r.customer_id, r.due_at) for r in rows]
    return sorted(found, key=lambda c: (c.due_at, c.id))


async def take_leased(conn: AsyncConnection, lease: Lease, ids: list[int]) -> list[sa.Row[Any]]:
    """Lock the timers of ``ids`` still leased by ``lease.owner`` and pending, with their journey.

    A timer whose lease went to another replica, or that was fired or cancelled
    meanwhile, is left out: firing what this returns can never fire a timer twice.
    Blocks while another transaction holds one of the rows (it is firing or claiming
    it), then re-checks the conditions against the committed row. Sets the
    transaction's idle timeout to the lease.
    """
    if not ids:
        return []
    # A replica that hangs *inside* this transaction holds these row locks, which the
    # lease cannot take back: the server ends a session idle in a transaction for longer
    # than the lease, releasing them (a slow but working replica is not affected).
    # Set by the same statement (once per row taken: no row taken, no lock held).
    idle_timeout = sa.func.set_config(
        "idle_in_transaction_session_timeout", f"{int(lease.seconds * 1000)}ms", True
    )
    query = (
        sa.select(
            timers.c.id,
            timers.c.step,
            timers.c.due_at,
            timers.c.attempts,
            timers.c.waiting_since,
            journeys,
            idle_timeout.label("idle_timeout"),
        )
        .join(journeys, journeys.c.journey_id == timers.c.journey_id)
        .where(
            timers.c.id.in_(ids),
            timers.c.lease_owner == lease.owner,
            timers.c.status == "pending",
        )
        .order_by(timers.c.due_at, timers.c.id)
        .with_for_update(of=timers)
    )
    return list((await conn.execute(query)).all())


async def record_failure(conn: AsyncConnection, lease: Lease, timer_id: int, error: str) -> bool:
    """Note why firing ``timer_id`` failed; mark it ``failed`` after too many attempts.

    Until then the lease is kept, so the timer is retried when it runs out (the lease
    is the back-off). Returns whether the timer was given up.
    """
    row = (
        await conn.execute(
            timers.update()
            .where(
                timers.c.id == timer_id,
                timers.c.lease_owner == lease.owner,
                timers.c.status == "pending",
            )
            .values(
                last_error=error[:2000],
                status=sa.case(
                    (timers.c.attempts >= lease.max_attempts, "failed"), else_=timers.c.status
                ),
            )
            .returning(timers.c.status)
        )
    ).first()
    return row is not None and row.status == "failed"


async def pending_due(conn: AsyncConnection, now: datetime) -> int:
    """How many pending timers are due at ``now`` (leased or not)."""
    return int(
        (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(timers)
                .where(timers.c.status == "pending", timers.c.due_at <= now)
            )
        ).scalar_one()
    )
