"""Pending triggers of signal playbooks: held signals and postponed needs (``held_triggers``).

A row is *armed* (``due_at`` set: "engagement_low held 14 days" fires then) or *blocked*
(``blocked_by`` set, ``due_at`` NULL: a start that retention before expansion or a
cancelled subscription postponed, due again when that block lifts). At most one pending
row per (customer, playbook); the signal it was armed or blocked on turning off cancels
it. Implements :class:`ports.Triggers`, on the caller's connection and transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import held_triggers
from orchestrator.service_layer.ports import HeldTrigger

# A literal, not a parameter: PostgreSQL must match it to the partial unique index.
_PENDING = sa.text("status = 'pending'")

_LIFT = sa.text(
    """
    UPDATE held_triggers h SET blocked_by = NULL, due_at = d.due_at
    FROM unnest(CAST(:playbooks AS text[]), CAST(:dues AS timestamptz[])) AS d(playbook, due_at)
    WHERE h.customer_id = :customer AND h.status = 'pending' AND h.blocked_by = :why
      AND h.playbook = d.playbook
    """
)


class SqlTriggers:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def arm(
        self,
        *,
        customer_id: str,
        playbook: str,
        signal: str,
        now: datetime,
        due_at: datetime,
    ) -> bool:
        """Arm a held-signal trigger unless one is already pending (armed or blocked);
        whether one was armed."""
        result = await self.conn.execute(
            insert(held_triggers)
            .values(
                customer_id=customer_id,
                playbook=playbook,
                signal=signal,
                armed_at=now,
                due_at=due_at,
                status="pending",
            )
            .on_conflict_do_nothing(
                index_elements=["customer_id", "playbook"], index_where=_PENDING
            )
            .returning(held_triggers.c.id)
        )
        return result.first() is not None

    async def block(
        self,
        *,
        customer_id: str,
        playbook: str,
        signal: str,
        why: str,
        now: datetime,
        replace: bool,
    ) -> None:
        """Postpone the trigger of (customer, playbook) until ``why`` lifts (:func:`lift`).

        ``replace``: a pending row becomes this blocked one (a start just postponed);
        otherwise a pending row is left as it is (a held signal turning on again).
        """
        stmt = insert(held_triggers).values(
            customer_id=customer_id,
            playbook=playbook,
            signal=signal,
            armed_at=now,
            due_at=None,
            status="pending",
            blocked_by=why,
        )
        if replace:
            stmt = stmt.on_conflict_do_update(
                index_elements=["customer_id", "playbook"],
                index_where=_PENDING,
                set_={"signal": signal, "blocked_by": why, "due_at": None},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(
                index_elements=["customer_id", "playbook"], index_where=_PENDING
            )
        await self.conn.execute(stmt)

    async def suspend(self, customer_id: str, playbooks: Iterable[str], *, why: str) -> int:
        """Block every pending trigger (armed or blocked) of ``playbooks`` for the customer
        until ``why`` lifts; how many."""
        result = await self.conn.execute(
            held_triggers.update()
            .where(
                held_triggers.c.customer_id == customer_id,
                held_triggers.c.playbook.in_(list(playbooks)),
                held_triggers.c.status == "pending",
            )
            .values(blocked_by=why, due_at=None)
        )
        return int(result.rowcount)

    async def blocked(self, customer_id: str, why: str) -> list[str]:
        """The playbooks whose trigger is blocked by ``why`` for the customer."""
        query = sa.select(held_triggers.c.playbook).where(
            held_triggers.c.customer_id == customer_id,
            held_triggers.c.status == "pending",
            held_triggers.c.blocked_by == why,
        )
        return list((await self.conn.execute(query)).scalars())

    async def lift(self, customer_id: str, why: str, due: Mapping[str, datetime]) -> int:
        """``why`` no longer blocks the customer: its blocked triggers are due again, each at
        ``due[playbook]`` (a playbook missing from ``due`` stays blocked); how many."""
        if not due:
            return 0
        result = await self.conn.execute(
            _LIFT,
            {
                "customer": customer_id,
                "why": why,
                "playbooks": list(due),
                "dues": list(due.values()),
            },
        )
        return int(result.rowcount)

    async def disarm(self, customer_id: str, playbook: str, signal: str) -> int:
        """Cancel the pending trigger of (customer, playbook) armed or blocked on ``signal``
        (it turned off); how many were cancelled."""
        result = await self.conn.execute(
            held_triggers.update()
            .where(
                held_triggers.c.customer_id == customer_id,
                held_triggers.c.playbook == playbook,
                held_triggers.c.signal == signal,
                held_triggers.c.status == "pending",
            )
            .values(status="cancelled")
        )
        return int(result.rowcount)

    async def claim_due(self, now: datetime, limit: int) -> list[HeldTrigger]:
        """Lock up to ``limit`` due triggers no other replica holds (SKIP LOCKED); a blocked
        trigger (no due time) is never due."""
        h = held_triggers.c
        query = (
            sa.select(h.id, h.customer_id, h.playbook, h.signal)
            .where(h.status == "pending", h.due_at <= now)
            .order_by(h.due_at, h.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [HeldTrigger(*row) for row in await self.conn.execute(query)]

    async def mark_fired(self, trigger_id: int) -> None:
        await self.conn.execute(
            held_triggers.update().where(held_triggers.c.id == trigger_id).values(status="fired")
        )
