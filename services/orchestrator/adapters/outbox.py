"""The transactional outbox in PostgreSQL, as the relay reads it: rows are written with
the state change that made them (``adapters/step_store.py``, ``adapters/privacy.py``) and
published by the relay (``entrypoints/relay.py``), which marks them here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import outbox


async def claim(conn: AsyncConnection, limit: int) -> list[sa.Row[Any]]:
    """Lock up to ``limit`` unpublished rows, oldest first, that no other transaction holds."""
    query = (
        sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.headers)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows: Sequence[sa.Row[Any]] = (await conn.execute(query)).all()  # type: ignore[assignment]
    return list(rows)


async def mark_published(conn: AsyncConnection, ids: list[int]) -> None:
    await conn.execute(
        outbox.update().where(outbox.c.id.in_(ids)).values(published_at=sa.func.now())
    )
