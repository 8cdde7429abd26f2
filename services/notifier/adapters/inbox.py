"""The in-app inbox in PostgreSQL. Every query is scoped to one customer id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

TS = sa.TIMESTAMP(timezone=True)
inbox_messages = sa.Table(
    "inbox_messages",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("notification_id", sa.Text),
    sa.Column("customer_id", sa.Text),
    sa.Column("journey_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("step", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("body", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("read_at", TS),
    sa.Column("dismissed_at", TS),
)


@dataclass(frozen=True)
class InboxMessage:
    id: int
    notification_id: str
    customer_id: str
    journey_id: str | None
    playbook: str | None
    step: str | None
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None
    dismissed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "title": self.title,
            "body": self.body,
            "playbook": self.playbook,
            "step": self.step,
            "created_at": self.created_at.isoformat(),
            "read_at": self.read_at.isoformat() if self.read_at else None,
        }


def _message(row: Any) -> InboxMessage:
    return InboxMessage(**{c.name: getattr(row, c.name) for c in inbox_messages.columns})


class Inbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def store(
        self,
        *,
        notification_id: str,
        customer_id: str,
        journey_id: str | None,
        playbook: str | None,
        step: str | None,
        title: str,
        body: str,
        created_at: datetime,
    ) -> bool:
        """Put a message in the customer's inbox; False if it is there already (idempotent)."""
        stmt = (
            insert(inbox_messages)
            .values(
                notification_id=notification_id,
                customer_id=customer_id,
                journey_id=journey_id,
                playbook=playbook,
                step=step,
                title=title,
                body=body,
                created_at=created_at,
            )
            .on_conflict_do_nothing(index_elements=["notification_id"])
            .returning(inbox_messages.c.id)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def list(
        self, customer_id: str, *, after_id: int = 0, limit: int, include_read: bool = True
    ) -> list[InboxMessage]:
        """The customer's undismissed messages with ``id > after_id``, oldest first."""
        query = (
            sa.select(inbox_messages)
            .where(
                inbox_messages.c.customer_id == customer_id,
                inbox_messages.c.id > after_id,
                inbox_messages.c.dismissed_at.is_(None),
            )
            .order_by(inbox_messages.c.id)
            .limit(limit)
        )
        if not include_read:
            query = query.where(inbox_messages.c.read_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_message(r) for r in rows]

    async def last_id(self, customer_id: str) -> int:
        """The id of the customer's newest message (0 if none): where a new stream starts."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.max(inbox_messages.c.id)).where(
                    inbox_messages.c.customer_id == customer_id
                )
            )
        return int(value or 0)

    async def mark(
        self, customer_id: str, message_id: int, *, column: str, at: datetime
    ) -> tuple[InboxMessage, bool] | None:
        """Set ``read_at`` or ``dismissed_at`` of one of the customer's messages.

        None when the customer has no such message (another customer's id included);
        else the message and whether this call changed it (False when already set).
        """
        if column not in ("read_at", "dismissed_at"):
            raise ValueError(column)
        col = inbox_messages.c[column]
        owned = sa.and_(
            inbox_messages.c.id == message_id, inbox_messages.c.customer_id == customer_id
        )
        async with self.engine.begin() as conn:
            changed = (
                await conn.execute(
                    inbox_messages.update()
                    .where(owned, col.is_(None))
                    .values({column: at})
                    .returning(*inbox_messages.columns)
                )
            ).first()
            if changed is not None:
                return _message(changed), True
            row = (await conn.execute(sa.select(inbox_messages).where(owned))).first()
        return None if row is None else (_message(row), False)
