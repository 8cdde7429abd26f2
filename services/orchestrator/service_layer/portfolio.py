"""The portfolio's figures for some months: the one function both ``GET
/v1/metrics/portfolio`` and ``tenure report`` answer from.

Each month (a calendar month in UTC): the MRR waterfall per currency with NRR, GRR,
expansion rate and average upgrade value; the customers (live at the start, lost,
upgraded; churn monthly and annualised, upsell conversion, median days to upsell), also
by plan at the start; and, for each playbook with journeys started in the month,
treatment against holdout. Beside the months, the average CLV of the scored customers
now by segment and by plan, per currency. The counts are the adapters'
(``orchestrator.adapters.portfolio``, ``orchestrator.adapters.operator``), the formulas
``orchestrator.domain.portfolio``'s (docs/domain.md section 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.adapters import operator as views
from orchestrator.adapters import portfolio as counts
from orchestrator.domain import attribution as A
from orchestrator.domain import portfolio as P
from orchestrator.domain.movements import Kind
from orchestrator.domain.playbook import Playbook
from orchestrator.domain.portfolio import FigureRules
from orchestrator.service_layer.results import conversion_reasons, tallies


@dataclass(frozen=True)
class PlaybookFigures:
    """A playbook's journeys started in the month: treatment against control."""

    treated: A.Tally
    control: A.Tally
    uplift: P.Interval | None  # treatment rate - control rate, with its interval
    incremental_revenue: A.Money | None
    revenue_per_message: A.Money | None


@dataclass(frozen=True)
class MonthFigures:
    month: P.Month
    currencies: dict[str, P.MrrFigures]  # by currency, sorted
    customers: P.CustomerFigures
    churn_by_plan: dict[str, P.PlanChurn]  # by plan at the month's start
    playbooks: dict[str, PlaybookFigures]  # by name, those with journeys in the month


@dataclass(frozen=True)
class PortfolioFigures:
    months: list[MonthFigures]
    clv_by_segment: dict[str, dict[str, counts.ClvGroup]]  # currency -> segment -> average
    clv_by_plan: dict[str, dict[str, counts.ClvGroup]]  # currency -> plan -> average


async def portfolio_figures(
    engine: AsyncEngine,
    months: Sequence[P.Month],
    *,
    playbooks: Mapping[str, Playbook],
    rules: FigureRules,
) -> PortfolioFigures:
    """The figures of ``months`` (in the order given), read in one connection."""
    found: list[MonthFigures] = []
    async with engine.connect() as conn:
        for month in months:
            got = await counts.month_counts(conn, month.start, month.end)
            currencies = sorted(set(got.mrr_start) | set(got.mrr_end) | set(got.moved))
            found.append(
                MonthFigures(
                    month=month,
                    currencies={cur: _waterfall(got, cur) for cur in currencies},
                    customers=P.customer_figures(
                        got.at_start, got.lost, got.upgraded, got.days_to_upsell
                    ),
                    churn_by_plan={
                        plan: P.plan_churn(at_start, lost)
                        for plan, (at_start, lost) in sorted(got.by_plan.items())
                    },
                    playbooks=await _playbooks(conn, month, playbooks, rules),
                )
            )
        clv = {
            by: await counts.average_clv(conn, by, rules.default_currency)
            for by in ("segment", "plan")
        }
    return PortfolioFigures(found, clv_by_segment=clv["segment"], clv_by_plan=clv["plan"])


def _waterfall(got: counts.MonthCounts, cur: str) -> P.MrrFigures:
    by_kind = got.moved.get(cur, {})
    return P.mrr_figures(
        got.mrr_start.get(cur, A.ZERO),
        got.mrr_end.get(cur, A.ZERO),
        counts.sums(by_kind),
        upgrades=by_kind.get(Kind.EXPANSION, (A.ZERO, 0))[1],
    )


async def _playbooks(
    conn: AsyncConnection,
    month: P.Month,
    playbooks: Mapping[str, Playbook],
    rules: FigureRules,
) -> dict[str, PlaybookFigures]:
    out: dict[str, PlaybookFigures] = {}
    for name, playbook in sorted(playbooks.items()):
        found = await views.results(
            conn,
            name,
            goal_reasons=conversion_reasons(playbook, rules.loss_reasons),
            window=playbook.attribution_window,
            started=(month.start, month.end),
        )
        if not found.groups:
            continue
        by_arm, _ = tallies(playbook, found)
        treated, control = by_arm.get("treatment", A.Tally()), by_arm.get("control", A.Tally())
        out[name] = PlaybookFigures(
            treated=treated,
            control=control,
            uplift=P.uplift_interval(
                treated.converted,
                treated.journeys,
                control.converted,
                control.journeys,
                confidence=rules.confidence,
            ),
            incremental_revenue=A.compare(treated, control).incremental_revenue,
            revenue_per_message=P.revenue_per_message(treated.revenue, treated.messages),
        )
    return out


async def at_risk_now(
    engine: AsyncEngine, default_currency: str
) -> dict[str, dict[str, counts.TierAtRisk]]:
    """Currency -> risk tier -> MRR at risk of the customers not cancelled, now."""
    async with engine.connect() as conn:
        return await counts.at_risk_by_tier(conn, default_currency)


async def share_settings(engine: AsyncEngine, rules: FigureRules) -> None:
    """Write the settings the business dashboard's views need and cannot read (the
    default currency of a customer that names none; the uplift intervals' confidence and
    its z) into ``portfolio_settings``, so that the dashboard counts as the API and the
    report do. Called by the orchestrator when it starts; idempotent; raises
    ``DatabaseUnavailable`` while PostgreSQL is."""
    async with engine.begin() as conn:
        await counts.write_settings(
            conn,
            default_currency=rules.default_currency,
            confidence=rules.confidence,
            z=P.two_sided_z(rules.confidence),
        )
