"""Read queries of the operator API, and the message-outcome projection it shows.

Every function takes an open connection; none of them writes a journey (the admin
routes use the journey functions of ``orchestrator.adapters.journeys``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import (
    attributions,
    customer_state,
    customers,
    deliveries,
    journey_transitions,
    journeys,
    message_outcomes,
    outbox,
    paused_playbooks,
    scores,
)
from common.messages import Delivery
from orchestrator.domain.journey import Event

STEP_EVENTS = (Event.STEP_SENT.value, Event.STEP_SKIPPED.value)


async def record_outcome(conn: AsyncConnection, delivery: Delivery) -> None:
    """Project one outcome; idempotent (a replayed record changes nothing)."""
    await conn.execute(
        insert(message_outcomes)
        .values(
            notification_id=delivery.notification_id,
            status=delivery.status,
            customer_id=delivery.customer_id,
            occurred_at=delivery.occurred_at,
            detail=delivery.detail,
        )
        .on_conflict_do_nothing(index_elements=["notification_id", "status"])
    )


def _row(row: sa.Row[Any] | None) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


async def profile(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    query = sa.select(customers).where(customers.c.customer_id == customer_id)
    return _row((await conn.execute(query)).first())


async def learned_state(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    query = sa.select(customer_state).where(customer_state.c.customer_id == customer_id)
    return _row((await conn.execute(query)).first())


async def score(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    query = sa.select(scores).where(scores.c.customer_id == customer_id)
    return _row((await conn.execute(query)).first())


async def journeys_with_history(
    conn: AsyncConnection, customer_id: str, limit: int
) -> list[dict[str, Any]]:
    """The customer's latest ``limit`` journeys, newest first, each with its transitions."""
    rows = (
        await conn.execute(
            sa.select(journeys)
            .where(journeys.c.customer_id == customer_id)
            .order_by(journeys.c.started_at.desc(), journeys.c.journey_id)
            .limit(limit)
        )
    ).all()
    found = [dict(r._mapping) for r in rows]
    history = await transitions(conn, [j["journey_id"] for j in found])
    for journey in found:
        journey["history"] = history.get(journey["journey_id"], [])
    return found


async def journey(conn: AsyncConnection, journey_id: str) -> dict[str, Any] | None:
    found = _row(
        (await conn.execute(sa.select(journeys).where(journeys.c.journey_id == journey_id))).first()
    )
    if found is not None:
        found["history"] = (await transitions(conn, [journey_id])).get(journey_id, [])
    return found


async def transitions(
    conn: AsyncConnection, journey_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    ids = list(journey_ids)
    if not ids:
        return {}
    rows = await conn.execute(
        sa.select(journey_transitions)
        .where(journey_transitions.c.journey_id.in_(ids))
        .order_by(journey_transitions.c.journey_id, journey_transitions.c.id)
    )
    by_journey: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_journey.setdefault(row.journey_id, []).append(dict(row._mapping))
    return by_journey


async def messages(conn: AsyncConnection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """The customer's latest ``limit`` notifications, newest first, with their outcomes.

    Each: the notification as the orchestrator wrote it, when the relay published it,
    the notifier's delivery-log status, and every outcome reported on ``deliveries``.
    """
    nid = outbox.c.headers["notification_id"].astext
    rows = (
        await conn.execute(
            sa.select(
                outbox.c.payload,
                outbox.c.created_at,
                outbox.c.published_at,
                deliveries.c.status.label("delivery_status"),
                deliveries.c.attempts.label("delivery_attempts"),
                deliveries.c.updated_at.label("delivery_updated_at"),
            )
            .select_from(outbox.outerjoin(deliveries, deliveries.c.notification_id == nid))
            .where(outbox.c.key == customer_id, nid.is_not(None))  # notifications only
            .order_by(outbox.c.id.desc())
            .limit(limit)
        )
    ).all()
    found = []
    for row in rows:
        message = orjson.loads(row.payload)
        message.update(
            queued_at=row.created_at,
            published_at=row.published_at,
            delivery_status=row.delivery_status,
            delivery_attempts=row.delivery_attempts,
            delivery_updated_at=row.delivery_updated_at,
            outcomes=[],
        )
        found.append(message)
    if found:
        outcomes = await conn.execute(
            sa.select(message_outcomes)
            .where(message_outcomes.c.notification_id.in_([m["notification_id"] for m in found]))
            .order_by(message_outcomes.c.occurred_at)
        )
        by_id = {m["notification_id"]: m for m in found}
        for outcome in outcomes:
            by_id[outcome.notification_id]["outcomes"].append(
                {"status": outcome.status, "at": outcome.occurred_at, "detail": outcome.detail}
            )
    return found


async def paused(conn: AsyncConnection) -> dict[str, datetime]:
    rows = await conn.execute(sa.select(paused_playbooks.c.playbook, paused_playbooks.c.paused_at))
    return {r.playbook: r.paused_at for r in rows}


async def journeys_by_state(
    conn: AsyncConnection, playbook: str | None = None
) -> dict[str, dict[str, int]]:
    """Playbook → state → number of journeys (every playbook, or the one given)."""
    query = sa.select(journeys.c.playbook, journeys.c.state, sa.func.count()).group_by(
        journeys.c.playbook, journeys.c.state
    )
    if playbook is not None:
        query = query.where(journeys.c.playbook == playbook)
    counts: dict[str, dict[str, int]] = {}
    for name, state, n in await conn.execute(query):
        counts.setdefault(name, {})[state] = int(n)
    return counts


@dataclass(frozen=True)
class GroupCounts:
    """One (arm, variant) group of a playbook's journeys: how many, and how many converted."""

    arm: str
    variant: str | None
    journeys: int = 0
    converted: int = 0


@dataclass(frozen=True)
class Results:
    """What the playbook endpoints report on, by (arm, variant)."""

    groups: list[GroupCounts] = field(default_factory=list)
    # (arm, variant, currency) -> (revenue, attributed conversions)
    revenue: dict[tuple[str, str | None, str], tuple[Decimal, int]] = field(default_factory=dict)
    # (arm, variant, step) -> steps sent
    sent: dict[tuple[str, str | None, str], int] = field(default_factory=dict)


async def results(
    conn: AsyncConnection,
    playbook: str,
    *,
    goal_reasons: Iterable[str],
    window: timedelta,
    started: tuple[datetime, datetime] | None = None,
) -> Results:
    """Journeys of ``playbook``, conversions, attributed revenue and steps sent, per
    (arm, variant); only the journeys started in ``[started[0], started[1])`` when given
    (their conversions and messages whenever they came).

    A journey converted when a payment meeting its goal was attributed to it
    (``attributions``), or when it exited for one of ``goal_reasons`` no later than
    ``window`` after its last step (sent or skipped; its start when it had none): the
    attribution window of the playbook. Control journeys live through the same steps
    (skipped) and the same exits, so the two arms are counted alike.
    """
    last_step = (
        sa.select(sa.func.max(journey_transitions.c.at))
        .where(
            journey_transitions.c.journey_id == journeys.c.journey_id,
            journey_transitions.c.event.in_(STEP_EVENTS),
        )
        .scalar_subquery()
    )
    deadline = sa.func.coalesce(last_step, journeys.c.started_at) + sa.literal(window, sa.Interval)
    attributed = (
        sa.select(attributions.c.event_id)
        .where(
            attributions.c.journey_id == journeys.c.journey_id,
            attributions.c.playbook == playbook,
        )
        .exists()
    )
    converted = sa.or_(
        sa.and_(
            journeys.c.state == "exited",
            journeys.c.exit_reason.in_(list(goal_reasons)),
            journeys.c.ended_at <= deadline,
        ),
        attributed,
    )
    arm = sa.func.coalesce(journeys.c.arm, "treatment")
    chosen = [journeys.c.playbook == playbook]
    if started is not None:
        chosen += [journeys.c.started_at >= started[0], journeys.c.started_at < started[1]]
    groups = [
        GroupCounts(str(a), v, int(n), int(c))
        for a, v, n, c in await conn.execute(
            sa.select(arm, journeys.c.variant, sa.func.count(), sa.func.count().filter(converted))
            .where(*chosen)
            .group_by(arm, journeys.c.variant)
        )
    ]
    revenue = {
        (str(a), v, str(cur)): (Decimal(total), int(n))
        for a, v, cur, total, n in await conn.execute(
            sa.select(
                attributions.c.arm,
                attributions.c.variant,
                attributions.c.currency,
                sa.func.sum(attributions.c.revenue),
                sa.func.count(),
            )
            .select_from(
                attributions.join(journeys, journeys.c.journey_id == attributions.c.journey_id)
            )
            .where(attributions.c.playbook == playbook, *chosen)
            .group_by(attributions.c.arm, attributions.c.variant, attributions.c.currency)
        )
    }
    step = journey_transitions.c.detail["step"].astext
    sent = {
        (str(a), v, str(name)): int(n)
        for a, v, name, n in await conn.execute(
            sa.select(arm, journeys.c.variant, step, sa.func.count())
            .select_from(
                journey_transitions.join(
                    journeys, journeys.c.journey_id == journey_transitions.c.journey_id
                )
            )
            .where(*chosen, journey_transitions.c.event == Event.STEP_SENT.value)
            .group_by(arm, journeys.c.variant, step)
        )
    }
    return Results(groups=groups, revenue=revenue, sent=sent)


async def revenue_by_playbook(
    conn: AsyncConnection, arm: str = "treatment"
) -> dict[str, dict[str, Decimal]]:
    """Playbook -> currency -> revenue attributed to the journeys of ``arm``."""
    query = (
        sa.select(
            attributions.c.playbook, attributions.c.currency, sa.func.sum(attributions.c.revenue)
        )
        .where(attributions.c.arm == arm)
        .group_by(attributions.c.playbook, attributions.c.currency)
    )
    found: dict[str, dict[str, Decimal]] = {}
    for name, currency, total in await conn.execute(query):
        found.setdefault(name, {})[currency] = Decimal(total)
    return found
