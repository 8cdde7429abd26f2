"""The MRR ledger in PostgreSQL (``mrr_movements``, ``subscription_states``): implements
:class:`ports.MrrLedger` on the caller's connection and transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import mrr_movements, subscription_states
from orchestrator.domain.movements import Classified, State, Subscription

S = subscription_states.c


class SqlMrrLedger:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def before(self, customer_id: str, at: datetime, event_id: str) -> Subscription | None:
        row = (
            await self.conn.execute(
                sa.select(S.state, S.mrr, S.plan, S.currency, S.mrr_when_cancelled)
                .where(
                    S.customer_id == customer_id,
                    sa.tuple_(S.occurred_at, S.event_id) < sa.tuple_(sa.literal(at), event_id),
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

    async def record(self, classified: Classified) -> None:
        state = classified.state
        movement = classified.movement
        stmt = insert(subscription_states).values(
            event_id=state.event_id,
            customer_id=state.customer_id,
            state=state.state.value,
            plan=state.plan,
            mrr=state.mrr,
            currency=state.currency,
            mrr_when_cancelled=state.mrr_when_cancelled,
            occurred_at=state.at,
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["event_id"],
                set_={
                    c: stmt.excluded[c]
                    for c in ("state", "plan", "mrr", "currency", "mrr_when_cancelled")
                },
            )
        )
        if movement is None:
            await self.conn.execute(
                mrr_movements.delete().where(mrr_movements.c.event_id == state.event_id)
            )
            return
        values = {
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
        moved = insert(mrr_movements).values(event_id=movement.event_id, **values)
        await self.conn.execute(
            moved.on_conflict_do_update(index_elements=["event_id"], set_=values)
        )
