"""What the outbox relay keeps in PostgreSQL: its leadership lock and its checkpoint.

Every function takes an open connection; the caller commits.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import outbox, relay_checkpoint

# A session-level advisory lock: one relay at a time across all replicas. It is an
# identifier ("orchestrator outbox relay"), not a tunable number.
RELAY_LOCK = 0x0_7E_4E_0001


async def try_lead(conn: AsyncConnection) -> bool:
    """Take the relay lock for the life of ``conn``'s session; False if another holds it."""
    return bool((await conn.execute(sa.select(sa.func.pg_try_advisory_lock(RELAY_LOCK)))).scalar())


async def checkpoint(conn: AsyncConnection) -> dict[str, dict[int, int]]:
    """Topic → partition → offset after the last batch marked published."""
    found: dict[str, dict[int, int]] = {}
    for row in await conn.execute(sa.select(relay_checkpoint)):
        found.setdefault(row.topic, {})[row.partition] = int(row.next_offset)
    return found


async def advance(conn: AsyncConnection, after: dict[tuple[str, int], int]) -> None:
    """Move the checkpoint forward to ``after`` ((topic, partition) → offset); never back."""
    if not after:
        return
    stmt = insert(relay_checkpoint).values(
        [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in after.items()]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={
                "next_offset": sa.func.greatest(
                    relay_checkpoint.c.next_offset, stmt.excluded.next_offset
                )
            },
        )
    )


async def mark_found(conn: AsyncConnection, ids: list[int]) -> int:
    """Mark published the outbox rows of ``ids`` found on the topic; how many were not yet."""
    if not ids:
        return 0
    result = await conn.execute(
        outbox.update()
        .where(outbox.c.id.in_(ids), outbox.c.published_at.is_(None))
        .values(published_at=sa.func.now())
    )
    return int(result.rowcount)
