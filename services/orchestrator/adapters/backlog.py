"""What is waiting in the orchestrator's tables: due timers, unpublished outbox rows and
live journeys, read for the stall gauges (``orchestrator.entrypoints.backlog``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db.tables import journeys, outbox, timers


@dataclass(frozen=True)
class Backlog:
    """One reading. Ages are ``None`` when nothing waits."""

    timers_due: int
    oldest_due_at: datetime | None  # on the shared clock, like ``due_at``
    outbox_pending: int
    outbox_oldest_age_s: float | None  # real seconds, on the database's clock
    live_journeys: dict[tuple[str, str], int]  # (playbook, state) -> journeys not ended


async def read_backlog(engine: AsyncEngine, *, now: datetime) -> Backlog:
    """Count what waits: pending timers due at ``now`` (the shared clock's instant),
    outbox rows not yet published and journeys not ended. Three aggregate queries over
    partial indexes' worth of rows; raises the driver's errors (the caller skips)."""
    due = sa.select(sa.func.count(), sa.func.min(timers.c.due_at)).where(
        timers.c.status == "pending", timers.c.due_at <= now
    )
    pending = sa.select(
        sa.func.count(),
        sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox.c.created_at)),
    ).where(outbox.c.published_at.is_(None))
    live = (
        sa.select(journeys.c.playbook, journeys.c.state, sa.func.count())
        .where(journeys.c.ended_at.is_(None))
        .group_by(journeys.c.playbook, journeys.c.state)
    )
    async with engine.connect() as conn:
        timers_due, oldest_due = (await conn.execute(due)).one()
        outbox_pending, outbox_age = (await conn.execute(pending)).one()
        by_state = {(p, s): n for p, s, n in await conn.execute(live)}
    return Backlog(
        timers_due=timers_due,
        oldest_due_at=oldest_due,
        outbox_pending=outbox_pending,
        outbox_oldest_age_s=None if outbox_age is None else float(outbox_age),
        live_journeys=by_state,
    )
