"""The delivery log and retry schedule: one row per notification id, in PostgreSQL.

Statuses: ``sending`` (claimed by a worker), ``retrying`` (failed, due again at
``next_attempt_at`` on the shared clock), and the terminal ``sent``, ``suppressed``,
``bounced`` and ``dead``. A notification id is claimed at most once from Kafka; a replayed
record finds the row and is not sent again. Retries and claims a crashed worker left in
``sending`` are taken by the retry worker with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
    sa.Column("detail", sa.Text),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("first_attempt_at", TS),
    sa.Column("next_attempt_at", TS),
    sa.Column("reported_at", TS),
)

TERMINAL = ("sent", "suppressed", "bounced", "dead")


@dataclass(frozen=True)
class Claim:
    """A notification a worker now owns: try it (again)."""

    notification_id: str
    payload: bytes
    attempts: int
    first_attempt_at: datetime


@dataclass(frozen=True)
class Existing:
    """What the log already knows about a notification id seen again."""

    status: str
    detail: str | None
    reported: bool


class DeliveryLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim(
        self, *, notification_id: str, customer_id: str, channel: str, payload: bytes, now: datetime
    ) -> Existing | None:
        """Claim a notification seen on Kafka: None if it is new (now ``sending``, attempt 1).

        Otherwise the existing row: a replay or redelivery, never sent again from here.
        Idempotent; blocks on one round trip.
        """
        stmt = (
            insert(deliveries)
            .values(
                notification_id=notification_id,
                customer_id=customer_id,
                channel=channel,
                status="sending",
                attempts=1,
                payload=payload,
                first_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["notification_id"])
            .returning(deliveries.c.notification_id)
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(stmt)).first() is not None:
                return None
            row = (
                await conn.execute(
                    sa.select(
                        deliveries.c.status, deliveries.c.detail, deliveries.c.reported_at
                    ).where(deliveries.c.notification_id == notification_id)
                )
            ).one()
        return Existing(row.status, row.detail, row.reported_at is not None)

    async def finish(self, notification_id: str, status: str, detail: str | None = None) -> None:
        """Record a terminal outcome (sent, suppressed, bounced, dead)."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        async with self.engine.begin() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.notification_id == notification_id)
                .values(
                    status=status, detail=detail, next_attempt_at=None, updated_at=sa.func.now()
                )
            )

    async def mark_reported(self, notification_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.notification_id == notification_id)
                .values(reported_at=sa.func.now())
            )

    async def retry_at(self, notification_id: str, due: datetime, detail: str) -> None:
        """Schedule another attempt at ``due`` (shared clock)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.notification_id == notification_id)
                .values(
                    status="retrying", next_attempt_at=due, detail=detail, updated_at=sa.func.now()
                )
            )

    async def claim_due(self, *, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        """Take up to ``limit`` notifications due again: retries whose time has come, and
        claims left ``sending`` longer than ``lease`` (real time) by a worker that died.

        Each is moved to ``sending`` with one more attempt, in one transaction that skips
        rows other workers hold, so two workers never take the same row.
        """
        due = (
            sa.select(deliveries.c.notification_id)
            .where(
                sa.or_(
                    sa.and_(deliveries.c.status == "retrying", deliveries.c.next_attempt_at <= now),
                    sa.and_(
                        deliveries.c.status == "sending",
                        deliveries.c.updated_at < sa.func.now() - lease,
                        deliveries.c.payload.is_not(None),
                    ),
                )
            )
            .order_by(deliveries.c.next_attempt_at.nulls_first())
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            deliveries.update()
            .where(deliveries.c.notification_id.in_(due))
            .values(
                status="sending",
                attempts=deliveries.c.attempts + 1,
                updated_at=sa.func.now(),
                first_attempt_at=sa.func.coalesce(deliveries.c.first_attempt_at, now),
            )
            .returning(
                deliveries.c.notification_id,
                deliveries.c.payload,
                deliveries.c.attempts,
                deliveries.c.first_attempt_at,
            )
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Claim(r.notification_id, r.payload, r.attempts, r.first_attempt_at) for r in rows]

    async def status(self, notification_id: str) -> str | None:
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(deliveries.c.status).where(
                    deliveries.c.notification_id == notification_id
                )
            )
        return None if value is None else str(value)
