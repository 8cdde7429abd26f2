"""What the portfolio figures count, read from the MRR record (``mrr_movements``,
``subscription_states``) and the score projection; the formulas are
``orchestrator.domain.portfolio``'s.

"At an instant" means as recorded by the events before it: a customer's subscription
at ``t`` is its latest ``subscription_states`` row with ``occurred_at < t`` (a month's
figures take its start and its end, the next month's start). Every function takes an
open connection and only reads, but :func:`write_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.tables import portfolio_settings
from orchestrator.domain.movements import Kind

# Each customer's latest subscription row before :t.
_LATEST = """
    SELECT DISTINCT ON (customer_id) customer_id, state, plan, mrr, currency
    FROM subscription_states WHERE occurred_at < {t}
    ORDER BY customer_id, occurred_at DESC, event_id DESC
"""


@dataclass(frozen=True)
class MonthCounts:
    """What one month's figures are computed from."""

    mrr_start: dict[str, Decimal] = field(default_factory=dict)  # by currency
    mrr_end: dict[str, Decimal] = field(default_factory=dict)
    # currency -> kind -> (sum of amounts, movements)
    moved: dict[str, dict[Kind, tuple[Decimal, int]]] = field(default_factory=dict)
    at_start: int = 0
    lost: int = 0
    upgraded: int = 0
    days_to_upsell: list[float] = field(default_factory=list)
    # plan at the start -> (customers live at the start, of those cancelled at the end)
    by_plan: dict[str, tuple[int, int]] = field(default_factory=dict)


async def mrr_at(conn: AsyncConnection, at: datetime) -> dict[str, Decimal]:
    """Currency -> MRR of the live subscriptions at ``at``."""
    query = f"SELECT currency, sum(mrr) FROM ({_LATEST.format(t=':t')}) s GROUP BY currency"
    return {
        str(cur): Decimal(total)
        for cur, total in await conn.execute(sa.text(query), {"t": at})
        if total
    }


async def month_counts(conn: AsyncConnection, start: datetime, end: datetime) -> MonthCounts:
    """The counts of the month ``[start, end)``."""
    moved: dict[str, dict[Kind, tuple[Decimal, int]]] = {}
    rows = await conn.execute(
        sa.text(
            "SELECT currency, kind, sum(amount), count(*) FROM mrr_movements "
            "WHERE occurred_at >= :a AND occurred_at < :b GROUP BY currency, kind"
        ),
        {"a": start, "b": end},
    )
    for cur, kind, total, n in rows:
        moved.setdefault(str(cur), {})[Kind(kind)] = (Decimal(total), int(n))
    # One row per plan at the start (NULL: a plan never named), summed for the month.
    plans = await conn.execute(
        sa.text(
            f"""
            WITH s AS ({_LATEST.format(t=":a")}), e AS ({_LATEST.format(t=":b")}),
            up AS (SELECT DISTINCT customer_id FROM mrr_movements
                   WHERE kind = 'expansion' AND occurred_at >= :a AND occurred_at < :b)
            SELECT s.plan, count(*),
                   count(*) FILTER (WHERE e.state = 'cancelled'),
                   count(*) FILTER (WHERE up.customer_id IS NOT NULL)
            FROM s JOIN e USING (customer_id) LEFT JOIN up USING (customer_id)
            WHERE s.state <> 'cancelled'
            GROUP BY s.plan ORDER BY s.plan
            """
        ),
        {"a": start, "b": end},
    )
    by_plan: dict[str, tuple[int, int]] = {}
    customers = [0, 0, 0]
    for plan, *counted in plans:
        customers = [a + int(b) for a, b in zip(customers, counted, strict=True)]
        # No plan recorded: counted as "unknown", as the dashboard's view counts it, so
        # that the plans add up to the month's customers.
        by_plan[str(plan or "unknown")] = (int(counted[0]), int(counted[1]))
    days = await conn.execute(
        sa.text(
            """
            SELECT extract(epoch FROM u.first_upgrade - n.first_start) / 86400
            FROM (SELECT customer_id, min(occurred_at) AS first_upgrade FROM mrr_movements
                  WHERE kind = 'expansion' GROUP BY customer_id) u
            JOIN (SELECT customer_id, min(occurred_at) AS first_start FROM mrr_movements
                  WHERE kind = 'new' GROUP BY customer_id) n USING (customer_id)
            WHERE u.first_upgrade >= :a AND u.first_upgrade < :b
            ORDER BY 1
            """
        ),
        {"a": start, "b": end},
    )
    return MonthCounts(
        mrr_start=await mrr_at(conn, start),
        mrr_end=await mrr_at(conn, end),
        moved=moved,
        at_start=int(customers[0]),
        lost=int(customers[1]),
        upgraded=int(customers[2]),
        days_to_upsell=[float(d) for (d,) in days],
        by_plan=by_plan,
    )


@dataclass(frozen=True)
class ClvGroup:
    customers: int
    average: Decimal


async def average_clv(
    conn: AsyncConnection, by: str, default_currency: str
) -> dict[str, dict[str, ClvGroup]]:
    """Currency -> segment (``by="segment"``) or plan (``by="plan"``) -> average CLV of
    the scored customers whose latest score has one (the customer's currency is its
    latest recorded subscription's, else its profile's)."""
    group = {
        "segment": "s.snapshot->>'clv_segment'",
        "plan": "coalesce(cs.plan, c.plan, s.snapshot->>'plan')",
    }[by]
    query = f"""
        SELECT coalesce(sub.currency, c.profile->>'currency', :dc) AS currency,
               {group} AS g, count(*), avg((s.snapshot->>'clv')::numeric)
        FROM scores s
        LEFT JOIN customers c USING (customer_id)
        LEFT JOIN customer_state cs USING (customer_id)
        LEFT JOIN LATERAL (
            SELECT currency FROM subscription_states st WHERE st.customer_id = s.customer_id
            ORDER BY occurred_at DESC, event_id DESC LIMIT 1) sub ON true
        WHERE s.snapshot->>'clv' IS NOT NULL AND {group} IS NOT NULL
        GROUP BY 1, 2 ORDER BY 1, 2
    """
    found: dict[str, dict[str, ClvGroup]] = {}
    for cur, name, n, avg in await conn.execute(sa.text(query), {"dc": default_currency}):
        found.setdefault(str(cur), {})[str(name)] = ClvGroup(int(n), Decimal(avg))
    return found


def sums(moved: Mapping[Kind, tuple[Decimal, int]]) -> dict[Kind, Decimal]:
    return {kind: total for kind, (total, _) in moved.items()}


@dataclass(frozen=True)
class TierAtRisk:
    customers: int
    mrr: Decimal
    mrr_at_risk: Decimal


async def at_risk_by_tier(
    conn: AsyncConnection, default_currency: str
) -> dict[str, dict[str, TierAtRisk]]:
    """Currency -> risk tier -> the scored customers not cancelled, their MRR and MRR at
    risk now, summed from the ``portfolio_at_risk`` view (migration 0010), whose MRR at
    risk is the at-risk list's (MRR x churn probability; ``default_currency`` when
    neither subscription nor profile names one, as in the list)."""
    rows = await conn.execute(
        sa.text(
            "SELECT coalesce(currency, :dc), tier, count(*), sum(mrr), sum(mrr_at_risk)"
            " FROM portfolio_at_risk WHERE subscription IS DISTINCT FROM 'cancelled'"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {"dc": default_currency},
    )
    found: dict[str, dict[str, TierAtRisk]] = {}
    for cur, tier, n, mrr, at_risk in rows:
        found.setdefault(str(cur), {})[str(tier)] = TierAtRisk(
            int(n), Decimal(mrr or 0), Decimal(at_risk or 0)
        )
    return found


async def write_settings(
    conn: AsyncConnection, *, default_currency: str, confidence: float, z: float
) -> None:
    """Make the one row of ``portfolio_settings`` (what the dashboard's views read of the
    settings, migration 0014) say these; idempotent."""
    values = {"default_currency": default_currency, "confidence": confidence, "z": z}
    await conn.execute(
        insert(portfolio_settings)
        .values(id=True, **values)
        .on_conflict_do_update(
            index_elements=[portfolio_settings.c.id], set_={**values, "updated_at": sa.func.now()}
        )
    )
