"""Churn risk (docs/domain.md section 3): each signal measured, the score, tier,
probability, red flags."""

from __future__ import annotations

from datetime import datetime

from common.messages import RedFlag, SignalExplanation, Tier
from scoring.domain.measures import (
    adoption,
    days_of_history,
    login_ratio,
    open_rate,
    window_sum,
)
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState

COMPETITION_TYPES = frozenset(
    {
        "competitor_visit",
        "alternative_search",
        "competitor_evaluation",
        "competitor_trial",
        "contract_review",
    }
)
"""Intent events counted per day (the competition signals read these counters)."""


Measured = dict[str, tuple[float | str | None, float | None, bool]]


def measure(state: CustomerState, model: ScoringModel, now: datetime) -> Measured:
    """Each churn signal's (value, threshold, active) at ``now``."""
    out: Measured = {}
    history = days_of_history(state, now)
    for name, spec in model.signals.items():
        threshold = spec.threshold
        if spec.rule in ("count_above", "count_at_least"):
            assert spec.counter and spec.window_days and threshold is not None
            count = window_sum(state, spec.counter, now, spec.window_days)
            active = count > threshold if spec.rule == "count_above" else count >= threshold
            out[name] = (count, threshold, active)
        elif spec.rule == "latest_below":
            assert spec.source and threshold is not None
            latest = state.latest.get(spec.source)
            if latest is None:
                out[name] = (None, threshold, False)
            else:
                out[name] = (latest[1], threshold, latest[1] < threshold)
        elif spec.rule == "invoice_late":
            assert threshold is not None
            late = [
                (now - datetime.fromisoformat(since)).total_seconds() / 86400
                for since in state.overdue.values()
            ]
            days_late = round(max(late), 2) if late else 0.0
            out[name] = (days_late, threshold, days_late > threshold)
        elif spec.rule == "open_rate_below":
            assert spec.window_days and threshold is not None and spec.min_count is not None
            rate = open_rate(state, now, spec.window_days, spec.min_count)
            out[name] = (rate, threshold, rate is not None and rate < threshold)
        elif spec.rule == "adoption_below":
            assert spec.window_days and threshold is not None
            used = adoption(state, model, now, spec.window_days)
            old_enough = history >= spec.min_history_days
            out[name] = (used, threshold, used is not None and old_enough and used < threshold)
        elif spec.rule == "logins_below_baseline":
            assert spec.window_days and spec.baseline_days and threshold is not None
            assert spec.min_count is not None
            ratio = login_ratio(state, now, spec.window_days, spec.baseline_days, spec.min_count)
            value = ratio[0] if ratio else None
            out[name] = (value, threshold, value is not None and value < threshold)
        else:
            out[name] = (None, threshold, False)
    return out


def tier_for(active_count: int, model: ScoringModel) -> Tier:
    if active_count >= model.tiers.high_from:
        return "high"
    if active_count >= model.tiers.medium_from:
        return "medium"
    return "low"


def probability_for(tier: Tier, risk_score: float, model: ScoringModel) -> float:
    """Place risk_score/100 inside the tier's probability range."""
    low, high = {
        "low": model.probability.low,
        "medium": model.probability.medium,
        "high": model.probability.high,
    }[tier]
    return low + (high - low) * risk_score / 100


def active_signals(measured: Measured, model: ScoringModel) -> dict[str, SignalExplanation]:
    """The signals that are on, each with its value, threshold and weighted contribution."""
    return {
        name: SignalExplanation(
            name=name,
            group=model.signals[name].group,
            value=value,
            threshold=threshold,
            contribution=round(model.contribution(name), 4),
        )
        for name, (value, threshold, on) in measured.items()
        if on
    }


def red_flags(
    active: dict[str, SignalExplanation], nps: float | None, model: ScoringModel
) -> list[RedFlag]:
    """The red flags whose signals are all on (and whose NPS condition holds)."""
    flags = []
    for flag in model.red_flags:
        if not all(s in active for s in flag.signals):
            continue
        if flag.nps_below is not None and (nps is None or nps >= flag.nps_below):
            continue
        flags.append(RedFlag(name=flag.name, signals=flag.signals, floor=flag.floor))
    return flags
