"""DOMAIN sections 3 to 6 as pure functions over :class:`CustomerState`.

``score(state, event, model, now=...)`` folds one event into a copy of the state and
re-evaluates it; ``score_delivery`` does the same for a notifier outcome, and
``reevaluate`` evaluates at a later instant with no new input (the clock moved on).
Each returns the new state, the edge-triggered changes and, when the score changed,
a snapshot. The caller's state is never modified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from common.events import (
    Event,
    IntentEvent,
    LoginEvent,
    PaymentEvent,
    ProfileEvent,
    SupportEvent,
    UsageEvent,
)
from common.messages import (
    Delivery,
    LoyaltyRedemption,
    RedFlag,
    ScoreSnapshot,
    SignalChange,
    SignalExplanation,
    Tier,
)
from scoring.domain.cohorts import CohortDelta, on_cancelled, on_upgraded, register
from scoring.domain.health import Health, HealthInputs, health
from scoring.domain.measures import (
    adoption,
    blocked_metrics,
    days_of_history,
    days_of_use,
    login_ratio,
    open_rate,
    utilisation,
    window_sum,
)
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState, day_number
from scoring.domain.value import (
    CohortStats,
    Rates,
    customer_clv_with_rates,
    loyalty_tier_for,
    segment_for,
)

COMPETITION_TYPES = frozenset(
    {
        "competitor_visit",
        "alternative_search",
        "competitor_evaluation",
        "competitor_trial",
        "contract_review",
    }
)
FEEDBACK_TYPES = frozenset({"nps_response", "survey_response", "comment"})
REACTIVATING = frozenset({"subscription_started", "subscription_reactivated"})
ENGAGED_STATUSES = frozenset({"opened", "clicked", "replied", "read"})
MESSAGE_CHANNELS = frozenset({"email", "in_app"})
EXPANSION_GROUP = "expansion"
MILESTONE_PREFIX = "milestone_"


# -- folding inputs into the state -------------------------------------------------------


def _add(state: CustomerState, counter: str, when: datetime, amount: float = 1.0) -> None:
    buckets = state.counters.setdefault(counter, {})
    day = day_number(when)
    buckets[day] = buckets.get(day, 0.0) + amount


def _mark(state: CustomerState, counter: str, when: datetime) -> None:
    """A once-a-day fact (the customer was active that day)."""
    state.counters.setdefault(counter, {})[day_number(when)] = 1.0


def _set_latest(state: CustomerState, source: str, when: datetime, value: float) -> None:
    previous = state.latest.get(source)
    stamp = when.isoformat()
    # Out-of-order events: the newest by event time wins, whatever the arrival order; two
    # answers stamped the same instant keep the lower (the cautious reading of risk).
    if previous is None or previous[0] < stamp or (previous[0] == stamp and value < previous[1]):
        state.latest[source] = (stamp, value)


def _remember(table: dict[str, int], key: str, day: int, cap: int) -> None:
    """Record ``key`` as seen on ``day``; beyond ``cap`` keys, forget the least recent."""
    if key not in table and len(table) >= cap:
        del table[min(table, key=lambda k: table[k])]
    table[key] = max(day, table.get(key, day))


def _earn(
    state: CustomerState, model: ScoringModel, when: datetime, what: str, points: int
) -> None:
    """Award once-a-day loyalty points for ``what`` on the day of ``when``."""
    day = day_number(when)
    if day <= day_number(_now_of(state)) - model.longest_window_days:
        return  # older than the days remembered: we cannot tell whether it was awarded
    earned = state.loyalty_days.setdefault(day, [])
    if what in earned or len(earned) >= model.loyalty.max_features_per_day:
        return
    earned.append(what)
    state.loyalty_points += points


def redeem(state: CustomerState, model: ScoringModel, event: UsageEvent) -> dict[str, Any]:
    """Spend the reward's points if the balance covers them; record the outcome (in place).

    The balance is what was earned minus what was spent, in arrival order (a redemption
    is a transaction: it is judged on the points known when it arrives). A reward not
    in the model's catalog, or one the balance cannot cover, is refused with the reason
    and spends nothing. Returns the recorded redemption.
    """
    reward = event.reward or ""
    cost = model.loyalty.redemptions.get(reward)
    balance = state.loyalty_points - state.loyalty_spent
    if cost is None:
        known = ", ".join(sorted(model.loyalty.redemptions))
        status, reason = "refused", f"unknown reward {reward!r} (known: {known})"
    elif cost > balance:
        status, reason = "refused", f"balance {balance} is below the cost {cost}"
    else:
        state.loyalty_spent += cost
        status, reason = "accepted", None
    entry = {
        "event_id": event.event_id,
        "reward": reward,
        "cost": cost,
        "occurred_at": event.occurred_at.isoformat(),
        "status": status,
        "reason": reason,
    }
    state.redemptions.append(entry)
    del state.redemptions[: -model.loyalty.redemptions_remembered]
    return entry


def _now_of(state: CustomerState) -> datetime:
    return datetime.fromisoformat(state.as_of) if state.as_of else datetime.min.replace(tzinfo=UTC)


def _set_plan(state: CustomerState, when: datetime, plan: str | None, mrr: float | None) -> None:
    if state.plan_at is not None and when.isoformat() < state.plan_at:
        return
    if plan is not None:
        state.plan = plan
    if mrr is not None:
        state.mrr = mrr
    if plan is not None or mrr is not None:
        state.plan_at = when.isoformat()


def _start(state: CustomerState, when: datetime) -> None:
    if state.started is None or when.isoformat() < state.started:
        state.started = when.isoformat()


def _milestones(state: CustomerState, event: Event, model: ScoringModel) -> None:
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


def fold(state: CustomerState, event: Event, model: ScoringModel) -> None:
    """Record what ``event`` says about the customer into ``state`` (in place)."""
    when = event.occurred_at
    stamp = when.isoformat()
    if state.first_seen is None or stamp < state.first_seen:
        state.first_seen = stamp
    if state.as_of is None or stamp > state.as_of:
        state.as_of = stamp
    negative = model.sentiment.negative_below
    points = model.loyalty.points
    limits = model.limits
    if isinstance(event, SupportEvent):
        if event.type == "ticket_opened":
            _add(state, "ticket_opened", when)
            if event.sentiment is not None and event.sentiment < negative:
                _add(state, "ticket_negative", when)
        elif event.type == "nps_response" and event.score is not None:
            _set_latest(state, "nps", when, event.score)
        elif event.type == "survey_response" and event.score is not None:
            _set_latest(state, "survey", when, event.score)
        elif event.type == "comment" and event.sentiment is not None:
            _set_latest(state, "comment_sentiment", when, event.sentiment)
        if event.type in FEEDBACK_TYPES:
            state.loyalty_points += points.feedback
    elif isinstance(event, IntentEvent):
        if event.type in COMPETITION_TYPES:
            _add(state, event.type, when)
        elif event.type == "social_mention":
            if event.sentiment is not None and event.sentiment < negative:
                _add(state, "social_negative", when)
        elif event.type == "referral":
            state.loyalty_points += points.referral
        elif event.type == "social_share":
            state.loyalty_points += points.social_share
    elif isinstance(event, PaymentEvent):
        invoice = event.invoice_id or "(unnamed)"
        if event.type in ("invoice_overdue", "payment_failed"):
            paid = state.paid.get(invoice)
            if paid is None or stamp > paid:  # an overdue notice older than the payment is stale
                since = (when - timedelta(days=event.days_late or 0)).isoformat()
                current = state.overdue.get(invoice)
                if current is None or since < current:
                    state.overdue[invoice] = since
        elif event.type == "invoice_paid":
            state.overdue.pop(invoice, None)
            state.paid[invoice] = max(stamp, state.paid.get(invoice, stamp))
        if event.type == "subscription_started":
            _start(state, when)
        cancelled = state.cancelled_at
        if event.type == "subscription_cancelled" and (cancelled is None or stamp > cancelled):
            state.cancelled_at = stamp
        elif event.type in REACTIVATING and cancelled is not None and stamp > cancelled:
            state.cancelled_at = None
        if event.type != "purchase":
            _set_plan(state, when, event.plan, event.mrr_after)
    elif isinstance(event, ProfileEvent):
        _set_plan(state, when, event.plan, event.mrr)
        if event.signup_date is not None:
            _start(state, datetime.combine(event.signup_date, time(), UTC))
    elif isinstance(event, LoginEvent):
        _add(state, "login", when)
        _mark(state, "active", when)
        _remember(state.users, event.user_id, day_number(when), limits.users_per_customer)
        _earn(state, model, when, "active", points.daily_active)
    elif isinstance(event, UsageEvent) and event.type == "reward_redeemed":
        redeem(state, model, event)  # spending points is not "active use" that earns them
    elif isinstance(event, UsageEvent):
        _mark(state, "active", when)
        _earn(state, model, when, "active", points.daily_active)
        if event.user_id is not None:
            _remember(state.users, event.user_id, day_number(when), limits.users_per_customer)
        if event.type == "feature_used" and event.feature is not None:
            _remember(state.features, event.feature, day_number(when), limits.features_per_customer)
            _earn(state, model, when, f"f:{event.feature}", points.feature_daily)
        elif event.type == "quota_consumed" and event.metric is not None:
            mode = model.utilisation.metrics.get(event.metric)
            if mode == "consumed":
                _add(state, f"use:{event.metric}", when, event.quantity or 0.0)
            elif mode == "level" and event.quantity is not None:
                level = state.levels.get(event.metric)
                if level is None or level[0] <= stamp:
                    state.levels[event.metric] = (stamp, event.quantity)
        elif event.type == "outcome_reported" and event.value is not None:
            _set_latest(state, "roi", when, event.value)
        elif event.type == "limit_blocked":
            _add(state, f"blocked:{event.metric or 'any'}", when)
    _milestones(state, event, model)


def fold_delivery(state: CustomerState, delivery: Delivery) -> bool:
    """Record a notifier outcome. False when it was seen before (nothing changed)."""
    key = f"d:{delivery.notification_id}:{delivery.status}"
    if key in state.seen or delivery.channel not in MESSAGE_CHANNELS:
        return False
    state.seen.append(key)
    when = delivery.occurred_at
    if delivery.status == "sent":
        _add(state, "msg_sent", when)
    elif delivery.status in ENGAGED_STATUSES:
        engaged = f"d:{delivery.notification_id}:engaged"  # a message counts once however engaged
        if engaged not in state.seen:
            state.seen.append(engaged)
            _add(state, "msg_engaged", when)
    return True


def _register(state: CustomerState, model: ScoringModel, at: datetime) -> list[CohortDelta]:
    return register(
        state.cohort,
        plan=state.plan,
        plan_at=state.plan_at,
        mrr=state.mrr,
        cancelled_at=state.cancelled_at,
        at=at,
        model=model.clv,
    )


def cohort_deltas(state: CustomerState, event: Event, model: ScoringModel) -> list[CohortDelta]:
    """What ``event`` changes in the plan cohorts; call *before* folding it (the plan and
    MRR of the state are then those the customer had before the event). Mutates
    ``state.cohort``."""
    when = event.occurred_at
    deltas = _register(state, model, when)
    if isinstance(event, PaymentEvent):
        if event.type == "subscription_cancelled":
            deltas += on_cancelled(state.cohort, when)
        elif event.type == "subscription_upgraded":
            before = event.mrr_before if event.mrr_before is not None else state.mrr
            if before is not None and event.mrr_after is not None:
                deltas += on_upgraded(state.cohort, when, event.mrr_after - before)
    return deltas


def prune(state: CustomerState, model: ScoringModel, now: datetime) -> None:
    """Drop what is older than the longest window (bounded memory)."""
    oldest = day_number(now) - model.longest_window_days
    for name, buckets in list(state.counters.items()):
        kept = {d: n for d, n in buckets.items() if d > oldest}
        if kept:
            state.counters[name] = kept
        else:
            del state.counters[name]
    state.loyalty_days = {d: v for d, v in state.loyalty_days.items() if d > oldest}
    cutoff = (now - timedelta(days=model.longest_window_days)).isoformat()
    state.paid = {i: at for i, at in state.paid.items() if at > cutoff}
    state.features = {f: d for f, d in state.features.items() if d > oldest}
    state.users = {u: d for u, d in state.users.items() if d > oldest}


# -- churn risk (section 3) --------------------------------------------------------------


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


# -- expansion and lifecycle (section 5) -------------------------------------------------


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


# -- evaluation --------------------------------------------------------------------------


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
    measured = measure(state, model, now)
    active = {
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
    risk = min(100.0, round(sum(s.contribution for s in active.values()), 4))
    tier = tier_for(len(active), model)
    probability = probability_for(tier, risk, model)
    flags = []
    nps = state.latest.get("nps")
    for flag in model.red_flags:
        if not all(s in active for s in flag.signals):
            continue
        if flag.nps_below is not None and (nps is None or nps[1] >= flag.nps_below):
            continue
        flags.append(RedFlag(name=flag.name, signals=flag.signals, floor=flag.floor))
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
    newest = _now_of(state)
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
    deltas = _register(state, model, at)
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
    deltas = cohort_deltas(state, event, model)
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
