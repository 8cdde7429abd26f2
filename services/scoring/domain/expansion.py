"""Usage, limits, expansion signals and onboarding milestones (docs/domain.md section 5)."""

from __future__ import annotations

from datetime import datetime

from common.events import Event, LoginEvent, UsageEvent
from common.messages import SignalExplanation
from scoring.domain.measures import blocked_metrics, days_of_use, window_sum
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState

EXPANSION_GROUP = "expansion"
MILESTONE_PREFIX = "milestone_"


def expansion_signals(
    state: CustomerState,
    model: ScoringModel,
    now: datetime,
    used: float | None,
    usage: dict[str, float],
) -> dict[str, SignalExplanation]:
    """The active expansion signals at ``now``. Updates ``state.power_since`` (in place)."""
    spec = model.expansion
    active: dict[str, SignalExplanation] = {}

    def on(name: str, value: float | str | None, threshold: float | str | None) -> None:
        active[name] = SignalExplanation(
            name=name, group=EXPANSION_GROUP, value=value, threshold=threshold, contribution=0.0
        )

    limits = model.utilisation
    blocked = blocked_metrics(state, model, now)
    reached = sorted(m for m, r in usage.items() if r >= limits.reached)
    if reached or blocked:
        on("limit_reached", ",".join(sorted({*reached, *blocked})), limits.reached)
    approaching = sorted(
        m for m, r in usage.items() if limits.approaching <= r < limits.reached and m not in blocked
    )
    if approaching:
        on("limit_approaching", ",".join(approaching), limits.approaching)

    power = spec.power_user
    if used is not None and used >= power.adoption_at_least:
        if state.power_since is None or now.isoformat() < state.power_since:
            state.power_since = now.isoformat()
        held = (now - datetime.fromisoformat(state.power_since)).days
        if held >= power.held_days:
            on("power_user", used, power.adoption_at_least)
    else:
        state.power_since = None

    used_days = days_of_use(state, now) or 0
    nps = state.latest.get("nps")
    roi = state.latest.get("roi")
    proven = spec.roi_proven
    if (
        roi is not None
        and roi[1] > proven.roi_above
        and used_days >= proven.min_days_of_use
        and nps is not None
        and nps[1] > proven.nps_above
    ):
        on("roi_proven", roi[1], proven.roi_above)
    ready = spec.cross_sell_ready
    active_days = window_sum(state, "active", now, ready.window_days)
    if (
        used_days >= ready.min_days_of_use
        and active_days >= ready.min_active_days
        and nps is not None
        and nps[1] > ready.nps_above
    ):
        on("cross_sell_ready", active_days, ready.min_active_days)
    return active


def reach_milestones(state: CustomerState, event: Event, model: ScoringModel) -> None:
    """Record the onboarding milestones ``event`` reaches (in place); none is ever undone."""
    start = state.started or state.first_seen
    if start is None:
        return
    day = (event.occurred_at - datetime.fromisoformat(start)).days
    feature = event.feature if isinstance(event, UsageEvent) else None
    used_feature = isinstance(event, UsageEvent) and event.type == "feature_used" and feature
    for name, spec in model.milestones.items():
        if name in state.milestones or not spec.from_day <= day <= spec.by_day:
            continue
        reached = False
        if spec.rule == "feature_used":
            reached = bool(used_feature) and feature in spec.features
        elif spec.rule == "outcome_reported":
            reached = isinstance(event, UsageEvent) and event.type == "outcome_reported"
        elif spec.rule == "distinct_features":
            if used_feature and feature and feature not in state.onboarding_features:
                state.onboarding_features.append(feature)
                del state.onboarding_features[spec.count :]
            reached = len(state.onboarding_features) >= spec.count
        elif spec.rule == "active":
            reached = isinstance(event, LoginEvent | UsageEvent)
        if reached:
            state.milestones[name] = event.occurred_at.isoformat()
