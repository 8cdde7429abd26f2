"""The retry backlog, read for the stall gauges (``notifier.entrypoints.backlog``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db.tables import deliveries


@dataclass(frozen=True)
class RetryBacklog:
    """Notifications scheduled for another attempt, per channel: how many and when the
    oldest one was first tried (on the shared clock, like ``first_attempt_at``)."""

    waiting: dict[str, int]
    oldest_first_attempt: dict[str, datetime]


async def read_retry_backlog(engine: AsyncEngine) -> RetryBacklog:
    """One aggregate over the ``retrying`` rows (a partial index covers them); raises the
    driver's errors (the caller skips the reading)."""
    query = (
        sa.select(deliveries.c.channel, sa.func.count(), sa.func.min(deliveries.c.first_attempt_at))
        .where(deliveries.c.status == "retrying")
        .group_by(deliveries.c.channel)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return RetryBacklog(
        waiting={channel: count for channel, count, _ in rows},
        oldest_first_attempt={channel: first for channel, _, first in rows if first is not None},
    )
