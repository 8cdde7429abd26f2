"""Journey persistence: state changes with their history, timers and the outbox, in one transaction.

Every function takes an open connection inside a transaction; the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import (
    customer_state,
    customers,
    journey_messages,
    journey_transitions,
    journeys,
    outbox,
    paused_playbooks,
    scores,
    timers,
)
from common.messages import Delivery
from orchestrator.adapters.step_store import customer_from
from orchestrator.domain import rules as R
from orchestrator.domain.journey import (
    Event,
    Facts,
    IllegalTransition,
    State,
    operator_transition,
    transition,
)


class JourneyNotFound(LookupError):
    """No journey with that id (or it is not live when it must be)."""


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


async def delete_score(conn: AsyncConnection, customer_id: str) -> None:
    """Forget the customer's score (scoring published a tombstone: it erased the customer)."""
    await conn.execute(scores.delete().where(scores.c.customer_id == customer_id))


async def last_ended_at(conn: AsyncConnection, customer_id: str, playbook: str) -> datetime | None:
    ended: datetime | None = (
        await conn.execute(
            sa.select(sa.func.max(journeys.c.ended_at)).where(
                journeys.c.customer_id == customer_id, journeys.c.playbook == playbook
            )
        )
    ).scalar()
    return ended


async def live_journeys(
    conn: AsyncConnection, customer_id: str, *, lock: bool = True
) -> list[sa.Row[Any]]:
    """Every live (active or paused) journey of a customer; locked for update unless
    ``lock`` is false (the timer worker only reads them, so that it never takes journey
    locks in the opposite order to the consumers)."""
    query = (
        sa.select(journeys)
        .where(journeys.c.customer_id == customer_id, journeys.c.ended_at.is_(None))
        .order_by(journeys.c.started_at)
    )
    if lock:
        query = query.with_for_update()
    return list((await conn.execute(query)).all())


async def _record(
    conn: AsyncConnection,
    journey_id: str,
    old: State | None,
    event: Event,
    now: datetime,
    detail: dict[str, Any] | None = None,
    facts: Facts | None = None,
) -> State:
    """Apply ``event`` through the state machine and append it to the history."""
    new = transition(old, event, facts)
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
    schedule: list[tuple[str, datetime | None]],
    now: datetime,
    detail: dict[str, Any],
    arm: str = "treatment",
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
            arm=arm,
            started_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["customer_id", "playbook"], index_where=journeys.c.ended_at.is_(None)
        )
        .returning(journeys.c.journey_id)
    )
    if inserted.first() is None:
        return None
    await _record(conn, journey_id, None, Event.START, now, {**detail, "arm": arm})
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
    """Exit, finish or cancel a live journey and cancel its pending timers.

    If one of them was waiting for a frequency-cap slot, the customer's other steps
    waiting for one are due now (:func:`wake_waiting`): the slot may be theirs.
    """
    new = await _record(
        conn, journey.journey_id, State(journey.state), event, now, {"reason": reason}
    )
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey.journey_id)
        .values(state=new.value, ended_at=now, exit_reason=reason, paused_by=None)
    )
    cancelled = await conn.execute(
        timers.update()
        .where(timers.c.journey_id == journey.journey_id, timers.c.status == "pending")
        .values(status="cancelled")
        .returning(timers.c.waiting_since)
    )
    if any(row.waiting_since is not None for row in cancelled):
        await wake_waiting(conn, journey.customer_id, now)


async def wake_waiting(conn: AsyncConnection, customer_id: str, now: datetime) -> int:
    """Make the customer's steps deferred for a frequency-cap slot due now, so that a slot
    just freed (a message not sent, a waiting step gone) goes to the highest-ranked of
    them at once. Only the steps of active journeys due later; how many were moved."""
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
    result = await conn.execute(
        timers.update().where(timers.c.id.in_(waiting.scalar_subquery())).values(due_at=now)
    )
    return int(result.rowcount)


async def note_outcome(conn: AsyncConnection, delivery: Delivery) -> bool:
    """Record a journey message's final outcome (sent, failed, suppressed, bounced) on its
    ``journey_messages`` row and move where the frequency cap counts it
    (:func:`rules.counts_at`). Idempotent. Returns whether a marketing message's slot
    was released (it is known not sent)."""
    if delivery.status not in R.NOT_SENT and delivery.status != R.SENT:
        return False
    if delivery.journey_id is None or delivery.step is None:
        return False
    key = (
        journey_messages.c.journey_id == delivery.journey_id,
        journey_messages.c.step == delivery.step,
    )
    row = (await conn.execute(sa.select(journey_messages).where(*key).with_for_update())).first()
    if row is None:
        return False
    outcome = R.outcome_after(row.outcome, delivery.status)
    if outcome == row.outcome:
        return False
    counted = R.counts_at(row.decided_at, outcome, delivery.occurred_at) if row.marketing else None
    await conn.execute(
        journey_messages.update()
        .where(*key)
        .values(outcome=outcome, outcome_at=delivery.occurred_at, counts_at=counted)
    )
    return bool(row.marketing) and outcome in R.NOT_SENT


async def claim_outbox(conn: AsyncConnection, limit: int) -> list[sa.Row[Any]]:
    query = (
        sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.headers)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows: Sequence[sa.Row[Any]] = (await conn.execute(query)).all()  # type: ignore[assignment]
    return list(rows)


async def mark_published(conn: AsyncConnection, ids: list[int]) -> None:
    await conn.execute(
        outbox.update().where(outbox.c.id.in_(ids)).values(published_at=sa.func.now())
    )


# --- what the rules need to know about a customer ------------------------------------------


async def customer_facts(conn: AsyncConnection, customer_id: str) -> R.Customer:
    """The customer as the rules see it: profile, latest tier, consent and what it bought.

    An unsubscribe (a ``deliveries`` record) withdraws email marketing consent for good.
    """
    profile = (
        await conn.execute(sa.select(customers).where(customers.c.customer_id == customer_id))
    ).first()
    extra = (
        await conn.execute(
            sa.select(customer_state).where(customer_state.c.customer_id == customer_id)
        )
    ).first()
    tier = (
        await conn.execute(sa.select(scores.c.tier).where(scores.c.customer_id == customer_id))
    ).scalar()
    # The same mapping as the timer worker's (``step_store.gather``).
    return customer_from(
        customer_id,
        dict(profile._mapping) if profile else None,
        dict(extra._mapping) if extra else None,
        tier,
    )


async def add_seen(conn: AsyncConnection, journey_id: str, name: str) -> None:
    """Remember that a name a step waits for was seen during the journey (idempotent)."""
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey_id, sa.not_(journeys.c.seen.any(name)))
        .values(seen=journeys.c.seen + sa.literal([name], ARRAY(sa.Text)))
    )


async def _customer_state(conn: AsyncConnection, customer_id: str, **values: Any) -> None:
    stmt = insert(customer_state).values(customer_id=customer_id, **values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_id"], set_={k: stmt.excluded[k] for k in values}
        )
    )


async def note_unsubscribed(conn: AsyncConnection, customer_id: str, at: datetime) -> None:
    await _customer_state(conn, customer_id, unsubscribed_at=at)


async def note_segment(conn: AsyncConnection, customer_id: str, segment: str | None) -> None:
    await _customer_state(conn, customer_id, segment=segment)


async def note_loyalty_tier(conn: AsyncConnection, customer_id: str, tier: str | None) -> None:
    await _customer_state(conn, customer_id, loyalty_tier=tier)


async def note_plan(conn: AsyncConnection, customer_id: str, plan: str, at: datetime) -> None:
    """A plan change from a payment event; an older one never overwrites a newer one."""
    stmt = insert(customer_state).values(customer_id=customer_id, plan=plan, plan_at=at)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={"plan": stmt.excluded.plan, "plan_at": stmt.excluded.plan_at},
            where=sa.or_(customer_state.c.plan_at.is_(None), customer_state.c.plan_at <= at),
        )
    )


async def note_subscription(
    conn: AsyncConnection, customer_id: str, state: str, at: datetime
) -> None:
    """The subscription state from a payment event; an older one never overwrites a newer."""
    stmt = insert(customer_state).values(
        customer_id=customer_id, subscription=state, subscription_at=at
    )
    await conn.execute(
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


async def note_purchase(conn: AsyncConnection, customer_id: str, product: str) -> None:
    """Add ``product`` to what the customer bought (idempotent)."""
    stmt = insert(customer_state).values(customer_id=customer_id, products=[product])
    await conn.execute(
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


# --- operator actions: pause, resume, cancel ----------------------------------------------


async def _journey_for_update(conn: AsyncConnection, journey_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(journeys).where(journeys.c.journey_id == journey_id).with_for_update()
        )
    ).first()
    if row is None:
        raise JourneyNotFound(f"no journey {journey_id!r}")
    return row


async def pause_journey(
    conn: AsyncConnection, journey_id: str, now: datetime, *, by: str = "operator"
) -> State:
    """Pause a live journey: its due timers wait (they are not claimed) until resumed.

    Raises :class:`JourneyNotFound`, or ``IllegalTransition`` unless it is active.
    """
    journey = await _journey_for_update(conn, journey_id)
    new = operator_transition(State(journey.state), Event.PAUSE)
    await _record(conn, journey_id, State(journey.state), Event.PAUSE, now, {"by": by})
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey_id)
        .values(state=new.value, paused_by=by)
    )
    return new


async def resume_journey(
    conn: AsyncConnection, journey_id: str, now: datetime, *, by: str = "operator"
) -> State:
    """Resume a paused journey; steps that fell due meanwhile fire at the next claim.

    Raises :class:`JourneyNotFound`, or ``IllegalTransition`` unless it is paused, or
    while its playbook is paused.
    """
    journey = await _journey_for_update(conn, journey_id)
    if await playbook_paused(conn, journey.playbook):
        raise IllegalTransition(f"playbook {journey.playbook} is paused: resume it first")
    new = operator_transition(State(journey.state), Event.RESUME)
    await _record(conn, journey_id, State(journey.state), Event.RESUME, now, {"by": by})
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey_id)
        .values(state=new.value, paused_by=None)
    )
    return new


async def cancel_journey(
    conn: AsyncConnection,
    journey_id: str,
    now: datetime,
    *,
    by: str = "operator",
    reason: str = "cancelled by operator",
) -> State:
    """Cancel a live (active or paused) journey and its pending timers.

    Raises :class:`JourneyNotFound`, or ``IllegalTransition`` if it already ended.
    """
    journey = await _journey_for_update(conn, journey_id)
    operator_transition(State(journey.state), Event.CANCEL)
    await end_journey(conn, journey, Event.CANCEL, now, reason)
    await conn.execute(
        journey_transitions.update()
        .where(
            journey_transitions.c.journey_id == journey_id,
            journey_transitions.c.event == Event.CANCEL.value,
        )
        .values(detail={"reason": reason, "by": by})
    )
    return State.CANCELLED


async def journey_customer(conn: AsyncConnection, journey_id: str) -> str:
    """The customer of a journey; raises :class:`JourneyNotFound`."""
    query = sa.select(journeys.c.customer_id).where(journeys.c.journey_id == journey_id)
    customer: str | None = (await conn.execute(query)).scalar()
    if customer is None:
        raise JourneyNotFound(f"no journey {journey_id!r}")
    return customer


async def playbook_paused(conn: AsyncConnection, name: str) -> bool:
    """Whether an operator paused playbook ``name``."""
    query = sa.select(paused_playbooks.c.playbook).where(paused_playbooks.c.playbook == name)
    return (await conn.execute(query)).first() is not None


async def paused_playbook_names(conn: AsyncConnection) -> set[str]:
    return set((await conn.execute(sa.select(paused_playbooks.c.playbook))).scalars())


async def pause_playbook(
    conn: AsyncConnection, name: str, now: datetime, *, by: str = "operator"
) -> int:
    """Pause a playbook: no journey of it starts, and its active journeys are paused
    (``paused_by = 'playbook'``) so that their due steps wait. Idempotent; returns how
    many journeys it paused."""
    await conn.execute(
        insert(paused_playbooks)
        .values(playbook=name, paused_at=now, paused_by=by)
        .on_conflict_do_nothing(index_elements=["playbook"])
    )
    active = (
        await conn.execute(
            sa.select(journeys.c.journey_id)
            .where(journeys.c.playbook == name, journeys.c.state == State.ACTIVE.value)
            .with_for_update()
        )
    ).scalars()
    count = 0
    for journey_id in list(active):
        await pause_journey(conn, journey_id, now, by="playbook")
        count += 1
    return count


async def resume_playbook(
    conn: AsyncConnection, name: str, now: datetime, *, by: str = "operator"
) -> int:
    """Resume a paused playbook and the journeys its pause paused (not those an operator
    paused one by one). Idempotent; returns how many journeys it resumed."""
    await conn.execute(paused_playbooks.delete().where(paused_playbooks.c.playbook == name))
    paused = (
        await conn.execute(
            sa.select(journeys.c.journey_id)
            .where(
                journeys.c.playbook == name,
                journeys.c.state == State.PAUSED.value,
                journeys.c.paused_by == "playbook",
            )
            .with_for_update()
        )
    ).scalars()
    count = 0
    for journey_id in list(paused):
        await resume_journey(conn, journey_id, now, by=by)
        count += 1
    return count
