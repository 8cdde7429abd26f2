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

from common.messages import Notification
from orchestrator.adapters.step_store import customer_from
from orchestrator.adapters.tables import (
    customer_state,
    customers,
    held_triggers,
    journey_transitions,
    journeys,
    outbox,
    paused_playbooks,
    scores,
    timers,
)
from orchestrator.domain import rules as R
from orchestrator.domain.decisions import StepDecision
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
    schedule: list[tuple[str, datetime]],
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
    """Exit, finish or cancel a live journey and cancel its pending timers."""
    new = await _record(
        conn, journey.journey_id, State(journey.state), event, now, {"reason": reason}
    )
    await conn.execute(
        journeys.update()
        .where(journeys.c.journey_id == journey.journey_id)
        .values(state=new.value, ended_at=now, exit_reason=reason, paused_by=None)
    )
    await conn.execute(
        timers.update()
        .where(timers.c.journey_id == journey.journey_id, timers.c.status == "pending")
        .values(status="cancelled")
    )


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


async def pending_steps(conn: AsyncConnection, journey_id: str) -> int:
    """How many of the journey's step timers are still pending."""
    query = sa.select(sa.func.count()).where(
        timers.c.journey_id == journey_id, timers.c.status == "pending"
    )
    return int((await conn.execute(query)).scalar_one())


# The lease columns of migration 0005 (owned by the timer worker): a deferred timer gives
# its lease back, so that it can be claimed as soon as it is due again.
_timer_leases = sa.table(
    "timers", sa.column("id"), sa.column("lease_owner"), sa.column("lease_until")
)


async def record_step(
    conn: AsyncConnection,
    timer: sa.Row[Any],
    now: datetime,
    *,
    decision: StepDecision,
    notification: Notification | None,
    topic: str,
    marketing: bool,
) -> State:
    """Record a fired step in one go: the outbox row (sent), the history, the timer status,
    and the end of the journey when no step is left (finish) or a wait branch exits.

    A deferred step keeps its timer, due again at ``decision.until``. Returns the state.
    """
    state = State(timer.state)
    facts = Facts(pending_steps=await pending_steps(conn, timer.journey_id))
    if decision.action == "exit":
        await end_journey(conn, timer, Event.EXIT, now, decision.reason or "wait")
        return State.EXITED
    if decision.action == "defer":
        assert decision.until is not None
        state = await _record(
            conn,
            timer.journey_id,
            state,
            Event.STEP_DEFERRED,
            now,
            {"step": timer.step, "reason": decision.reason, "until": decision.until.isoformat()},
            facts,
        )
        await conn.execute(
            timers.update().where(timers.c.id == timer.id).values(due_at=decision.until)
        )
        await conn.execute(
            _timer_leases.update()
            .where(_timer_leases.c.id == timer.id)
            .values(lease_owner=None, lease_until=None)
        )
        return state
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
            {
                "step": timer.step,
                "notification_id": notification.notification_id,
                "marketing": marketing,
            },
            facts,
        )
    else:
        state = await _record(
            conn,
            timer.journey_id,
            state,
            Event.STEP_SKIPPED,
            now,
            {"step": timer.step, "reason": decision.reason},
            facts,
        )
    await conn.execute(
        timers.update().where(timers.c.id == timer.id).values(status="fired", fired_at=now)
    )
    if facts.pending_steps == 1:
        state = await _record(
            conn, timer.journey_id, state, Event.FINISH, now, {"reason": "last step"}, Facts(0)
        )
        await conn.execute(
            journeys.update()
            .where(journeys.c.journey_id == timer.journey_id)
            .values(state=state.value, ended_at=now, exit_reason="completed")
        )
    return state


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


async def lock_customer_messages(conn: AsyncConnection, customer_id: str) -> None:
    """Serialise the frequency-cap decisions of one customer until the transaction ends.

    Two replicas firing two of a customer's marketing steps at once would otherwise both
    count the same sent messages and together pass the cap. Blocks while another
    transaction holds the customer's lock (a transaction-scoped advisory lock).
    """
    key = sa.func.hashtextextended(sa.literal("tenure-cap:") + customer_id, 0)
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def marketing_sent(
    conn: AsyncConnection, customer_id: str, since: datetime
) -> list[datetime]:
    """When the customer's marketing messages were sent (any playbook), after ``since``."""
    query = (
        sa.select(journey_transitions.c.at)
        .join(journeys, journeys.c.journey_id == journey_transitions.c.journey_id)
        .where(
            journeys.c.customer_id == customer_id,
            journey_transitions.c.event == Event.STEP_SENT.value,
            journey_transitions.c.at > since,
            journey_transitions.c.detail["marketing"].as_boolean(),
        )
    )
    return list((await conn.execute(query)).scalars())


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


# --- held-signal triggers -------------------------------------------------------------------


async def arm_trigger(
    conn: AsyncConnection,
    *,
    customer_id: str,
    playbook: str,
    signal: str,
    now: datetime,
    due_at: datetime,
) -> bool:
    """Arm a held-signal trigger unless one is already pending; whether one was armed."""
    result = await conn.execute(
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
            index_elements=["customer_id", "playbook"],
            # a literal, not a parameter: PostgreSQL must match it to the partial index
            index_where=sa.text("status = 'pending'"),
        )
        .returning(held_triggers.c.id)
    )
    return result.first() is not None


async def disarm_trigger(conn: AsyncConnection, customer_id: str, playbook: str) -> int:
    """Cancel the pending held trigger of (customer, playbook); how many were cancelled."""
    result = await conn.execute(
        held_triggers.update()
        .where(
            held_triggers.c.customer_id == customer_id,
            held_triggers.c.playbook == playbook,
            held_triggers.c.status == "pending",
        )
        .values(status="cancelled")
    )
    return int(result.rowcount)


async def claim_due_triggers(conn: AsyncConnection, now: datetime, limit: int) -> list[sa.Row[Any]]:
    """Lock up to ``limit`` due held triggers no other replica holds (SKIP LOCKED)."""
    query = (
        sa.select(held_triggers)
        .where(held_triggers.c.status == "pending", held_triggers.c.due_at <= now)
        .order_by(held_triggers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(query)).all())


async def mark_trigger_fired(conn: AsyncConnection, trigger_id: int) -> None:
    await conn.execute(
        held_triggers.update().where(held_triggers.c.id == trigger_id).values(status="fired")
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
