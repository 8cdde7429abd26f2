"""The MRR ledger in PostgreSQL (``subscription_events``, the log; ``subscription_states``
and ``mrr_movements``, derived from it): implements :class:`ports.MrrLedger` on the
caller's connection and transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import mrr_movements, subscription_events, subscription_states
from orchestrator.domain.attribution import Payment
from orchestrator.domain.movements import Classified, State, Subscription

S = subscription_states.c
E = subscription_events.c
M = mrr_movements.c


def _exact(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _from(table: sa.Table, at: datetime, event_id: str) -> sa.ColumnElement[bool]:
    return sa.tuple_(table.c.occurred_at, table.c.event_id) >= sa.tuple_(
        sa.literal(at), sa.literal(event_id)
    )


class SqlMrrLedger:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self, customer_id: str) -> None:
        key = sa.func.hashtextextended(f"mrr:{customer_id}", 0)
        await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    async def log(self, customer_id: str, payment: Payment) -> None:
        await self.conn.execute(
            insert(subscription_events)
            .values(
                event_id=payment.event_id,
                customer_id=customer_id,
                type=payment.type,
                occurred_at=payment.at,
                plan=payment.plan,
                amount=_exact(payment.amount),
                currency=payment.currency,
                mrr_before=_exact(payment.mrr_before),
                mrr_after=_exact(payment.mrr_after),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )

    async def logged_from(self, customer_id: str, at: datetime, event_id: str) -> list[Payment]:
        rows = await self.conn.execute(
            sa.select(subscription_events)
            .where(E.customer_id == customer_id, _from(subscription_events, at, event_id))
            .order_by(E.occurred_at, E.event_id)
        )
        return [
            Payment(
                event_id=r.event_id,
                type=r.type,
                at=r.occurred_at,
                plan=r.plan,
                amount=_float(r.amount),
                currency=r.currency,
                mrr_before=_float(r.mrr_before),
                mrr_after=_float(r.mrr_after),
            )
            for r in rows
        ]

    async def before(self, customer_id: str, at: datetime, event_id: str) -> Subscription | None:
        row = (
            await self.conn.execute(
                sa.select(S.state, S.mrr, S.plan, S.currency, S.mrr_when_cancelled)
                .where(
                    S.customer_id == customer_id,
                    sa.not_(_from(subscription_states, at, event_id)),
                )
                .order_by(S.occurred_at.desc(), S.event_id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        return Subscription(
            State(row.state), row.mrr, row.plan, row.currency, row.mrr_when_cancelled
        )

    async def forget_from(self, customer_id: str, at: datetime, event_id: str) -> None:
        for table in (subscription_states, mrr_movements):
            await self.conn.execute(
                table.delete().where(table.c.customer_id == customer_id, _from(table, at, event_id))
            )

    async def record(self, classified: Classified) -> None:
        state = classified.state
        values: dict[str, Any] = {
            "customer_id": state.customer_id,
            "state": state.state.value,
            "plan": state.plan,
            "mrr": state.mrr,
            "currency": state.currency,
            "mrr_when_cancelled": state.mrr_when_cancelled,
            "occurred_at": state.at,
        }
        stmt = insert(subscription_states).values(event_id=state.event_id, **values)
        await self.conn.execute(
            stmt.on_conflict_do_update(index_elements=["event_id"], set_=values)
        )
        movement = classified.movement
        if movement is None:
            await self.conn.execute(mrr_movements.delete().where(M.event_id == state.event_id))
            return
        moved: dict[str, Any] = {
            "customer_id": movement.customer_id,
            "kind": movement.kind.value,
            "amount": movement.amount,
            "currency": movement.currency,
            "plan_before": movement.plan_before,
            "plan_after": movement.plan_after,
            "mrr_before": movement.mrr_before,
            "mrr_after": movement.mrr_after,
            "event_type": movement.event_type,
            "occurred_at": movement.at,
        }
        stmt = insert(mrr_movements).values(event_id=movement.event_id, **moved)
        await self.conn.execute(stmt.on_conflict_do_update(index_elements=["event_id"], set_=moved))
