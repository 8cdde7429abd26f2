"""What each event says about a customer (docs/domain.md sections 1 and 2), folded into its state.

:func:`fold` records one event's facts in the state's daily buckets, latest values,
plan and lifecycle fields, through the section each fact belongs to (loyalty points,
onboarding milestones); :func:`prune` forgets what is older than the longest window.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from common.events import (
    Event,
    IntentEvent,
    LoginEvent,
    PaymentEvent,
    ProfileEvent,
    SupportEvent,
    UsageEvent,
)
from scoring.domain.churn import COMPETITION_TYPES
from scoring.domain.expansion import reach_milestones
from scoring.domain.loyalty import earn, redeem
from scoring.domain.model import ScoringModel
from scoring.domain.state import (
    CustomerState,
    add,
    day_number,
    mark,
    remember,
    set_latest,
)

FEEDBACK_TYPES = frozenset({"nps_response", "survey_response", "comment"})
REACTIVATING = frozenset({"subscription_started", "subscription_reactivated"})


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
            add(state, "ticket_opened", when)
            if event.sentiment is not None and event.sentiment < negative:
                add(state, "ticket_negative", when)
        elif event.type == "nps_response" and event.score is not None:
            set_latest(state, "nps", when, event.score)
        elif event.type == "survey_response" and event.score is not None:
            set_latest(state, "survey", when, event.score)
        elif event.type == "comment" and event.sentiment is not None:
            set_latest(state, "comment_sentiment", when, event.sentiment)
        if event.type in FEEDBACK_TYPES:
            state.loyalty_points += points.feedback
    elif isinstance(event, IntentEvent):
        if event.type in COMPETITION_TYPES:
            add(state, event.type, when)
        elif event.type == "social_mention":
            if event.sentiment is not None and event.sentiment < negative:
                add(state, "social_negative", when)
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
        add(state, "login", when)
        mark(state, "active", when)
        remember(state.users, event.user_id, day_number(when), limits.users_per_customer)
        earn(state, model, when, "active", points.daily_active)
    elif isinstance(event, UsageEvent) and event.type == "reward_redeemed":
        redeem(state, model, event)  # spending points is not "active use" that earns them
    elif isinstance(event, UsageEvent):
        mark(state, "active", when)
        earn(state, model, when, "active", points.daily_active)
        if event.user_id is not None:
            remember(state.users, event.user_id, day_number(when), limits.users_per_customer)
        if event.type == "feature_used" and event.feature is not None:
            remember(state.features, event.feature, day_number(when), limits.features_per_customer)
            earn(state, model, when, f"f:{event.feature}", points.feature_daily)
        elif event.type == "quota_consumed" and event.metric is not None:
            mode = model.utilisation.metrics.get(event.metric)
            if mode == "consumed":
                add(state, f"use:{event.metric}", when, event.quantity or 0.0)
            elif mode == "level" and event.quantity is not None:
                level = state.levels.get(event.metric)
                if level is None or level[0] <= stamp:
                    state.levels[event.metric] = (stamp, event.quantity)
        elif event.type == "outcome_reported" and event.value is not None:
            set_latest(state, "roi", when, event.value)
        elif event.type == "limit_blocked":
            add(state, f"blocked:{event.metric or 'any'}", when)
    reach_milestones(state, event, model)


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
