"""Playbooks an operator paused (``paused_playbooks``). Implements :class:`ports.Pauses`,
on the caller's connection and transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import paused_playbooks


class SqlPauses:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def is_paused(self, playbook: str) -> bool:
        query = sa.select(paused_playbooks.c.playbook).where(
            paused_playbooks.c.playbook == playbook
        )
        return (await self.conn.execute(query)).first() is not None

    async def pause(self, playbook: str, now: datetime, by: str) -> None:
        """Idempotent: a playbook paused again keeps its first pause."""
        await self.conn.execute(
            insert(paused_playbooks)
            .values(playbook=playbook, paused_at=now, paused_by=by)
            .on_conflict_do_nothing(index_elements=["playbook"])
        )

    async def resume(self, playbook: str) -> None:
        await self.conn.execute(
            paused_playbooks.delete().where(paused_playbooks.c.playbook == playbook)
        )
