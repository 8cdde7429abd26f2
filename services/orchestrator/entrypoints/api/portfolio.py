"""``GET /v1/metrics/portfolio`` (``operator:read``): the portfolio's month, or months.

``period=2026-11`` for one month, or ``from=2026-09&to=2026-11`` for each month from one
to the other (``to`` defaults to ``from``); months are calendar months in UTC. Each
month: the MRR waterfall per currency (start, new, reactivation, expansion,
contraction, churned, end; NRR, GRR, expansion rate, average upgrade value), the
customers (live at the start, lost, upgraded; churn rate monthly and annualised, upsell
conversion, median days to upsell) and, for each playbook with journeys started in the
month, treatment against holdout (conversions, uplift with its confidence interval,
incremental revenue, revenue per message). Beside the months, the average CLV of the
scored customers now, by segment and by plan, per currency. The formulas are
``orchestrator.domain.portfolio``'s (docs/domain.md section 6).
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.adapters import operator as views
from orchestrator.adapters import portfolio as counts
from orchestrator.domain import attribution as A
from orchestrator.domain import portfolio as P
from orchestrator.domain.errors import InvalidRequest
from orchestrator.domain.movements import Kind
from orchestrator.entrypoints.api.dependencies import ERRORS, Reader, Service, Settings
from orchestrator.entrypoints.api.portfolio_models import (
    AverageClv,
    Customers,
    Interval,
    Month,
    PlaybookMonth,
    Portfolio,
    Waterfall,
)
from orchestrator.entrypoints.api.results import conversion_reasons, money, tallies
from orchestrator.entrypoints.deps import Deps
from orchestrator.settings import OrchestratorSettings

router = APIRouter()

MonthText = Annotated[str | None, Query(max_length=7, examples=["2026-11"])]


def _month(name: str, text: str) -> P.Month:
    try:
        return P.Month.parse(text)
    except ValueError as exc:
        raise InvalidRequest(name, str(exc)) from None


def chosen_months(
    period: str | None, first: str | None, last: str | None, *, limit: int
) -> list[P.Month]:
    """The months a request names; :class:`InvalidRequest` naming the parameter otherwise."""
    if period is not None:
        if first is not None or last is not None:
            raise InvalidRequest("period", "give period, or from and to, not both")
        return [_month("period", period)]
    if first is None:
        if last is not None:
            raise InvalidRequest("from", "required with to")
        raise InvalidRequest("period", "required (YYYY-MM), or from and to")
    start = _month("from", first)
    end = _month("to", last) if last is not None else start
    try:
        return P.months(start, end, limit=limit)
    except ValueError as exc:
        raise InvalidRequest("to", str(exc)) from None


def waterfall(start: Decimal, end: Decimal, moved: counts.MonthCounts, cur: str) -> Waterfall:
    by_kind = moved.moved.get(cur, {})
    upgrades = by_kind.get(Kind.EXPANSION, (A.ZERO, 0))[1]
    f = P.mrr_figures(start, end, counts.sums(by_kind), upgrades=upgrades)
    return Waterfall(
        mrr_start=float(f.start),
        new=float(f.new),
        reactivation=float(f.reactivation),
        expansion=float(f.expansion),
        contraction=float(f.contraction),
        churned=float(f.churned),
        mrr_end=float(f.end),
        upgrades=f.upgrades,
        nrr=f.nrr,
        grr=f.grr,
        expansion_rate=f.expansion_rate,
        average_upgrade_value=(
            float(f.average_upgrade_value) if f.average_upgrade_value is not None else None
        ),
    )


async def playbooks_month(
    conn: AsyncConnection, month: P.Month, deps: Deps, settings: OrchestratorSettings
) -> dict[str, PlaybookMonth]:
    out: dict[str, PlaybookMonth] = {}
    for name, playbook in sorted(deps.playbooks.items()):
        found = await views.results(
            conn,
            name,
            goal_reasons=conversion_reasons(playbook, settings.operator_loss_reasons),
            window=playbook.attribution_window,
            started=(month.start, month.end),
        )
        if not found.groups:
            continue
        by_arm, _ = tallies(playbook, found)
        treated, control = by_arm.get("treatment", A.Tally()), by_arm.get("control", A.Tally())
        interval = P.uplift_interval(
            treated.converted,
            treated.journeys,
            control.converted,
            control.journeys,
            confidence=settings.portfolio_confidence,
        )
        out[name] = PlaybookMonth(
            journeys=treated.journeys,
            control_journeys=control.journeys,
            conversions=treated.converted,
            control_conversions=control.converted,
            conversion_rate=A.rate(treated),
            control_conversion_rate=A.rate(control),
            uplift=Interval(**vars(interval)) if interval is not None else None,
            revenue=money(treated.revenue) or {},
            incremental_revenue=money(A.compare(treated, control).incremental_revenue),
            messages_sent=treated.messages,
            revenue_per_message=money(P.revenue_per_message(treated.revenue, treated.messages)),
        )
    return out


@router.get("/v1/metrics/portfolio", response_model=Portfolio, responses=ERRORS)
async def portfolio(
    _: Reader,
    deps: Service,
    settings: Settings,
    period: MonthText = None,
    first: Annotated[str | None, Query(alias="from", max_length=7)] = None,
    last: Annotated[str | None, Query(alias="to", max_length=7)] = None,
) -> Portfolio:
    chosen = chosen_months(period, first, last, limit=settings.portfolio_max_months)
    months = []
    async with deps.engine.connect() as conn:
        for month in chosen:
            found = await counts.month_counts(conn, month.start, month.end)
            currencies = sorted(set(found.mrr_start) | set(found.mrr_end) | set(found.moved))
            people = P.customer_figures(
                found.at_start, found.lost, found.upgraded, found.days_to_upsell
            )
            months.append(
                Month(
                    period=str(month),
                    start=month.start,
                    end=month.end,
                    currencies={
                        cur: waterfall(
                            found.mrr_start.get(cur, A.ZERO),
                            found.mrr_end.get(cur, A.ZERO),
                            found,
                            cur,
                        )
                        for cur in currencies
                    },
                    customers=Customers(**vars(people)),
                    playbooks=await playbooks_month(conn, month, deps, settings),
                )
            )
        clv = {
            by: await counts.average_clv(conn, by, deps.default_currency)
            for by in ("segment", "plan")
        }
    averaged = {
        by: {
            cur: {
                g: AverageClv(customers=v.customers, average_clv=float(v.average.quantize(A.CENT)))
                for g, v in groups.items()
            }
            for cur, groups in found_by.items()
        }
        for by, found_by in clv.items()
    }
    return Portfolio(
        months=months, clv_by_segment=averaged["segment"], clv_by_plan=averaged["plan"]
    )
