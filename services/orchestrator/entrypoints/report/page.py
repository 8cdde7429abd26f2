"""The report page: the month's figures as tables and the charts as embedded PNGs, in
one HTML file (``report.html.j2``, Jinja2) with its CSS inline, a print style sheet
and no external reference of any kind (no link, script, font or image to fetch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2

from orchestrator.adapters.portfolio import TierAtRisk
from orchestrator.domain import attribution as A
from orchestrator.entrypoints.report import charts
from orchestrator.entrypoints.report import shaping as S
from orchestrator.service_layer.portfolio import PortfolioFigures

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("orchestrator.entrypoints.report", "."),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters.update(
    money=S.money,
    moneys=S.moneys,
    percent=S.percent,
    days=S.days,
    count=S.count,
    interval=S.interval,
    conversion_rate=A.rate,
)


@dataclass(frozen=True)
class Report:
    """What the page shows: ``figures.months`` ends with the month reported on, the
    months before it are its history (NRR and GRR by month)."""

    figures: PortfolioFigures
    at_risk: Mapping[str, Mapping[str, TierAtRisk]]  # currency -> tier, now
    confidence: float  # of the uplift intervals
    generated_at: datetime


def render(report: Report) -> str:
    """The page as HTML text."""
    figures = report.figures
    month = figures.months[-1]
    history = S.retention_series(figures.months)
    plan_bars = S.plan_churn_bars(month.churn_by_plan)
    points = S.uplift_points(month.playbooks)
    title = S.month_title(month.month)
    images = {
        "waterfall": {
            cur: charts.waterfall(S.waterfall_bars(f), cur, f"MRR waterfall, {title} ({cur})")
            for cur, f in month.currencies.items()
        },
        "retention": {cur: charts.retention(series, cur) for cur, series in history.items()},
        "churn_by_plan": charts.churn_by_plan(plan_bars) if plan_bars else None,
        "at_risk": charts.at_risk(report.at_risk) if report.at_risk else None,
        "uplift": charts.uplift(points, report.confidence) if points else None,
    }
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        last_day=(month.month.end - timedelta(days=1)).strftime("%-d %B %Y"),
        month=month,
        figures=figures,
        history=S.since_first_figures(figures.months),
        at_risk={cur: report.at_risk[cur] for cur in sorted(report.at_risk)},
        tiers=S.tier_order(sorted({t for tiers in report.at_risk.values() for t in tiers})),
        images=images,
        generated_at=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        confidence=f"{report.confidence * 100:g}",
        missing=S.MISSING,
    )
