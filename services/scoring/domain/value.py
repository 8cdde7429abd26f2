"""Value metrics (docs/domain.md section 6.1-6.2): CLV with its cohort fallback, segments,
churn figures.

Plain arithmetic on numbers; the model file supplies every constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.domain.model import Clv

Segment = str  # "low" | "medium" | "high"


@dataclass(frozen=True)
class CohortStats:
    """What was observed of one plan's customers over its last complete months (summed:
    ``customers_at_start`` is then customer-months)."""

    customers_at_start: int
    customers_lost: int
    mrr_at_start: float
    expansion_mrr: float


@dataclass(frozen=True)
class Rates:
    monthly_churn: float
    expansion: float
    observed: bool  # False: the configured defaults were used


def clv(arpu: float, gross_margin: float, monthly_churn: float, expansion_rate: float) -> float:
    """ARPU x margin x (1 / monthly churn) x (1 + expansion). Raises ValueError on churn <= 0."""
    if monthly_churn <= 0:
        raise ValueError("monthly_churn must be above 0")
    return arpu * gross_margin * (1 / monthly_churn) * (1 + expansion_rate)


def cohort_rates(stats: CohortStats | None, model: Clv) -> Rates:
    """The cohort's observed rates once it had enough customer-months, else the defaults."""
    if stats is None or stats.customers_at_start < model.min_cohort_customer_months:
        return Rates(model.default_monthly_churn, model.default_expansion_rate, observed=False)
    churn = max(model.min_monthly_churn, stats.customers_lost / stats.customers_at_start)
    expansion = (
        stats.expansion_mrr / stats.mrr_at_start
        if stats.mrr_at_start > 0
        else model.default_expansion_rate
    )
    return Rates(churn, expansion, observed=True)


def customer_clv(mrr: float | None, stats: CohortStats | None, model: Clv) -> float | None:
    """A customer's CLV: ARPU is its MRR; rates from its plan's cohort. None without MRR."""
    if mrr is None:
        return None
    rates = cohort_rates(stats, model)
    return round(clv(mrr, model.gross_margin, rates.monthly_churn, rates.expansion), 2)


def customer_clv_with_rates(
    mrr: float | None, stats: CohortStats | None, model: Clv
) -> tuple[float | None, Rates]:
    """:func:`customer_clv` and the rates it used (for the explanation)."""
    rates = cohort_rates(stats, model)
    if mrr is None:
        return None, rates
    return round(clv(mrr, model.gross_margin, rates.monthly_churn, rates.expansion), 2), rates


def segment_for(value: float, model: Clv) -> Segment:
    """high above ``high_above``, low below ``low_below``, medium in between (inclusive)."""
    if value > model.segments.high_above:
        return "high"
    if value < model.segments.low_below:
        return "low"
    return "medium"


def annual_churn(monthly: float) -> float:
    """1 - (1 - monthly)^12: 5 % a month is 46 % a year."""
    return 1 - (1 - monthly) ** 12


def net_revenue_retention(
    mrr_at_start: float, expansion: float, contraction: float, churned: float
) -> float:
    """(MRR at start + expansion - contraction - churned MRR) / MRR at start."""
    if mrr_at_start <= 0:
        raise ValueError("mrr_at_start must be above 0")
    return (mrr_at_start + expansion - contraction - churned) / mrr_at_start
