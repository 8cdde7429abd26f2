"""The portfolio's figures (docs/domain.md section 6.2): pure formulas over counted values.

Money is :class:`~decimal.Decimal` in one currency (the caller groups by currency);
rates are floats, None where the denominator is 0 (a rate of nothing is unknown, not 0).
The adapters count (``orchestrator.adapters.portfolio``); these functions decide what
the counts mean.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from orchestrator.domain.attribution import ZERO, Money, cents, per
from orchestrator.domain.movements import Kind

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


# --- periods -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in UTC: ``[start, end)``."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``YYYY-MM``; raises ``ValueError`` naming the rule otherwise."""
        found = MONTH.match(text)
        if found is None or int(found[1]) < 1:
            raise ValueError(f"{text!r} is not a month: expected YYYY-MM, e.g. 2026-11")
        return cls(int(found[1]), int(found[2]))

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def back(self, n: int) -> Month:
        """The month ``n`` months before this one (2026-11 back 12 is 2025-11)."""
        index = self.year * 12 + self.month - 1 - n
        return Month(index // 12, index % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def months(first: Month, last: Month, *, limit: int) -> list[Month]:
    """Every month from ``first`` to ``last`` inclusive; ``ValueError`` when ``last`` is
    before ``first`` or there are more than ``limit``."""
    if last < first:
        raise ValueError(f"to ({last}) is before from ({first})")
    found = [first]
    while found[-1] < last:
        found.append(found[-1].next())
        if len(found) > limit:
            raise ValueError(f"from {first} to {last} is more than {limit} months")
    return found


@dataclass(frozen=True)
class FigureRules:
    """The settings the portfolio's figures depend on (``OrchestratorSettings.figure_rules``)."""

    loss_reasons: tuple[str, ...]  # a playbook's exit reasons that are not a conversion
    confidence: float  # of the uplift intervals
    default_currency: str  # of a CLV whose customer names no currency


# --- the formulas --------------------------------------------------------------------------


def _ratio(part: Decimal | int, whole: Decimal | int) -> float | None:
    return float(Decimal(part) / Decimal(whole)) if whole else None


def net_revenue_retention(
    start: Decimal, expansion: Decimal, contraction: Decimal, churned: Decimal
) -> float | None:
    """NRR = (MRR at start + expansion - contraction - churned MRR) / MRR at start.
    100k, +30k, -5k, -10k give 1.15."""
    return _ratio(start + expansion - contraction - churned, start)


def gross_revenue_retention(start: Decimal, contraction: Decimal, churned: Decimal) -> float | None:
    """GRR = (MRR at start - contraction - churned MRR) / MRR at start (expansion left out,
    so never above 1)."""
    return _ratio(start - contraction - churned, start)


def monthly_churn_rate(lost: int, at_start: int) -> float | None:
    """Customers lost in the month / customers at its start."""
    return _ratio(lost, at_start)


def annual_churn(monthly: float) -> float:
    """1 - (1 - monthly)^12: 0.05 a month is 0.4596 a year."""
    return 1 - (1 - monthly) ** 12


def expansion_rate(expansion: Decimal, start: Decimal) -> float | None:
    """Expansion MRR / MRR at start."""
    return _ratio(expansion, start)


def upsell_conversion(upgraded: int, existing: int) -> float | None:
    """Customers who upgraded / existing customers (those at the start of the period)."""
    return _ratio(upgraded, existing)


def average_upgrade_value(expansion_from_upsells: Decimal, upsells: int) -> Decimal | None:
    """Expansion MRR from upsells / number of upsells, to the cent (halves away from zero:
    99.01 over 2 is 49.51)."""
    if upsells <= 0:
        return None
    return cents(expansion_from_upsells / upsells)


def median_days(durations: Iterable[float]) -> float | None:
    """The median of ``durations`` (days, e.g. first purchase to first upgrade); None for none."""
    found = list(durations)
    return float(statistics.median(found)) if found else None


def revenue_per_message(revenue: Money, messages: int) -> Money | None:
    """Attributed revenue / customer messages sent, by currency (attribution's ``per``)."""
    return per(revenue, messages)


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float


def two_sided_z(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.959964 for
    0.95, 1.644854 for 0.90); ``ValueError`` unless 0 < confidence < 1."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be between 0 and 1")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def uplift_interval(
    treated_converted: int,
    treated: int,
    control_converted: int,
    control: int,
    *,
    confidence: float,
) -> Interval | None:
    """Conversion uplift (treatment rate - control rate) with its ``confidence`` interval by
    the two-proportion normal approximation (Wald, unpooled): uplift +- z * sqrt(p_t(1 - p_t)
    / n_t + p_c(1 - p_c) / n_c), z the two-sided normal quantile (1.96 for 0.95). None while
    an arm has no journey. The approximation wants some conversions and non-conversions in
    each arm (n p >= 5 is the usual rule); with fewer the interval is indicative only."""
    if treated <= 0 or control <= 0:
        return None
    z = two_sided_z(confidence)
    p_t, p_c = treated_converted / treated, control_converted / control
    se = (p_t * (1 - p_t) / treated + p_c * (1 - p_c) / control) ** 0.5
    uplift = p_t - p_c
    return Interval(uplift, uplift - z * se, uplift + z * se, confidence)


# --- one month, one currency ---------------------------------------------------------------


@dataclass(frozen=True)
class MrrFigures:
    """A month's MRR waterfall in one currency and the rates drawn from it."""

    start: Decimal
    end: Decimal
    new: Decimal
    expansion: Decimal
    contraction: Decimal
    churned: Decimal
    reactivation: Decimal
    upgrades: int
    nrr: float | None
    grr: float | None
    expansion_rate: float | None
    average_upgrade_value: Decimal | None


def mrr_figures(
    start: Decimal, end: Decimal, sums: Mapping[Kind, Decimal], *, upgrades: int
) -> MrrFigures:
    """The waterfall from the MRR at start and end and the month's movements summed by
    kind (``end = start + new + reactivation + expansion - contraction - churned`` when
    every change of MRR was a recorded movement). ``upgrades``: expansion movements."""
    got = {kind: sums.get(kind, ZERO) for kind in Kind}
    expansion, contraction, churned = got[Kind.EXPANSION], got[Kind.CONTRACTION], got[Kind.CHURN]
    return MrrFigures(
        start=start,
        end=end,
        new=got[Kind.NEW],
        expansion=expansion,
        contraction=contraction,
        churned=churned,
        reactivation=got[Kind.REACTIVATION],
        upgrades=upgrades,
        nrr=net_revenue_retention(start, expansion, contraction, churned),
        grr=gross_revenue_retention(start, contraction, churned),
        expansion_rate=expansion_rate(expansion, start),
        average_upgrade_value=average_upgrade_value(expansion, upgrades),
    )


@dataclass(frozen=True)
class CustomerFigures:
    """A month's customers: churn and upsell."""

    at_start: int
    lost: int
    upgraded: int
    churn_rate: float | None
    annual_churn: float | None
    upsell_conversion: float | None
    median_days_to_upsell: float | None


def customer_figures(
    at_start: int, lost: int, upgraded: int, days_to_upsell: Iterable[float]
) -> CustomerFigures:
    """``lost``: customers live at the start and cancelled at the end; ``upgraded``:
    customers live at the start with an expansion in the month; ``days_to_upsell``: for
    each customer whose first upgrade fell in the month, days since its first start."""
    churn = monthly_churn_rate(lost, at_start)
    return CustomerFigures(
        at_start=at_start,
        lost=lost,
        upgraded=upgraded,
        churn_rate=churn,
        annual_churn=annual_churn(churn) if churn is not None else None,
        upsell_conversion=upsell_conversion(upgraded, at_start),
        median_days_to_upsell=median_days(days_to_upsell),
    )


@dataclass(frozen=True)
class PlanChurn:
    """A month's customer churn among the customers on one plan at its start."""

    at_start: int
    lost: int
    churn_rate: float | None
    annual_churn: float | None


def plan_churn(at_start: int, lost: int) -> PlanChurn:
    """Churn of one plan's customers: ``lost`` of the ``at_start`` on it at the start."""
    churn = monthly_churn_rate(lost, at_start)
    return PlanChurn(
        at_start=at_start,
        lost=lost,
        churn_rate=churn,
        annual_churn=annual_churn(churn) if churn is not None else None,
    )
