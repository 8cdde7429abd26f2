"""``GET /v1/metrics/portfolio`` (``operator:read``): the portfolio's month, or months.

``period=2026-11`` for one month, or ``from=2026-09&to=2026-11`` for each month from one
to the other (``to`` defaults to ``from``); months are calendar months in UTC. Each
month: the MRR waterfall per currency (start, new, reactivation, expansion,
contraction, churned, end; NRR, GRR, expansion rate, average upgrade value), the
customers (live at the start, lost, upgraded; churn rate monthly and annualised, upsell
conversion, median days to upsell) and, for each playbook with journeys started in the
month, treatment against holdout (conversions, uplift with its confidence interval,
incremental revenue, revenue per message), and churn by plan. Beside the months, the
average CLV of the scored customers now, by segment and by plan, per currency. The
figures are ``orchestrator.service_layer.portfolio.portfolio_figures``'s (as
``tenure report``'s), the formulas ``orchestrator.domain.portfolio``'s (docs/domain.md
section 6); this module only shapes the answer.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
from typing import Annotated

from fastapi import APIRouter, Query

from orchestrator.adapters.portfolio import ClvGroup
from orchestrator.domain import attribution as A
from orchestrator.domain import portfolio as P
from orchestrator.domain.errors import InvalidRequest
from orchestrator.entrypoints.api.dependencies import ERRORS, Reader, Service, Settings
from orchestrator.entrypoints.api.portfolio_models import (
    AverageClv,
    Customers,
    Interval,
    Month,
    PlanChurn,
    PlaybookMonth,
    Portfolio,
    Waterfall,
)
from orchestrator.entrypoints.api.results import money
from orchestrator.service_layer.portfolio import (
    MonthFigures,
    PlaybookFigures,
    portfolio_figures,
)

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


def waterfall(f: P.MrrFigures) -> Waterfall:
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


def playbook_month(f: PlaybookFigures) -> PlaybookMonth:
    treated, control = f.treated, f.control
    return PlaybookMonth(
        journeys=treated.journeys,
        control_journeys=control.journeys,
        conversions=treated.converted,
        control_conversions=control.converted,
        conversion_rate=A.rate(treated),
        control_conversion_rate=A.rate(control),
        uplift=Interval(**vars(f.uplift)) if f.uplift is not None else None,
        revenue=money(treated.revenue) or {},
        incremental_revenue=money(f.incremental_revenue),
        messages_sent=treated.messages,
        revenue_per_message=money(f.revenue_per_message),
    )


def month_out(f: MonthFigures) -> Month:
    return Month(
        period=str(f.month),
        start=f.month.start,
        end=f.month.end,
        currencies={cur: waterfall(w) for cur, w in f.currencies.items()},
        customers=Customers(**vars(f.customers)),
        churn_by_plan={plan: PlanChurn(**vars(c)) for plan, c in f.churn_by_plan.items()},
        playbooks={name: playbook_month(p) for name, p in f.playbooks.items()},
    )


def averaged(found: dict[str, dict[str, ClvGroup]]) -> dict[str, dict[str, AverageClv]]:
    return {
        cur: {
            g: AverageClv(customers=v.customers, average_clv=float(A.cents(v.average)))
            for g, v in groups.items()
        }
        for cur, groups in found.items()
    }


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
    found = await portfolio_figures(
        deps.engine, chosen, playbooks=deps.playbooks, rules=settings.figure_rules()
    )
    return Portfolio(
        months=[month_out(m) for m in found.months],
        clv_by_segment=averaged(found.clv_by_segment),
        clv_by_plan=averaged(found.clv_by_plan),
    )
