"""Attributions in PostgreSQL: the journeys a conversion may count for, and the record of it.

Implements :class:`ports.Attributions`, on the caller's connection and transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import attributions, journey_transitions, journeys
from orchestrator.domain.attribution import Attribution, JourneySpan
from orchestrator.domain.journey import Event

STEP_EVENTS = (Event.STEP_SENT.value, Event.STEP_SKIPPED.value)


class SqlAttributions:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def journey_spans(
        self,
        customer_id: str,
        playbooks: Iterable[str],
        *,
        at: datetime,
        longest_window: timedelta,
    ) -> list[JourneySpan]:
        """The customer's journeys of ``playbooks`` that may hold a conversion at ``at``:
        started by then and live, or ended no more than ``longest_window`` before it (the
        domain decides exactly), each with the instant of its latest step."""
        names = list(playbooks)
        if not names:
            return []
        last_step = (
            sa.select(sa.func.max(journey_transitions.c.at))
            .where(
                journey_transitions.c.journey_id == journeys.c.journey_id,
                journey_transitions.c.event.in_(STEP_EVENTS),
            )
            .scalar_subquery()
        )
        query = sa.select(
            journeys.c.journey_id,
            journeys.c.playbook,
            journeys.c.started_at,
            journeys.c.ended_at,
            journeys.c.arm,
            journeys.c.variant,
            last_step.label("last_step_at"),
        ).where(
            journeys.c.customer_id == customer_id,
            journeys.c.playbook.in_(names),
            journeys.c.started_at <= at,
            sa.or_(journeys.c.ended_at.is_(None), journeys.c.ended_at >= at - longest_window),
        )
        return [
            JourneySpan(
                journey_id=r.journey_id,
                playbook=r.playbook,
                started_at=r.started_at,
                ended_at=r.ended_at,
                last_step_at=r.last_step_at,
                arm=r.arm or "treatment",
                variant=r.variant,
            )
            for r in await self.conn.execute(query)
        ]

    async def record(self, customer_id: str, found: Iterable[Attribution]) -> list[Attribution]:
        """Record attributions; those already recorded (same event and playbook) are left as
        they are. Idempotent. Returns the ones this call recorded."""
        rows = list(found)
        if not rows:
            return []
        inserted = await self.conn.execute(
            insert(attributions)
            .values(
                [
                    {
                        "event_id": a.event_id,
                        "playbook": a.playbook,
                        "journey_id": a.journey_id,
                        "customer_id": customer_id,
                        "arm": a.arm,
                        "variant": a.variant,
                        "event_type": a.event_type,
                        "revenue": a.revenue,
                        "currency": a.currency,
                        "converted_at": a.converted_at,
                    }
                    for a in rows
                ]
            )
            .on_conflict_do_nothing(index_elements=["event_id", "playbook"])
            .returning(attributions.c.playbook)
        )
        new = set(inserted.scalars())
        return [a for a in rows if a.playbook in new]
