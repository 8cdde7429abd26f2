"""Customers in PostgreSQL: the profile and score projections, and what the orchestrator
learns from events (``customer_state``). Implements :class:`ports.Customers`.

Every method runs on the caller's connection, inside its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import customer_state, customers, scores
from orchestrator.adapters import privacy
from orchestrator.domain import rules as R
from orchestrator.domain.rules import customer_from


class SqlCustomers:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, customer_id: str) -> R.Customer:
        conn = self.conn
        profile = (
            await conn.execute(sa.select(customers).where(customers.c.customer_id == customer_id))
        ).first()
        state = (
            await conn.execute(
                sa.select(customer_state).where(customer_state.c.customer_id == customer_id)
            )
        ).first()
        tier = (
            await conn.execute(sa.select(scores.c.tier).where(scores.c.customer_id == customer_id))
        ).scalar()
        return customer_from(
            customer_id,
            dict(profile._mapping) if profile else None,
            dict(state._mapping) if state else None,
            tier,
        )

    async def erased_since(self, customer_id: str) -> datetime | None:
        return await privacy.erased_since(self.conn, customer_id)

    async def upsert_profile(self, row: Mapping[str, Any]) -> None:
        """An older profile event never overwrites a newer one."""
        stmt = insert(customers).values(**row)
        updates = {c: stmt.excluded[c] for c in row if c != "customer_id"}
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"],
                set_=updates,
                where=customers.c.profile_at <= stmt.excluded.profile_at,
            )
        )

    async def upsert_score(self, row: Mapping[str, Any]) -> None:
        stmt = insert(scores).values(**row)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={c: stmt.excluded[c] for c in row if c != "customer_id"},
                where=scores.c.as_of <= stmt.excluded.as_of,
            )
        )

    async def delete_score(self, customer_id: str) -> None:
        """Forget the customer's score (scoring published a tombstone: it erased the customer)."""
        await self.conn.execute(scores.delete().where(scores.c.customer_id == customer_id))

    async def _state(self, customer_id: str, **values: Any) -> None:
        stmt = insert(customer_state).values(customer_id=customer_id, **values)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"], set_={k: stmt.excluded[k] for k in values}
            )
        )

    async def note_unsubscribed(self, customer_id: str, at: datetime) -> None:
        await self._state(customer_id, unsubscribed_at=at)

    async def note_segment(self, customer_id: str, segment: str | None) -> None:
        await self._state(customer_id, segment=segment)

    async def note_loyalty_tier(self, customer_id: str, tier: str | None) -> None:
        await self._state(customer_id, loyalty_tier=tier)

    async def note_plan(self, customer_id: str, plan: str, at: datetime) -> None:
        """A plan change from a payment event; an older one never overwrites a newer one."""
        stmt = insert(customer_state).values(customer_id=customer_id, plan=plan, plan_at=at)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={"plan": stmt.excluded.plan, "plan_at": stmt.excluded.plan_at},
                where=sa.or_(customer_state.c.plan_at.is_(None), customer_state.c.plan_at <= at),
            )
        )

    async def note_subscription(self, customer_id: str, state: str, at: datetime) -> None:
        """The subscription state from a payment event; an older one never overwrites a newer."""
        stmt = insert(customer_state).values(
            customer_id=customer_id, subscription=state, subscription_at=at
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={
                    "subscription": stmt.excluded.subscription,
                    "subscription_at": stmt.excluded.subscription_at,
                },
                where=sa.or_(
                    customer_state.c.subscription_at.is_(None),
                    customer_state.c.subscription_at <= at,
                ),
            )
        )

    async def note_purchase(self, customer_id: str, product: str) -> None:
        """Add ``product`` to what the customer bought (idempotent)."""
        stmt = insert(customer_state).values(customer_id=customer_id, products=[product])
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={
                    "products": sa.case(
                        (customer_state.c.products.any(product), customer_state.c.products),
                        else_=customer_state.c.products + sa.literal([product], ARRAY(sa.Text)),
                    )
                },
            )
        )
