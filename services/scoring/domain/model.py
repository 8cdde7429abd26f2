"""The scoring model file: its schema and loader. Invalid files fail with file, field and reason.

Every number the scorer uses (docs/domain.md sections 3 to 6) lives in the model file; the
classes below only say what shape those numbers must have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from common.datafiles import load_yaml
from scoring.errors import ScoringError

Rule = Literal[
    "count_above",
    "count_at_least",
    "latest_below",
    "invoice_late",
    "open_rate_below",
    "adoption_below",
    "logins_below_baseline",
    "inactive",
]
Source = Literal["nps", "survey", "comment_sentiment"]
MetricName = Literal["documents", "api_calls", "seats", "storage_gb", "integrations"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignalSpec(_Strict):
    """One churn signal: how it is measured and what it weighs within its group."""

    group: str
    weight: float = Field(gt=0)
    rule: Rule
    counter: str | None = None
    source: Source | None = None
    window_days: int | None = Field(default=None, ge=1, le=400)
    threshold: float | None = None
    min_count: int | None = Field(
        default=None, ge=0, description="open rate: messages sent; login drop: baseline logins"
    )
    baseline_days: int | None = Field(default=None, ge=1, le=400)
    min_history_days: int = Field(default=0, ge=0, le=400)

    @model_validator(mode="after")
    def _fields_for_rule(self) -> SignalSpec:
        need: dict[str, tuple[str, ...]] = {
            "count_above": ("counter", "window_days", "threshold"),
            "count_at_least": ("counter", "window_days", "threshold"),
            "latest_below": ("source", "threshold"),
            "invoice_late": ("threshold",),
            "open_rate_below": ("window_days", "threshold", "min_count"),
            "adoption_below": ("window_days", "threshold"),
            "logins_below_baseline": ("window_days", "threshold", "baseline_days", "min_count"),
            "inactive": (),
        }
        missing = [f for f in need[self.rule] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"rule {self.rule} needs {', '.join(missing)}")
        return self

    @property
    def horizon_days(self) -> int:
        """How many days of history this signal reads."""
        return (self.window_days or 0) + (self.baseline_days or 0)


class Tiers(_Strict):
    medium_from: int = Field(ge=1)
    high_from: int = Field(ge=2)


class Probability(_Strict):
    low: tuple[float, float]
    medium: tuple[float, float]
    high: tuple[float, float]


class RedFlagSpec(_Strict):
    name: str
    signals: tuple[str, ...]
    nps_below: float | None = None
    floor: float = Field(ge=0, le=1)


class SentimentBands(_Strict):
    negative_below: float = Field(ge=0, le=1)
    positive_above: float = Field(ge=0, le=1)


class Plan(_Strict):
    """One plan of the catalog. A metric missing from ``limits`` is unlimited."""

    price: float = Field(ge=0)
    limits: dict[MetricName, float] = Field(default_factory=dict)
    features: tuple[str, ...] = Field(min_length=1)
    next_plan: str | None = None

    @model_validator(mode="after")
    def _positive_limits(self) -> Plan:
        bad = [m for m, v in self.limits.items() if v <= 0]
        if bad:
            raise ValueError(f"limits must be positive: {', '.join(bad)}")
        return self


class Utilisation(_Strict):
    """Plan utilisation (docs/domain.md section 5)."""

    period_days: int = Field(ge=1, le=400)
    approaching: float = Field(gt=0)
    reached: float = Field(gt=0)
    blocked_days: int = Field(ge=1, le=400, description="a blocked use counts this long")
    metrics: dict[MetricName, Literal["consumed", "level"]]

    @model_validator(mode="after")
    def _ordered(self) -> Utilisation:
        if self.approaching >= self.reached:
            raise ValueError("approaching must be below reached")
        return self


class PowerUser(_Strict):
    adoption_at_least: float = Field(gt=0, le=1)
    held_days: int = Field(ge=1, le=400)


class RoiProven(_Strict):
    roi_above: float
    min_days_of_use: int = Field(ge=0)
    nps_above: float = Field(ge=0, le=10, description="customer's latest NPS score, 0-10")


class CrossSellReady(_Strict):
    min_days_of_use: int = Field(ge=0)
    nps_above: float = Field(ge=0, le=10)
    min_active_days: int = Field(ge=0)
    window_days: int = Field(ge=1, le=400)


class Expansion(_Strict):
    adoption_window_days: int = Field(ge=1, le=400)
    power_user: PowerUser
    roi_proven: RoiProven
    cross_sell_ready: CrossSellReady


class Milestone(_Strict):
    """An onboarding milestone, reached when its rule holds between two days of use."""

    rule: Literal["feature_used", "outcome_reported", "distinct_features", "active"]
    from_day: int = Field(default=0, ge=0)
    by_day: int = Field(ge=0)
    features: tuple[str, ...] = ()
    count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Milestone:
        if self.from_day > self.by_day:
            raise ValueError("from_day must not be after by_day")
        if self.rule == "feature_used" and not self.features:
            raise ValueError("rule feature_used needs features")
        return self


class HealthWeights(_Strict):
    engagement: float = Field(ge=0)
    usage: float = Field(ge=0)
    satisfaction: float = Field(ge=0)
    value: float = Field(ge=0)


class HealthBands(_Strict):
    """Lower bounds of each band; below ``low`` is ``at_risk``."""

    high: float = Field(ge=0, le=100)
    medium: float = Field(ge=0, le=100)
    low: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> HealthBands:
        if not self.high > self.medium > self.low:
            raise ValueError("bands must satisfy high > medium > low")
        return self


class Health(_Strict):
    """Health score (docs/domain.md section 4): weighted sub-scores, each 0-100."""

    weights: HealthWeights
    bands: HealthBands
    neutral: float = Field(ge=0, le=100, description="a sub-score part nothing measured yet")
    window_days: int = Field(ge=1, le=400)
    login_target: float = Field(gt=0, description="logins per window that score 100 (no baseline)")
    min_messages: int = Field(ge=1)
    roi_full_at: float = Field(gt=0)
    tenure_full_at_days: float = Field(gt=0)

    @model_validator(mode="after")
    def _sum(self) -> Health:
        w = self.weights
        total = w.engagement + w.usage + w.satisfaction + w.value
        if abs(total - 100) > 1e-9:
            raise ValueError(f"weights must sum to 100, not {total}")
        return self


class ClvSegments(_Strict):
    high_above: float = Field(gt=0)
    low_below: float = Field(gt=0)


class Clv(_Strict):
    """CLV (docs/domain.md section 6) and its cohort fallback."""

    gross_margin: float = Field(gt=0, le=1)
    default_monthly_churn: float = Field(gt=0, le=1)
    default_expansion_rate: float = Field(ge=0)
    min_cohort_customer_months: int = Field(
        ge=1, description="observed rates replace the defaults from this many customer-months"
    )
    cohort_months: int = Field(ge=1, le=36, description="complete months pooled per plan")
    min_monthly_churn: float = Field(gt=0, le=1, description="floor: no infinite CLV")
    segments: ClvSegments


class LoyaltyPoints(_Strict):
    daily_active: int = Field(ge=0)
    feature_daily: int = Field(ge=0)
    referral: int = Field(ge=0)
    feedback: int = Field(ge=0)
    social_share: int = Field(ge=0)


class LoyaltyTiers(_Strict):
    """Points from which each tier starts; below silver is bronze."""

    silver: int = Field(ge=1)
    gold: int = Field(ge=1)
    platinum: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LoyaltyTiers:
        if not self.silver < self.gold < self.platinum:
            raise ValueError("tiers must satisfy silver < gold < platinum")
        return self


class Loyalty(_Strict):
    points: LoyaltyPoints
    tiers: LoyaltyTiers
    redemptions: dict[str, int] = Field(description="reward → points it costs")
    redemptions_remembered: int = Field(
        default=20, ge=1, description="redemptions kept per customer (and in its snapshot)"
    )
    max_features_per_day: int = Field(ge=1)

    @model_validator(mode="after")
    def _positive_costs(self) -> Loyalty:
        bad = [name for name, cost in self.redemptions.items() if cost <= 0]
        if bad:
            raise ValueError(f"redemption costs must be positive: {', '.join(bad)}")
        return self


class Limits(_Strict):
    """Bounds on what one customer's state may hold (memory stays bounded)."""

    dedup_ids_per_customer: int = Field(default=1000, ge=1)
    features_per_customer: int = Field(default=200, ge=1)
    users_per_customer: int = Field(default=500, ge=1)


class ScoringModel(_Strict):
    version: int
    groups: dict[str, float]
    signals: dict[str, SignalSpec]
    tiers: Tiers
    probability: Probability
    red_flags: tuple[RedFlagSpec, ...] = ()
    sentiment: SentimentBands
    plans: dict[str, Plan]
    utilisation: Utilisation
    expansion: Expansion
    milestones: dict[str, Milestone]
    health: Health
    clv: Clv
    loyalty: Loyalty
    limits: Limits = Limits()
    _contributions: dict[str, float] = PrivateAttr(default_factory=dict)
    _longest: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _consistent(self) -> ScoringModel:
        if abs(sum(self.groups.values()) - 100) > 1e-9:
            raise ValueError(f"group weights must sum to 100, not {sum(self.groups.values())}")
        for name, spec in self.signals.items():
            if spec.group not in self.groups:
                raise ValueError(f"signals.{name}.group: unknown group {spec.group!r}")
        for flag in self.red_flags:
            unknown = [s for s in flag.signals if s not in self.signals]
            if unknown:
                raise ValueError(f"red flag {flag.name}: unknown signals {unknown}")
        for name, plan in self.plans.items():
            if plan.next_plan is not None and plan.next_plan not in self.plans:
                raise ValueError(f"plans.{name}.next_plan: unknown plan {plan.next_plan!r}")
        # Derived numbers, computed once (the model is frozen).
        for signal, spec in self.signals.items():
            group_total = sum(s.weight for s in self.signals.values() if s.group == spec.group)
            self._contributions[signal] = self.groups[spec.group] * spec.weight / group_total
        self._longest = self._longest_span()
        return self

    def contribution(self, signal: str) -> float:
        """Points (of 100) a signal adds when active: group weight times its share of the group."""
        return self._contributions[signal]

    @property
    def longest_window_days(self) -> int:
        """Days of daily buckets kept: the longest span any rule reads."""
        return self._longest

    def _longest_span(self) -> int:
        spans = [s.horizon_days for s in self.signals.values()]
        spans += [
            self.utilisation.period_days,
            self.utilisation.blocked_days,
            self.expansion.adoption_window_days,
            self.expansion.cross_sell_ready.window_days,
            self.health.window_days,
        ]
        return max(spans)

    @property
    def dedup_ids_per_customer(self) -> int:
        return self.limits.dedup_ids_per_customer


class ModelError(ScoringError):
    """The scoring model file is invalid."""


def load_model(path: Path) -> ScoringModel:
    """Read and validate a model file. Raises :class:`ModelError` naming file, field and reason."""
    return load_yaml(path, ScoringModel, ModelError)


DEFAULT_MODEL_PATH = Path(__file__).parent.parent / "model.yaml"
