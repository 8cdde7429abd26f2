"""What ``tenure report`` shows, shaped from the portfolio's figures: the numbers as text
and the series each chart draws. Pure (no I/O, no plotting): the figures are
``orchestrator.service_layer.portfolio``'s, computed once; nothing here computes a
business figure again, it only orders, labels and formats them.

Money is shown with two decimals, thousands separated by commas, and its ISO currency
code (``1,234.50 EUR``); rates as percentages with one decimal (``45.7 %``); a figure
without a base (a rate of nothing) as an em dash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.domain import portfolio as P
from orchestrator.domain.attribution import cents
from orchestrator.service_layer.portfolio import MonthFigures, PlaybookFigures

MISSING = "\u2014"  # em dash: no base to compute the figure from
NBSP = "\u00a0"


def money(value: Decimal | float | None, currency: str) -> str:
    """``1234.5, "EUR"`` -> ``1,234.50 EUR`` (a non-breaking space before the code), to
    the cent by the money rule (halves away from zero: 49.505 shows 49.51)."""
    if value is None:
        return MISSING
    return f"{cents(Decimal(str(value))):,.2f}{NBSP}{currency}"


def moneys(values: Mapping[str, Decimal] | None) -> str:
    """Amounts by currency, in currency order, joined by commas; ``None`` -> em dash."""
    if not values:
        return MISSING
    return ", ".join(money(v, cur) for cur, v in sorted(values.items()))


def percent(rate: float | None, *, signed: bool = False) -> str:
    """``0.457142`` -> ``45.7 %``; ``signed`` adds ``+`` to a positive rate."""
    if rate is None:
        return MISSING
    text = f"{rate * 100:{'+' if signed else ''}.1f}"
    if text in ("-0.0", "+0.0"):
        text = "0.0"
    return f"{text}{NBSP}%"


def days(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}{NBSP}days"


def count(value: int) -> str:
    return f"{value:,}"


def interval(found: P.Interval | None) -> str:
    """``+20.0 % (95 % CI -13.9 % to +53.9 %)``; em dash while an arm has no journey."""
    if found is None:
        return MISSING
    level = f"{found.confidence * 100:g}{NBSP}%"
    return (
        f"{percent(found.estimate, signed=True)} ({level} CI "
        f"{percent(found.low, signed=True)} to {percent(found.high, signed=True)})"
    )


def month_title(month: P.Month) -> str:
    return month.start.strftime("%B %Y")


# --- chart data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of a waterfall: from ``bottom`` up by ``height`` (negative goes down)."""

    label: str
    bottom: float
    height: float
    kind: str  # "total", "up" or "down"


# The waterfall's steps in order: figure attribute, label, direction.
STEPS = (
    ("new", "New", 1),
    ("reactivation", "Reactivation", 1),
    ("expansion", "Expansion", 1),
    ("contraction", "Contraction", -1),
    ("churned", "Churned", -1),
)


def waterfall_bars(f: P.MrrFigures) -> list[Bar]:
    """MRR at start, each movement stacked on the running total, MRR at end."""
    level = float(f.start)
    bars = [Bar("Start", 0.0, level, "total")]
    for name, label, sign in STEPS:
        amount = float(getattr(f, name)) * sign
        bars.append(Bar(label, level, amount, "up" if sign > 0 else "down"))
        level += amount
    bars.append(Bar("End", 0.0, float(f.end), "total"))
    return bars


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[str, float]]  # (month, value); months without a value left out


def retention_series(months: Sequence[MonthFigures]) -> dict[str, list[Series]]:
    """Currency -> NRR and GRR by month (the months where the currency had MRR at start)."""
    out: dict[str, list[Series]] = {}
    currencies = sorted({cur for m in months for cur in m.currencies})
    for cur in currencies:
        nrr: list[tuple[str, float]] = []
        grr: list[tuple[str, float]] = []
        for m in months:
            f = m.currencies.get(cur)
            if f is not None and f.nrr is not None and f.grr is not None:
                nrr.append((str(m.month), f.nrr))
                grr.append((str(m.month), f.grr))
        if nrr:
            out[cur] = [Series("NRR", nrr), Series("GRR", grr)]
    return out


def since_first_figures(months: Sequence[MonthFigures]) -> list[MonthFigures]:
    """``months`` from the first with an NRR in some currency (MRR at its start) on."""
    for i, m in enumerate(months):
        if any(f.nrr is not None for f in m.currencies.values()):
            return list(months[i:])
    return []


def plan_churn_bars(by_plan: Mapping[str, P.PlanChurn]) -> list[tuple[str, float, str]]:
    """(plan, monthly churn rate, label) for each plan with customers at the start."""
    return [
        (plan, c.churn_rate, f"{c.lost}/{c.at_start}")
        for plan, c in sorted(by_plan.items())
        if c.churn_rate is not None
    ]


@dataclass(frozen=True)
class UpliftPoint:
    playbook: str
    estimate: float
    low: float
    high: float


def uplift_points(playbooks: Mapping[str, PlaybookFigures]) -> list[UpliftPoint]:
    """The playbooks with an uplift interval, by name."""
    return [
        UpliftPoint(name, p.uplift.estimate, p.uplift.low, p.uplift.high)
        for name, p in sorted(playbooks.items())
        if p.uplift is not None
    ]


# Risk tiers from the riskiest; tiers not named here follow in name order.
TIERS = ("high", "medium", "low")


def tier_order(tiers: Sequence[str]) -> list[str]:
    known = [t for t in TIERS if t in tiers]
    return known + sorted(t for t in tiers if t not in TIERS)
