"""The at-risk list (``GET /v1/customers``): scored customers, filtered, sorted and paged
by keyset, read from the score projection (``scores``, with its snapshot), the profile
(``customers``), what the orchestrator learned (``customer_state``), the latest
subscription state (``subscription_states``) and the live journeys.

Every function takes an open connection and only reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import customer_state, customers, journeys, scores, subscription_states

Sort = Literal["churn_probability", "mrr_at_risk", "clv", "health"]
Order = Literal["asc", "desc"]
LIVE = ("active", "paused")

SNAP = scores.c.snapshot
SUB = subscription_states.c


@dataclass(frozen=True)
class Filters:
    """Each filter keeps the customers matching any of its values; filters combine with AND
    (an empty one keeps everyone)."""

    tiers: Sequence[str] = ()
    health_bands: Sequence[str] = ()
    clv_segments: Sequence[str] = ()
    plans: Sequence[str] = ()
    owner_csms: Sequence[str] = ()
    signals: Sequence[str] = ()  # an active churn or expansion signal
    playbooks: Sequence[str] = ()  # a journey of it in flight (active or paused)
    currencies: Sequence[str] = ()
    include_cancelled: bool = False


@dataclass(frozen=True)
class After:
    """Where the previous page ended: its last row's sort key and customer id."""

    key: float
    customer_id: str


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]] = field(default_factory=list)
    last: After | None = None  # set when more rows may follow


def _latest_subscription() -> Any:
    return (
        sa.select(SUB.mrr, SUB.currency, SUB.state)
        .where(SUB.customer_id == scores.c.customer_id)
        .order_by(SUB.occurred_at.desc(), SUB.event_id.desc())
        .limit(1)
        .lateral("sub")
    )


def _number(name: str) -> sa.ColumnElement[Any]:
    return sa.cast(SNAP[name].astext, sa.Float)


async def page(
    conn: AsyncConnection,
    filters: Filters,
    *,
    sort: Sort,
    order: Order,
    limit: int,
    after: After | None,
    default_currency: str,
) -> Page:
    """Up to ``limit`` customers after ``after`` in the order of ``sort`` then customer id.

    MRR (and its currency) is the latest recorded subscription's, else the profile's; MRR
    at risk is MRR x churn probability, in the customer's currency. A customer whose subscription is
    cancelled is left out unless ``include_cancelled``. Customers without the sorted
    value (no CLV or health yet) come last either way.
    """
    sub = _latest_subscription()
    mrr = sa.func.coalesce(sub.c.mrr, customers.c.mrr, 0)
    currency = sa.func.coalesce(
        sub.c.currency, customers.c.profile["currency"].astext, sa.literal(default_currency)
    )
    at_risk = sa.cast(mrr, sa.Float) * scores.c.churn_probability
    plan = sa.func.coalesce(customer_state.c.plan, customers.c.plan, SNAP["plan"].astext)
    segment = sa.func.coalesce(SNAP["clv_segment"].astext, customer_state.c.segment)
    band = SNAP["health_band"].astext
    sorted_by = {
        "churn_probability": scores.c.churn_probability,
        "mrr_at_risk": at_risk,
        "clv": _number("clv"),
        "health": _number("health_score"),
    }[sort]
    # Missing values last: below every value when descending, above when ascending.
    missing = -1.0 if order == "desc" else 1e18
    key = sa.func.coalesce(sorted_by, missing).label("sort_key")
    query = sa.select(
        scores.c.customer_id,
        scores.c.as_of,
        scores.c.risk_score,
        scores.c.tier,
        scores.c.churn_probability,
        SNAP.label("snapshot"),
        customers.c.email,
        customers.c.owner_csm_id,
        customers.c.owner_csm_email,
        plan.label("plan"),
        segment.label("clv_segment"),
        band.label("health_band"),
        mrr.label("mrr"),
        currency.label("currency"),
        at_risk.label("mrr_at_risk"),
        sub.c.state.label("subscription"),
        key,
    ).select_from(
        scores.outerjoin(customers, customers.c.customer_id == scores.c.customer_id)
        .outerjoin(customer_state, customer_state.c.customer_id == scores.c.customer_id)
        .outerjoin(sub, sa.true())
    )
    conditions: list[sa.ColumnElement[bool]] = []
    if not filters.include_cancelled:
        conditions.append(
            sa.func.coalesce(sub.c.state, customer_state.c.subscription, "") != "cancelled"
        )
    for column, values in (
        (scores.c.tier, filters.tiers),
        (band, filters.health_bands),
        (segment, filters.clv_segments),
        (plan, filters.plans),
        (customers.c.owner_csm_id, filters.owner_csms),
        (currency, filters.currencies),
    ):
        if values:
            conditions.append(column.in_(list(values)))
    if filters.signals:
        conditions.append(
            sa.or_(
                *(
                    SNAP[group].op("@>")(sa.cast([{"name": name}], JSONB))
                    for name in filters.signals
                    for group in ("signals", "expansion_signals")
                )
            )
        )
    if filters.playbooks:
        conditions.append(
            sa.select(journeys.c.journey_id)
            .where(
                journeys.c.customer_id == scores.c.customer_id,
                journeys.c.state.in_(LIVE),
                journeys.c.playbook.in_(list(filters.playbooks)),
            )
            .exists()
        )
    if after is not None:
        beyond = key < after.key if order == "desc" else key > after.key
        conditions.append(
            sa.or_(beyond, sa.and_(key == after.key, scores.c.customer_id > after.customer_id))
        )
    direction = key.desc() if order == "desc" else key.asc()
    query = query.where(*conditions).order_by(direction, scores.c.customer_id).limit(limit + 1)
    found = [dict(r._mapping) for r in await conn.execute(query)]
    more = len(found) > limit
    found = found[:limit]
    in_flight = await playbooks_in_flight(conn, [r["customer_id"] for r in found])
    for row in found:
        row["playbooks_in_flight"] = in_flight.get(row["customer_id"], [])
    last = After(float(found[-1]["sort_key"]), found[-1]["customer_id"]) if more else None
    return Page(found, last)


async def playbooks_in_flight(
    conn: AsyncConnection, customer_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Customer -> the playbooks of its live journeys (active or paused), by name."""
    if not customer_ids:
        return {}
    rows = await conn.execute(
        sa.select(journeys.c.customer_id, journeys.c.playbook)
        .where(journeys.c.customer_id.in_(list(customer_ids)), journeys.c.state.in_(LIVE))
        .order_by(journeys.c.customer_id, journeys.c.playbook)
    )
    found: dict[str, list[str]] = {}
    for customer, playbook in rows:
        found.setdefault(customer, []).append(playbook)
    return found
