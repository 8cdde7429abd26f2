"""Health (retention) score, docs/domain.md section 4.

Four sub-scores, each 0-100 and each the plain average of the parts that could be
measured (a sub-score with none scores the model's ``neutral``), weighted by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scoring.domain.measures import days_of_use, login_ratio, open_rate, window_sum
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState


@dataclass(frozen=True)
class HealthInputs:
    """What the health score reads that the churn and expansion rules already measured."""

    adoption: float | None
    utilisation: dict[str, float]
    payment_late: bool
    invoice_overdue: bool


@dataclass(frozen=True)
class Health:
    score: float
    band: str
    components: dict[str, float]


def _mean(parts: list[float], neutral: float) -> float:
    return sum(parts) / len(parts) if parts else neutral


def _pct(x: float) -> float:
    return 100 * min(1.0, max(0.0, x))


def band_for(score: float, model: ScoringModel) -> str:
    bands = model.health.bands
    if score >= bands.high:
        return "high"
    if score >= bands.medium:
        return "medium"
    if score >= bands.low:
        return "low"
    return "at_risk"


def health(
    state: CustomerState, model: ScoringModel, now: datetime, inputs: HealthInputs
) -> Health:
    spec = model.health
    neutral = spec.neutral
    # engagement: logins against the customer's baseline (or a target), message engagement
    engagement: list[float] = []
    if state.users:
        login_spec = model.signals.get("login_drop")
        baseline_days = (login_spec.baseline_days if login_spec else None) or spec.window_days
        ratio = login_ratio(state, now, spec.window_days, baseline_days, 0)
        if ratio is not None:
            engagement.append(_pct(ratio[0]))
        else:
            recent = window_sum(state, "login", now, spec.window_days)
            engagement.append(_pct(recent / spec.login_target))
    rate = open_rate(state, now, spec.window_days, spec.min_messages)
    if rate is not None:
        engagement.append(_pct(rate))
    # usage: feature adoption and plan utilisation
    usage: list[float] = []
    if inputs.adoption is not None:
        usage.append(_pct(inputs.adoption))
    if inputs.utilisation:
        usage.append(_pct(max(inputs.utilisation.values())))
    # satisfaction: NPS, survey, comment sentiment
    satisfaction: list[float] = []
    for source, scale in (("nps", 10.0), ("survey", 10.0), ("comment_sentiment", 1.0)):
        latest = state.latest.get(source)
        if latest is not None:
            satisfaction.append(_pct(latest[1] / scale))
    # value: reported ROI, payments on time, tenure
    value: list[float] = []
    roi = state.latest.get("roi")
    if roi is not None:
        value.append(_pct(roi[1] / spec.roi_full_at))
    if inputs.payment_late:
        value.append(0.0)
    elif inputs.invoice_overdue:
        value.append(neutral)
    else:
        value.append(100.0)
    used_days = days_of_use(state, now)
    if used_days is not None:
        value.append(_pct(used_days / spec.tenure_full_at_days))
    components = {
        "engagement": round(_mean(engagement, neutral), 1),
        "usage": round(_mean(usage, neutral), 1),
        "satisfaction": round(_mean(satisfaction, neutral), 1),
        "value": round(_mean(value, neutral), 1),
    }
    w = spec.weights
    total = (
        components["engagement"] * w.engagement
        + components["usage"] * w.usage
        + components["satisfaction"] * w.satisfaction
        + components["value"] * w.value
    ) / 100
    score = round(min(100.0, max(0.0, total)), 1)
    return Health(score=score, band=band_for(score, model), components=components)
