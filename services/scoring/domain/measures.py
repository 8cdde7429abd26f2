"""Measurements over a customer's state at an instant: windows, adoption, utilisation, baselines.

Everything here reads the state and the model; nothing changes either.
"""

from __future__ import annotations

from datetime import datetime

from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState, day_number


def window_sum(state: CustomerState, counter: str, now: datetime, days: int) -> float:
    """The sum of ``counter`` over the ``days`` days ending with the day of ``now``."""
    today = day_number(now)
    return sum(n for d, n in state.counters.get(counter, {}).items() if today - days < d <= today)


def span_sum(state: CustomerState, counter: str, first_day: int, last_day: int) -> float:
    """The sum of ``counter`` over the days ``first_day`` to ``last_day`` inclusive."""
    buckets = state.counters.get(counter, {})
    return sum(n for d, n in buckets.items() if first_day <= d <= last_day)


def days_of_use(state: CustomerState, now: datetime) -> int | None:
    """Whole days since the customer started (subscription, signup or first event)."""
    start = state.started or state.first_seen
    if start is None:
        return None
    return max(0, (now - datetime.fromisoformat(start)).days)


def days_of_history(state: CustomerState, now: datetime) -> int:
    """Whole days since the earliest event counted."""
    if state.first_seen is None:
        return 0
    return max(0, day_number(now) - day_number(datetime.fromisoformat(state.first_seen)))


def adoption(state: CustomerState, model: ScoringModel, now: datetime, days: int) -> float | None:
    """Distinct plan features used in the last ``days`` days / the plan's features.

    None while the customer's plan is unknown (or not in the catalog).
    """
    plan = model.plans.get(state.plan or "")
    if plan is None:
        return None
    today = day_number(now)
    used = sum(1 for f in plan.features if f in state.features and state.features[f] > today - days)
    return round(used / len(plan.features), 4)


def utilisation(state: CustomerState, model: ScoringModel, now: datetime) -> dict[str, float]:
    """Per limited metric of the customer's plan: consumption or level / the plan's limit."""
    plan = model.plans.get(state.plan or "")
    if plan is None:
        return {}
    spec = model.utilisation
    today = day_number(now)
    out: dict[str, float] = {}
    for metric, mode in spec.metrics.items():
        limit = plan.limits.get(metric)
        if limit is None:
            continue
        if mode == "consumed":
            used = window_sum(state, f"use:{metric}", now, spec.period_days)
        else:
            level = state.levels.get(metric)
            used = level[1] if level is not None else 0.0
            if metric == "seats":
                recent_users = sum(1 for d in state.users.values() if d > today - spec.period_days)
                used = max(used, float(recent_users))
        out[metric] = round(used / limit, 4)
    return out


def blocked_metrics(state: CustomerState, model: ScoringModel, now: datetime) -> list[str]:
    """Metrics whose use was blocked at the limit within ``blocked_days``."""
    days = model.utilisation.blocked_days
    return sorted(
        name.removeprefix("blocked:")
        for name in state.counters
        if name.startswith("blocked:") and window_sum(state, name, now, days) > 0
    )


def login_ratio(
    state: CustomerState, now: datetime, window_days: int, baseline_days: int, min_baseline: float
) -> tuple[float, float] | None:
    """(logins in the window / the customer's own baseline, baseline), or None without one.

    The baseline is the average number of logins per window over the ``baseline_days``
    before the window, or over the history there is when shorter (at least one window).
    """
    today = day_number(now)
    window_start = today - window_days + 1
    available = window_start - day_number(
        datetime.fromisoformat(state.first_seen or now.isoformat())
    )
    if available < window_days:
        return None
    span = min(baseline_days, available)
    before = span_sum(state, "login", window_start - span, window_start - 1)
    baseline = before * window_days / span
    if baseline < min_baseline or baseline <= 0:
        return None
    recent = window_sum(state, "login", now, window_days)
    return round(recent / baseline, 4), round(baseline, 4)


def open_rate(state: CustomerState, now: datetime, window_days: int, min_sent: int) -> float | None:
    """Messages engaged with / messages sent in the window, or None below ``min_sent`` sent."""
    sent = window_sum(state, "msg_sent", now, window_days)
    if sent < min_sent:
        return None
    engaged = window_sum(state, "msg_engaged", now, window_days)
    return round(min(1.0, engaged / sent), 4)
