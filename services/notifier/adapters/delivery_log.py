"""The delivery log: one row per notification id, so a replayed notification is not resent."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

TS = sa.TIMESTAMP(timezone=True)
deliveries = sa.Table(
    "deliveries",
    sa.MetaData(),
    sa.Column("notification_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("channel", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("attempts", sa.Integer),
    sa.Column("updated_at", TS),
    sa.Column("detail", sa.Text),
)


class DeliveryLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim(self, notification_id: str, customer_id: str, channel: str) -> bool:
        """Claim a notification for sending. False if it was already sent (a replay)."""
        stmt = insert(deliveries).values(
            notification_id=notification_id,
            customer_id=customer_id,
            channel=channel,
            status="sending",
            attempts=1,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["notification_id"],
            set_={
                "attempts": deliveries.c.attempts + 1,
                "status": "sending",
                "updated_at": sa.func.now(),
            },
            where=deliveries.c.status != "sent",
        ).returning(deliveries.c.notification_id)
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def finish(self, notification_id: str, status: str, detail: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.notification_id == notification_id)
                .values(status=status, detail=detail, updated_at=sa.func.now())
            )
