"""Journey persistence: state changes with their history, timers and the outbox, in one transaction.

Every function takes an open connection inside a transaction; the caller commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.messages import Notification
from orchestrator.adapters.tables import (
    customers,
    journey_transitions,
    journeys,
    outbox,
    scores,
    timers,
)
from orchestrator.domain.journey import Event, State, transition


async def upsert_customer(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Project a profile; an older profile event never overwrites a newer one."""
    stmt = insert(customers).values(**row)
    updates = {c: stmt.excluded[c] for c in row if c != "customer_id"}
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_id"],
            set_=updates,
            where=customers.c.profile_at <= stmt.excluded.profile_at,
        )
    )


async def upsert_score(conn: AsyncConnection, row: dict[str, Any]) -> None:
    stmt = insert(scores).values(**row)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={c: stmt.excluded[c] for c in row if c != "customer_id"},
            where=scores.c.as_of <= stmt.excluded.as_of,
        )
    )


async def live_journey(
    conn: AsyncConnection, customer_id: str, playbook: str, *, lock: bool = False
) -> sa.Row[Any] | None:
    query = sa.select(journeys).where(
        journeys.c.customer_id == customer_id,
        journeys.c.playbook == playbook,
        journeys.c.ended_at.is_(None),
    )
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def last_ended_at(conn: AsyncConnection, customer_id: str, playbook: str) -> datetime | None:
    return (
        await conn.execute(
            sa.select(sa.func.max(journeys.c.ended_at)).where(
                journeys.c.customer_id == customer_id, journeys.c.playbook == playbook
            )
        )
    ).scalar()


async def _record(
    conn: AsyncConnection,
    journey_id: str,
    old: State | None,
    event: Event,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> State:
    new = transition(old, event)
    await conn.execute(
        journey_transitions.insert().values(
            journey_id=journey_id,
            from_state=old.value if old else None,
            to_state=new.value,
            event=event.value,
            at=now,
            detail=detail or {},
        )
    )
    return new


async def start_journey(
    conn: AsyncConnection,
    *,
    customer_id: str,
    playbook: str,
    variant: str | None,
    schedule: list[tuple[str, datetime]],
    now: datetime,
    detail: dict[str, Any],
) -> str | None:
    """Create a journey and its timers. Returns its id, or None if one is already live."""
    journey_id = str(uuid.uuid4())
    inserted = await conn.execute(
        insert(journeys)
        .values(
            journey_id=journey_id,
            customer_id=customer_id,
            playbook=playbook,
            state=State.ACTIVE.value,
            variant=variant,
            started_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["customer_id", "playbook"], index_where=journeys.c.ended_at.is_(None)
        )
        .returning(journeys.c.journey_id)
    )
    if inserted.first() is None:
        return None
    await _record(conn, journey_id, None, Event.START, now, detail)
    await conn.execute(
        timers.insert(),
        [
            {"journey_id": journey_id, "step": step, "due_at": due, "status": "pending"}
            for step, due in schedule
        ],
    )
    return journey_id


async def end_journey(
    conn: AsyncConnection, journey: sa.Row[Any], event: Event, now: datetime, reason: str
) -> None:
    """Exit, finish or cancel a live journey and cancel its pending timers."""
    new = await _record(
        conn, journey.journey_id, State(journey.state), event, now, {"reason": reason}
    )
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey.journey_id)
        .values(state=new.value, ended_at=now, exit_reason=reason)
    )
    await conn.execute(
        timers.update()
        .where(timers.c.journey_id == journey.journey_id, timers.c.status == "pending")
        .values(status="cancelled")
    )


async def claim_due_timers(conn: AsyncConnection, now: datetime, limit: int) -> list[sa.Row[Any]]:
    """Lock up to ``limit`` due timers that no other replica holds (FOR UPDATE SKIP LOCKED)."""
    query = (
        sa.select(timers.c.id, timers.c.step, timers.c.due_at, journeys)
        .join(journeys, journeys.c.journey_id == timers.c.journey_id)
        .where(timers.c.status == "pending", timers.c.due_at <= now)
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(of=timers, skip_locked=True)
    )
    return list((await conn.execute(query)).all())


async def customer_view(
    conn: AsyncConnection, customer_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    profile = (
        await conn.execute(sa.select(customers).where(customers.c.customer_id == customer_id))
    ).first()
    score = (
        await conn.execute(sa.select(scores.c.snapshot).where(scores.c.customer_id == customer_id))
    ).scalar()
    return (dict(profile._mapping) if profile else {}), score


async def fire_timer(
    conn: AsyncConnection,
    timer: sa.Row[Any],
    now: datetime,
    *,
    notification: Notification | None,
    topic: str,
    skip_reason: str | None,
    last: bool,
) -> None:
    """Record a fired step: outbox write (or skip), history, timer status, finish if last."""
    state = State(timer.state)
    if notification is not None:
        await conn.execute(
            outbox.insert().values(
                topic=topic,
                key=notification.customer_id,
                payload=notification.model_dump_json().encode(),
                headers={"notification_id": notification.notification_id},
            )
        )
        state = await _record(
            conn,
            timer.journey_id,
            state,
            Event.STEP_SENT,
            now,
            {"step": timer.step, "notification_id": notification.notification_id},
        )
    else:
        state = await _record(
            conn,
            timer.journey_id,
            state,
            Event.STEP_SKIPPED,
            now,
            {"step": timer.step, "reason": skip_reason},
        )
    await conn.execute(
        timers.update().where(timers.c.id == timer.id).values(status="fired", fired_at=now)
    )
    if last:
        new = await _record(
            conn, timer.journey_id, state, Event.FINISH, now, {"reason": "last step"}
        )
        await conn.execute(
            journeys.update()
            .where(journeys.c.journey_id == timer.journey_id)
            .values(state=new.value, ended_at=now, exit_reason="completed")
        )


async def cancel_timer(conn: AsyncConnection, timer_id: int) -> None:
    await conn.execute(timers.update().where(timers.c.id == timer_id).values(status="cancelled"))


async def claim_outbox(conn: AsyncConnection, limit: int) -> list[sa.Row[Any]]:
    query = (
        sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.headers)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(query)).all())


async def mark_published(conn: AsyncConnection, ids: list[int]) -> None:
    await conn.execute(
        outbox.update().where(outbox.c.id.in_(ids)).values(published_at=sa.func.now())
    )
