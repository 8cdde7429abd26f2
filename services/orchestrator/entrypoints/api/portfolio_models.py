"""Response models of the at-risk list and the portfolio metrics (issue 17)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from orchestrator.entrypoints.api.models import Money


class Factor(BaseModel):
    """One signal behind the churn score, with the points it adds to risk_score."""

    name: str
    group: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    contribution: float


class AtRiskCustomer(BaseModel):
    customer_id: str
    email: str | None = None
    plan: str | None = None
    owner_csm_id: str | None = None
    owner_csm_email: str | None = None
    subscription: str | None = Field(
        default=None, description="active, cancelled or reactivated (the latest recorded)."
    )
    mrr: float = Field(description="The latest recorded subscription's MRR, else the profile's.")
    currency: str
    churn_probability: float
    mrr_at_risk: float = Field(description="mrr x churn_probability, in currency.")
    risk_score: float
    tier: str
    health_score: float | None = None
    health_band: str | None = None
    clv: float | None = None
    clv_segment: str | None = None
    active_signals: list[str] = Field(description="Churn and expansion signals on.")
    playbooks_in_flight: list[str] = Field(description="Playbooks with a live journey.")
    top_factors: list[Factor] = Field(
        description="The churn signals adding most to risk_score, largest first."
    )
    as_of: datetime = Field(description="When the score was evaluated.")


class CustomerList(BaseModel):
    sort: str
    order: str
    customers: list[AtRiskCustomer]
    next_cursor: str | None = Field(
        description="Pass as cursor (with the same sort and order) for the next page; null "
        "on the last page."
    )


class Waterfall(BaseModel):
    """A month's MRR in one currency: from start to end through each kind of movement."""

    mrr_start: float
    new: float
    reactivation: float
    expansion: float
    contraction: float
    churned: float
    mrr_end: float
    upgrades: int = Field(description="Expansion movements (upsells).")
    nrr: float | None = Field(description="(start + expansion - contraction - churned) / start")
    grr: float | None = Field(description="(start - contraction - churned) / start")
    expansion_rate: float | None = Field(description="expansion / start")
    average_upgrade_value: float | None = Field(description="expansion / upgrades")


class Customers(BaseModel):
    at_start: int = Field(description="Customers with a live subscription at the start.")
    lost: int = Field(description="Of those, cancelled at the end of the month.")
    upgraded: int = Field(description="Of those, with an expansion in the month.")
    churn_rate: float | None = Field(description="lost / at_start")
    annual_churn: float | None = Field(description="1 - (1 - churn_rate)^12")
    upsell_conversion: float | None = Field(description="upgraded / at_start")
    median_days_to_upsell: float | None = Field(
        description="Days from first start to first upgrade, for first upgrades in the month."
    )


class PlanChurn(BaseModel):
    at_start: int = Field(description="Customers live at the start on the plan.")
    lost: int = Field(description="Of those, cancelled at the end of the month.")
    churn_rate: float | None = Field(description="lost / at_start")
    annual_churn: float | None = Field(description="1 - (1 - churn_rate)^12")


class Interval(BaseModel):
    estimate: float
    low: float
    high: float
    confidence: float


class PlaybookMonth(BaseModel):
    """A playbook's journeys started in the month, treatment against holdout."""

    journeys: int
    control_journeys: int
    conversions: int
    control_conversions: int
    conversion_rate: float | None
    control_conversion_rate: float | None
    uplift: Interval | None = Field(
        description="Treatment minus control conversion rate, with its confidence interval "
        "(two-proportion normal approximation); null while an arm has no journey."
    )
    revenue: Money = Field(description="Attributed to treatment journeys, by currency.")
    incremental_revenue: Money | None
    messages_sent: int
    revenue_per_message: Money | None


class Month(BaseModel):
    period: str
    start: datetime
    end: datetime
    currencies: dict[str, Waterfall]
    customers: Customers
    churn_by_plan: dict[str, PlanChurn] = Field(
        description="Plan at the start -> the month's customer churn among its customers."
    )
    playbooks: dict[str, PlaybookMonth]


class AverageClv(BaseModel):
    customers: int
    average_clv: float


class Portfolio(BaseModel):
    months: list[Month]
    clv_by_segment: dict[str, dict[str, AverageClv]] = Field(
        description="Currency -> CLV segment -> average CLV of the scored customers now."
    )
    clv_by_plan: dict[str, dict[str, AverageClv]] = Field(
        description="Currency -> plan -> average CLV of the scored customers now."
    )
