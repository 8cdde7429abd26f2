"""The scorer's rules as pure functions over :class:`CustomerState`
(docs/domain.md sections 3 to 6).

``score(state, event, model, now=...)`` folds one event into a copy of the state and
re-evaluates it; ``score_delivery`` does the same for a notifier outcome, and
``reevaluate`` evaluates at a later instant with no new input (the clock moved on).
Each returns the new state, the edge-triggered changes and, when the score changed,
a snapshot. The caller's state is never modified.

The sections live in their own modules: :mod:`~scoring.domain.facts` (what an event
says), :mod:`~scoring.domain.churn` (section 3), :mod:`~scoring.domain.health` (4),
:mod:`~scoring.domain.expansion` (5), :mod:`~scoring.domain.value`,
:mod:`~scoring.domain.cohorts` and :mod:`~scoring.domain.loyalty` (6),
:mod:`~scoring.domain.engagement` (Tenure's own messages). This module evaluates them
together and decides what is emitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from common.events import Event
from common.messages import (
    Delivery,
    LoyaltyRedemption,
    RedFlag,
    ScoreSnapshot,
    SignalChange,
    SignalExplanation,
    Tier,
)
from scoring.domain.churn import active_signals, measure, probability_for, red_flags, tier_for
from scoring.domain.cohorts import CohortDelta, customer_deltas, register_customer
from scoring.domain.engagement import fold_delivery
from scoring.domain.expansion import MILESTONE_PREFIX, expansion_signals
from scoring.domain.facts import fold, prune
from scoring.domain.health import Health, HealthInputs, health
from scoring.domain.loyalty import loyalty_tier_for
from scoring.domain.measures import adoption, utilisation
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState, newest_event_time
from scoring.domain.value import (
    CohortStats,
    Rates,
    customer_clv_with_rates,
    segment_for,
)


@dataclass(frozen=True)
class Evaluation:
    signals: dict[str, SignalExplanation]
    risk_score: float
    tier: Tier
    churn_probability: float
    red_flags: tuple[RedFlag, ...] = field(default_factory=tuple)
    expansion: dict[str, SignalExplanation] = field(default_factory=dict)
    health: Health | None = None
    adoption: float | None = None
    utilisation: dict[str, float] = field(default_factory=dict)
    clv: float | None = None
    clv_rates: Rates | None = None
    segment: str | None = None
    loyalty_tier: str = "bronze"


Cohorts = Mapping[str, CohortStats]
"""Each plan's pooled cohort counts (what the cohort agent observed), by plan name."""


def evaluate(
    state: CustomerState,
    model: ScoringModel,
    now: datetime,
    cohorts: Cohorts | None = None,
) -> Evaluation:
    """Everything the scorer says about the customer at ``now``.

    Mutates only ``state.power_since`` (how long adoption has held), which is why
    :func:`reevaluate` works on a copy.
    """
    active = active_signals(measure(state, model, now), model)
    risk = min(100.0, round(sum(s.contribution for s in active.values()), 4))
    tier = tier_for(len(active), model)
    probability = probability_for(tier, risk, model)
    nps = state.latest.get("nps")
    flags = red_flags(active, nps[1] if nps is not None else None, model)
    for flag in flags:
        probability = max(probability, flag.floor)
    used = adoption(state, model, now, model.expansion.adoption_window_days)
    usage = utilisation(state, model, now)
    expansion = expansion_signals(state, model, now, used, usage)
    inputs = HealthInputs(
        adoption=used,
        utilisation=usage,
        payment_late="payment_late" in active,
        invoice_overdue=bool(state.overdue),
    )
    cohort = cohorts.get(state.plan) if cohorts is not None and state.plan is not None else None
    value, rates = customer_clv_with_rates(state.mrr, cohort, model.clv)
    return Evaluation(
        signals=active,
        risk_score=risk,
        tier=tier,
        churn_probability=round(probability, 4),
        red_flags=tuple(flags),
        expansion=expansion,
        health=health(state, model, now, inputs),
        adoption=used,
        utilisation=usage,
        clv=value,
        clv_rates=rates,
        segment=segment_for(value, model.clv) if value is not None else None,
        loyalty_tier=loyalty_tier_for(state.loyalty_points, model.loyalty.tiers),
    )


@dataclass(frozen=True)
class Outcome:
    state: CustomerState
    changes: tuple[SignalChange, ...] = ()
    snapshot: ScoreSnapshot | None = None
    duplicate: bool = False
    cohort: tuple[CohortDelta, ...] = ()


def _fingerprint(ev: Evaluation, state: CustomerState) -> str:
    parts = [f"{ev.risk_score}|{ev.tier}|{ev.churn_probability}"]
    parts += [f"{s.name}={s.value}" for s in sorted(ev.signals.values(), key=lambda s: s.name)]
    parts += [f.name for f in ev.red_flags]
    parts += [f"{s.name}={s.value}" for s in sorted(ev.expansion.values(), key=lambda s: s.name)]
    if ev.health is not None:
        parts += [f"{ev.health.score}", *(f"{v}" for v in ev.health.components.values())]
    parts += [f"{k}={v}" for k, v in sorted(ev.utilisation.items())]
    parts += [f"{ev.adoption}|{ev.clv}|{state.plan}|{state.loyalty_points}|{state.loyalty_spent}"]
    parts += [r["event_id"] for r in state.redemptions[-1:]]
    if ev.clv_rates is not None:
        parts += [f"{ev.clv_rates}"]
    parts += sorted(state.milestones)
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def _edges(
    state: CustomerState,
    now: datetime,
    was: dict[str, object],
    now_on: dict[str, SignalExplanation],
) -> list[SignalChange]:
    changes = [
        SignalChange(
            customer_id=state.customer_id,
            occurred_at=now,
            change="signal_on",
            name=name,
            value=sig.value,
            threshold=sig.threshold,
        )
        for name, sig in now_on.items()
        if name not in was
    ]
    changes += [
        SignalChange(customer_id=state.customer_id, occurred_at=now, change="signal_off", name=name)
        for name in was
        if name not in now_on and not name.startswith(MILESTONE_PREFIX)
    ]
    return changes


def _reevaluate_in_place(
    state: CustomerState,
    model: ScoringModel,
    now: datetime,
    cohorts: Cohorts | None,
    deltas: list[CohortDelta] | None = None,
) -> Outcome:
    prune(state, model, now)
    state.evaluated_at = now.isoformat()
    ev = evaluate(state, model, now, cohorts)
    lifecycle = dict(ev.expansion)
    for name, reached_at in state.milestones.items():
        key = MILESTONE_PREFIX + name
        lifecycle[key] = SignalExplanation(
            name=key, group="onboarding", value=reached_at, threshold=None, contribution=0.0
        )
    changes = _edges(state, now, state.active, ev.signals)
    changes += _edges(state, now, state.lifecycle, lifecycle)

    def moved(kind: str, name: str, previous: str | None, current: str | None) -> None:
        if previous != current:
            changes.append(
                SignalChange(
                    customer_id=state.customer_id,
                    occurred_at=now,
                    change=kind,  # type: ignore[arg-type]
                    name=name,
                    previous=previous,
                    current=current,
                )
            )

    band = ev.health.band if ev.health else None
    moved("tier_changed", "tier", state.tier, ev.tier)
    moved("band_changed", "band", state.band, band)
    if ev.segment is not None:
        moved("segment_changed", "segment", state.segment, ev.segment)
        state.segment = ev.segment
    moved("loyalty_tier_changed", "loyalty_tier", state.loyalty_tier, ev.loyalty_tier)
    state.active = {name: sig.value for name, sig in ev.signals.items()}
    state.lifecycle = {name: sig.value for name, sig in lifecycle.items()}
    state.tier = ev.tier
    state.band = band
    state.loyalty_tier = ev.loyalty_tier
    fingerprint = _fingerprint(ev, state)
    snapshot = None
    if fingerprint != state.last_snapshot:
        state.last_snapshot = fingerprint
        snapshot = ScoreSnapshot(
            customer_id=state.customer_id,
            as_of=now,
            risk_score=ev.risk_score,
            tier=ev.tier,
            churn_probability=ev.churn_probability,
            signals=tuple(sorted(ev.signals.values(), key=lambda s: -s.contribution)),
            red_flags=ev.red_flags,
            events_counted=state.events_counted,
            plan=state.plan,
            health_score=ev.health.score if ev.health else None,
            health_band=band,  # type: ignore[arg-type]
            health_components=ev.health.components if ev.health else {},
            utilisation=ev.utilisation,
            feature_adoption=ev.adoption,
            expansion_signals=tuple(ev.expansion[k] for k in sorted(ev.expansion)),
            milestones=tuple(sorted(state.milestones)),
            clv=ev.clv,
            clv_segment=ev.segment,  # type: ignore[arg-type]
            clv_monthly_churn=ev.clv_rates.monthly_churn if ev.clv_rates else None,
            clv_expansion_rate=ev.clv_rates.expansion if ev.clv_rates else None,
            clv_rates_observed=bool(ev.clv_rates and ev.clv_rates.observed),
            loyalty_points=state.loyalty_points - state.loyalty_spent,
            loyalty_points_earned=state.loyalty_points,
            loyalty_tier=ev.loyalty_tier,  # type: ignore[arg-type]
            redemptions=tuple(LoyaltyRedemption.model_validate(r) for r in state.redemptions),
        )
    return Outcome(
        state=state, changes=tuple(changes), snapshot=snapshot, cohort=tuple(deltas or ())
    )


def _at(state: CustomerState, now: datetime | None) -> datetime:
    """Evaluate at the clock's ``now``, or at the newest event time when that is later."""
    newest = newest_event_time(state)
    return newest if now is None or newest > now else now


def reevaluate(
    state: CustomerState,
    model: ScoringModel,
    now: datetime,
    cohorts: Cohorts | None = None,
) -> Outcome:
    """Evaluate at ``now`` (or the newest event time, if later) with no new input.

    This is how time-driven conditions (an invoice getting later, a window emptying,
    adoption held for 30 days) turn on or off without an event from the customer, and
    how a silent customer is counted in its plan's cohort when a new month begins.
    """
    at = _at(state, now)
    state = state.clone()
    deltas = register_customer(state, model, at)
    return _reevaluate_in_place(state, model, at, cohorts, deltas)


def score(
    state: CustomerState,
    event: Event,
    model: ScoringModel,
    now: datetime | None = None,
    cohorts: Cohorts | None = None,
) -> Outcome:
    """Fold one event and evaluate at ``now`` (the clock), or at the newest event time if later.

    Idempotent per ``event_id``: a duplicate returns ``duplicate=True`` and changes nothing.
    """
    if event.event_id in state.seen:
        return Outcome(state=state, duplicate=True)
    state = state.clone()
    state.seen.append(event.event_id)
    del state.seen[: -model.dedup_ids_per_customer]
    deltas = customer_deltas(state, event, model)
    fold(state, event, model)
    state.events_counted += 1
    return _reevaluate_in_place(state, model, _at(state, now), cohorts, deltas)


def score_delivery(
    state: CustomerState,
    delivery: Delivery,
    model: ScoringModel,
    now: datetime | None = None,
    cohorts: Cohorts | None = None,
) -> Outcome:
    """Fold a notifier outcome (sent, opened, ...) and evaluate; idempotent per outcome."""
    state = state.clone()
    if not fold_delivery(state, delivery):
        return Outcome(state=state, duplicate=True)
    del state.seen[: -model.dedup_ids_per_customer]
    at = _at(state, now or delivery.occurred_at)
    return _reevaluate_in_place(state, model, max(at, delivery.occurred_at), cohorts)
