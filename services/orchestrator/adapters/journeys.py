"""Journeys in PostgreSQL: the journey, its history, its timers and the messages it made.
Implements :class:`ports.Journeys` (the batched statements of a group of due steps are
in ``adapters/step_store.py``).

Every method runs on the caller's connection, inside its transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import journey_messages, journey_transitions, journeys, timers
from orchestrator.domain import rules as R
from orchestrator.domain.errors import JourneyNotFound
from orchestrator.domain.journey import Change, Journey, State


def journey_from(row: Any) -> Journey:
    """A journey from a row with the ``journeys`` columns."""
    return Journey(
        journey_id=row.journey_id,
        customer_id=row.customer_id,
        playbook=row.playbook,
        state=State(row.state),
        started_at=row.started_at,
        arm=row.arm or "treatment",
        variant=row.variant,
        seen=frozenset(row.seen or ()),
        paused_by=row.paused_by,
        ingested_at=row.ingested_at,
    )


def history_row(change: Change) -> dict[str, Any]:
    return {
        "journey_id": change.journey_id,
        "from_state": change.before.value if change.before else None,
        "to_state": change.after.value,
        "event": change.event.value,
        "at": change.at,
        "detail": dict(change.detail),
    }


class SqlJourneys:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def new_id(self, playbook: str) -> str:
        return str(uuid.uuid4())

    async def start(
        self, journey: Journey, change: Change, schedule: Sequence[tuple[str, datetime | None]]
    ) -> bool:
        inserted = await self.conn.execute(
            insert(journeys)
            .values(
                journey_id=journey.journey_id,
                customer_id=journey.customer_id,
                playbook=journey.playbook,
                state=journey.state.value,
                variant=journey.variant,
                arm=journey.arm,
                started_at=journey.started_at,
                ingested_at=journey.ingested_at,
            )
            .on_conflict_do_nothing(
                index_elements=["customer_id", "playbook"],
                index_where=journeys.c.ended_at.is_(None),
            )
            .returning(journeys.c.journey_id)
        )
        if inserted.first() is None:
            return False
        await self.conn.execute(journey_transitions.insert().values(**history_row(change)))
        await self.conn.execute(
            timers.insert(),
            [
                {"journey_id": journey.journey_id, "step": step, "due_at": due, "status": "pending"}
                for step, due in schedule
            ],
        )
        return True

    async def get(self, journey_id: str) -> Journey:
        query = sa.select(journeys).where(journeys.c.journey_id == journey_id).with_for_update()
        row = (await self.conn.execute(query)).first()
        if row is None:
            raise JourneyNotFound(f"journey {journey_id} not found")
        return journey_from(row)

    async def live(self, customer_id: str, *, lock: bool = True) -> list[Journey]:
        # The timer worker's reads do not lock journeys, so that it never takes journey
        # locks in the opposite order to the consumers.
        query = (
            sa.select(journeys)
            .where(journeys.c.customer_id == customer_id, journeys.c.ended_at.is_(None))
            .order_by(journeys.c.started_at)
        )
        if lock:
            query = query.with_for_update()
        return [journey_from(row) for row in await self.conn.execute(query)]

    async def of_playbook(self, playbook: str, state: State, *, paused_by: str | None) -> list[str]:
        query = sa.select(journeys.c.journey_id).where(
            journeys.c.playbook == playbook, journeys.c.state == state.value
        )
        if paused_by is not None:
            query = query.where(journeys.c.paused_by == paused_by)
        return list((await self.conn.execute(query.with_for_update())).scalars())

    async def last_ended_at(self, customer_id: str, playbook: str) -> datetime | None:
        query = sa.select(sa.func.max(journeys.c.ended_at)).where(
            journeys.c.customer_id == customer_id, journeys.c.playbook == playbook
        )
        ended: datetime | None = (await self.conn.execute(query)).scalar()
        return ended

    async def save(self, journey: Journey, change: Change) -> None:
        await self.conn.execute(journey_transitions.insert().values(**history_row(change)))
        await self.conn.execute(
            journeys.update()
            .where(journeys.c.journey_id == journey.journey_id)
            .values(
                state=journey.state.value,
                paused_by=journey.paused_by,
                ingested_at=journey.ingested_at,
            )
        )

    async def end(self, journey: Journey, change: Change, reason: str) -> bool:
        await self.conn.execute(journey_transitions.insert().values(**history_row(change)))
        await self.conn.execute(
            journeys.update()
            .where(journeys.c.journey_id == journey.journey_id)
            .values(
                state=journey.state.value, ended_at=change.at, exit_reason=reason, paused_by=None
            )
        )
        cancelled = await self.conn.execute(
            timers.update()
            .where(timers.c.journey_id == journey.journey_id, timers.c.status == "pending")
            .values(status="cancelled")
            .returning(timers.c.waiting_since)
        )
        return any(row.waiting_since is not None for row in cancelled)

    async def add_seen(self, journey_id: str, name: str) -> None:
        await self.conn.execute(
            journeys.update()
            .where(journeys.c.journey_id == journey_id, sa.not_(journeys.c.seen.any(name)))
            .values(seen=journeys.c.seen + sa.literal([name], ARRAY(sa.Text)))
        )

    async def note_outcome(self, journey_id: str, step: str, status: str, at: datetime) -> bool:
        key = (journey_messages.c.journey_id == journey_id, journey_messages.c.step == step)
        query = sa.select(journey_messages).where(*key).with_for_update()
        row = (await self.conn.execute(query)).first()
        if row is None:
            return False
        outcome = R.outcome_after(row.outcome, status)
        if outcome == row.outcome:
            return False
        counted = R.counts_at(row.decided_at, outcome, at) if row.marketing else None
        await self.conn.execute(
            journey_messages.update()
            .where(*key)
            .values(outcome=outcome, outcome_at=at, counts_at=counted)
        )
        return bool(row.marketing) and outcome in R.NOT_SENT

    async def wake_waiting(self, customer_id: str, now: datetime) -> int:
        waiting = (
            sa.select(timers.c.id)
            .join(journeys, journeys.c.journey_id == timers.c.journey_id)
            .where(
                journeys.c.customer_id == customer_id,
                journeys.c.state == State.ACTIVE.value,
                timers.c.status == "pending",
                timers.c.waiting_since.is_not(None),
                timers.c.due_at > now,
            )
            .with_for_update(of=timers, skip_locked=True)  # a locked one is being fired
        )
        result = await self.conn.execute(
            timers.update().where(timers.c.id.in_(waiting.scalar_subquery())).values(due_at=now)
        )
        return int(result.rowcount)
