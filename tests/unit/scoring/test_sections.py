"""docs/domain.md sections 3 to 6 on plain values: engagement, usage, logins, health, limits,
expansion, milestones, CLV and loyalty. No faust, no Kafka."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.events import parse_event
from common.messages import Delivery
from scoring.domain.loyalty import loyalty_tier_for
from scoring.domain.model import DEFAULT_MODEL_PATH, ModelError, load_model
from scoring.domain.rules import reevaluate, score, score_delivery
from scoring.domain.state import CustomerState
from scoring.domain.value import (
    CohortStats,
    annual_churn,
    clv,
    cohort_rates,
    customer_clv,
    net_revenue_retention,
    segment_for,
)

MODEL = load_model(DEFAULT_MODEL_PATH)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def ev(kind: str, type_: str, at: datetime = T0, **fields: Any):
    return parse_event(
        {
            "event_id": str(uuid.uuid4()),
            "customer_id": "c-1",
            "occurred_at": at.isoformat(),
            "kind": kind,
            "type": type_,
            **fields,
        }
    )


def feed(*events: Any, state: CustomerState | None = None):
    state = state or CustomerState("c-1")
    outs = []
    for event in events:
        out = score(state, event, MODEL)
        state = out.state
        outs.append(out)
    return state, outs


def delivery(nid: str, status: str, at: datetime = T0, channel: str = "email") -> Delivery:
    return Delivery(
        notification_id=nid, customer_id="c-1", channel=channel, status=status, occurred_at=at
    )


def deliver(state: CustomerState, *items: Delivery):
    outs = []
    for item in items:
        out = score_delivery(state, item, MODEL)
        state = out.state
        outs.append(out)
    return state, outs


def changes(outs: list[Any], name: str) -> list[str]:
    return [c.change for out in outs for c in out.changes if c.name == name]


# -- section 6 worked examples -------------------------------------------------------------


def test_clv_worked_example_is_1920() -> None:
    assert clv(100, 0.80, 0.05, 0.20) == pytest.approx(1920)
    assert customer_clv(100, None, MODEL.clv) == pytest.approx(1920)


def test_annual_churn_and_nrr_worked_examples() -> None:
    assert annual_churn(0.05) == pytest.approx(0.4596, abs=1e-4)
    assert net_revenue_retention(100_000, 30_000, 5_000, 10_000) == pytest.approx(1.15)


def test_cohort_rates_replace_defaults_only_with_enough_customers() -> None:
    few = CohortStats(customers_at_start=10, customers_lost=5, mrr_at_start=1000, expansion_mrr=0)
    assert cohort_rates(few, MODEL.clv).observed is False
    assert cohort_rates(few, MODEL.clv).monthly_churn == 0.05
    many = CohortStats(
        customers_at_start=100, customers_lost=2, mrr_at_start=10_000, expansion_mrr=1000
    )
    rates = cohort_rates(many, MODEL.clv)
    assert rates.observed and rates.monthly_churn == 0.02 and rates.expansion == pytest.approx(0.1)
    assert customer_clv(100, many, MODEL.clv) == pytest.approx(100 * 0.8 * 50 * 1.1)
    none_lost = CohortStats(
        customers_at_start=100, customers_lost=0, mrr_at_start=1, expansion_mrr=0
    )
    assert cohort_rates(none_lost, MODEL.clv).monthly_churn == MODEL.clv.min_monthly_churn


def test_clv_segments() -> None:
    assert segment_for(10_001, MODEL.clv) == "high"
    assert segment_for(10_000, MODEL.clv) == "medium"
    assert segment_for(1_000, MODEL.clv) == "medium"
    assert segment_for(999.99, MODEL.clv) == "low"


def test_segment_changes_with_mrr() -> None:
    state, outs = feed(ev("profile", "identify", plan="pro", mrr=99))
    assert outs[0].snapshot is not None and outs[0].snapshot.clv == pytest.approx(1900.8)
    assert outs[0].snapshot.clv_segment == "medium"
    _, outs = feed(ev("profile", "identify", at=T0 + DAY, mrr=40), state=state)
    seg = [c for c in outs[0].changes if c.change == "segment_changed"]
    assert [(c.previous, c.current) for c in seg] == [("medium", "low")]


def test_loyalty_points_once_a_day_and_tiers() -> None:
    state, _ = feed(
        ev("login", "login", user_id="u1"),
        ev("login", "login", user_id="u2"),  # same day: no second +10
        ev("usage", "feature_used", feature="reports"),
        ev("usage", "feature_used", feature="reports"),  # same feature, same day
        ev("usage", "feature_used", feature="exports"),
        ev("intent", "referral"),
        ev("support", "nps_response", score=9),
        ev("intent", "social_share"),
        ev("login", "login", user_id="u1", at=T0 + DAY),
    )
    assert state.loyalty_points == 10 + 5 + 5 + 100 + 25 + 15 + 10
    tiers = MODEL.loyalty.tiers
    assert [loyalty_tier_for(p, tiers) for p in (0, 999, 1000, 4999, 5000, 9999, 10_000)] == [
        "bronze",
        "bronze",
        "silver",
        "silver",
        "gold",
        "gold",
        "platinum",
    ]


def test_loyalty_tier_change_is_emitted() -> None:
    referrals = [ev("intent", "referral", at=T0 + i * timedelta(minutes=1)) for i in range(10)]
    _, outs = feed(*referrals)
    assert changes(outs, "loyalty_tier") == ["loyalty_tier_changed"]
    assert outs[-1].snapshot is not None and outs[-1].snapshot.loyalty_tier == "silver"


def redemption(reward: str, at: datetime = T0, event_id: str | None = None) -> Any:
    return parse_event(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "customer_id": "c-1",
            "occurred_at": at.isoformat(),
            "kind": "usage",
            "type": "reward_redeemed",
            "reward": reward,
        }
    )


def test_a_redemption_spends_points_and_keeps_the_tier() -> None:
    referrals = [ev("intent", "referral", at=T0 + i * timedelta(minutes=1)) for i in range(12)]
    state, outs = feed(*referrals)  # 1,200 points: silver
    assert outs[-1].snapshot is not None and outs[-1].snapshot.loyalty_tier == "silver"
    training = redemption("training", at=T0 + DAY, event_id="r-1")
    state, outs = feed(training, state=state)
    snap = outs[0].snapshot
    assert snap is not None
    assert (snap.loyalty_points, snap.loyalty_points_earned) == (900, 1200)  # 300 spent
    assert snap.loyalty_tier == "silver"  # tiers go by points earned: spending keeps it
    assert changes(outs, "loyalty_tier") == []
    [done] = snap.redemptions
    assert (done.reward, done.cost, done.status, done.reason) == ("training", 300, "accepted", None)
    # the same event again (a redelivery) spends nothing more
    again = score(state, training, MODEL)
    assert again.duplicate and again.state.loyalty_spent == 300
    # a redemption is not "daily active use": it earns nothing
    assert state.loyalty_points == 1200


def test_a_redemption_the_balance_cannot_cover_is_refused_with_the_reason() -> None:
    state, _ = feed(*[ev("intent", "referral", at=T0 + i * timedelta(minutes=1)) for i in range(5)])
    state, outs = feed(
        redemption("custom_feature", at=T0 + DAY),  # 2,000 > 500
        redemption("moon_trip", at=T0 + DAY),  # not in the catalog
        redemption("premium_feature", at=T0 + DAY),  # exactly 500: accepted
        redemption("priority_support", at=T0 + DAY),  # 0 left
        state=state,
    )
    snap = outs[-1].snapshot
    assert snap is not None and snap.loyalty_points == 0 and snap.loyalty_points_earned == 500
    assert [(r.reward, r.status) for r in snap.redemptions] == [
        ("custom_feature", "refused"),
        ("moon_trip", "refused"),
        ("premium_feature", "accepted"),
        ("priority_support", "refused"),
    ]
    reasons = [r.reason for r in snap.redemptions]
    assert reasons[0] == "balance 500 is below the cost 2000"
    assert reasons[1] is not None and reasons[1].startswith("unknown reward 'moon_trip'")
    assert reasons[3] == "balance 0 is below the cost 200"
    assert state.loyalty_spent == 500


def test_only_the_last_redemptions_are_kept() -> None:
    state = CustomerState("c-1")
    for i in range(MODEL.loyalty.redemptions_remembered + 5):
        state = score(state, redemption("training", at=T0 + i * timedelta(minutes=1)), MODEL).state
    assert len(state.redemptions) == MODEL.loyalty.redemptions_remembered
    assert all(r["status"] == "refused" for r in state.redemptions)  # no points at all


# -- section 3: the behaviour signals that need more than counters ----------------------------


def test_engagement_low_from_deliveries_needs_two_sent_and_counts_each_message_once() -> None:
    state, outs = deliver(CustomerState("c-1"), delivery("n1", "sent"))
    assert "engagement_low" not in outs[-1].state.active  # only one sent
    state, outs = deliver(state, delivery("n2", "sent"), delivery("n2", "sent"))
    assert "engagement_low" in state.active  # 0 of 2 opened
    assert outs[1].duplicate
    state, outs = deliver(state, delivery("n1", "opened"), delivery("n1", "clicked"))
    assert "engagement_low" not in state.active  # 1 of 2 = 50 %: not below
    assert sum(state.counters["msg_engaged"].values()) == 1
    assert changes(outs, "engagement_low") == ["signal_off"]


def test_an_unknown_email_counts_neither_as_sent_nor_as_engaged() -> None:
    # `unknown`: handed to the mail server by a notifier that died before the answer.
    state, outs = deliver(CustomerState("c-1"), delivery("n1", "unknown"))
    assert not outs[0].duplicate
    assert "msg_sent" not in state.counters and "msg_engaged" not in state.counters
    state, _ = deliver(state, delivery("n2", "sent"), delivery("n3", "unknown"))
    assert "engagement_low" not in state.active  # one message known sent: not two


def test_engagement_low_ignores_webhooks_and_old_messages() -> None:
    state, _ = deliver(
        CustomerState("c-1"),
        delivery("w1", "sent", channel="webhook"),
        delivery("w2", "sent", channel="webhook"),
    )
    assert "engagement_low" not in state.active
    state, _ = deliver(state, delivery("n1", "sent"), delivery("n2", "sent"))
    assert "engagement_low" in state.active
    later = reevaluate(state, MODEL, T0 + 15 * DAY)
    assert "engagement_low" not in later.state.active
    assert changes([later], "engagement_low") == ["signal_off"]


def start_pro(at: datetime = T0) -> CustomerState:
    state, _ = feed(ev("payment", "subscription_started", at=at, plan="pro", mrr_after=99))
    return state


def test_usage_reduced_below_30_percent_of_plan_features_after_30_days() -> None:
    state = start_pro()
    state, _ = feed(
        ev("usage", "feature_used", feature="reports", at=T0 + DAY),
        ev("usage", "feature_used", feature="exports", at=T0 + DAY),
        state=state,
    )
    assert "usage_reduced" not in state.active  # too young to judge
    out = reevaluate(state, MODEL, T0 + 30 * DAY)
    assert out.state.active["usage_reduced"] == 0.2  # 2 of 10 features
    state, outs = feed(
        ev("usage", "feature_used", feature="api", at=T0 + 30 * DAY), state=out.state
    )
    assert "usage_reduced" not in state.active
    assert changes(outs, "usage_reduced") == ["signal_off"]


def test_login_drop_against_own_baseline() -> None:
    # 8 weeks of 10 logins a fortnight, then 2 in the last 14 days.
    events = [
        ev("login", "login", user_id="u", at=T0 + timedelta(days=d))
        for d in range(0, 56)
        if d % 7 in (0, 3, 5) or d % 14 == 1
    ]
    state, _ = feed(*events)
    baseline_logins = len(events)
    assert "login_drop" not in state.active
    state, _ = feed(
        ev("login", "login", user_id="u", at=T0 + 60 * DAY),
        ev("login", "login", user_id="u", at=T0 + 65 * DAY),
        state=state,
    )
    out = reevaluate(state, MODEL, T0 + 69 * DAY)
    assert "login_drop" in out.state.active
    assert out.state.active["login_drop"] == pytest.approx(2 / (baseline_logins * 14 / 56), 1e-3)


def test_login_drop_needs_history_for_a_baseline() -> None:
    state, _ = feed(*[ev("login", "login", user_id="u", at=T0 + d * DAY) for d in range(5)])
    out = reevaluate(state, MODEL, T0 + 13 * DAY)
    assert "login_drop" not in out.state.active


def test_an_overdue_notice_older_than_the_payment_is_ignored() -> None:
    state, _ = feed(
        ev("payment", "invoice_paid", invoice_id="i", at=T0 + DAY),
        ev("payment", "invoice_overdue", invoice_id="i", days_late=10, at=T0),  # arrives late
    )
    assert not state.overdue and "payment_late" not in state.active


def test_payment_late_turns_on_with_the_clock_alone() -> None:
    state, _ = feed(ev("payment", "invoice_overdue", invoice_id="i", days_late=2))
    assert "payment_late" not in state.active
    out = reevaluate(state, MODEL, T0 + 6 * DAY)
    assert [(c.change, c.name) for c in out.changes if c.name == "payment_late"] == [
        ("signal_on", "payment_late")
    ]
    assert out.changes[0].occurred_at == T0 + 6 * DAY


# -- section 4: health ----------------------------------------------------------------------


def test_health_of_a_healthy_customer_is_high_and_of_an_unhappy_one_at_risk() -> None:
    happy = start_pro(T0 - 400 * DAY)
    happy_events = [
        ev("login", "login", user_id=f"u{d % 3}", at=T0 - d * DAY) for d in range(0, 70, 1)
    ]
    happy_events += [
        ev("usage", "feature_used", feature=f, at=T0 - DAY) for f in MODEL.plans["pro"].features
    ]
    happy_events += [
        ev("support", "nps_response", score=10, at=T0),
        ev("usage", "outcome_reported", value=250, at=T0),
    ]
    happy, outs = feed(*happy_events, state=happy)
    snap = outs[-1].snapshot
    assert snap is not None and snap.health_band == "high" and snap.health_score >= 80
    unhappy = start_pro(T0 - 10 * DAY)
    unhappy, outs = feed(
        ev("support", "nps_response", score=1, at=T0),
        ev("support", "survey_response", score=2, at=T0),
        ev("payment", "invoice_overdue", invoice_id="i", days_late=20, at=T0),
        state=unhappy,
    )
    _, outs = deliver(unhappy, delivery("a", "sent"), delivery("b", "sent"))
    snap = outs[-1].snapshot
    assert snap is not None and snap.health_band == "at_risk"
    assert snap.health_components["satisfaction"] < 20


def test_band_change_is_edge_triggered() -> None:
    state, outs = feed(ev("support", "nps_response", score=10))
    first = [c for c in outs[0].changes if c.change == "band_changed"]
    assert len(first) == 1 and first[0].previous is None
    _, outs = feed(ev("support", "ticket_closed", at=T0 + timedelta(minutes=1)), state=state)
    assert not [c for c in outs[0].changes if c.change == "band_changed"]


# -- section 5: limits, adoption, expansion, milestones -----------------------------------------


def test_limit_approaching_then_reached_per_metric() -> None:
    state = start_pro()
    state, outs = feed(
        ev("usage", "quota_consumed", metric="documents", quantity=8000, at=T0 + DAY),
        state=state,
    )
    snap = outs[-1].snapshot
    assert snap is not None and snap.utilisation["documents"] == 0.8
    assert changes(outs, "limit_approaching") == ["signal_on"]
    state, outs = feed(
        ev("usage", "quota_consumed", metric="documents", quantity=2000, at=T0 + 2 * DAY),
        state=state,
    )
    assert changes(outs, "limit_reached") == ["signal_on"]
    assert changes(outs, "limit_approaching") == ["signal_off"]
    assert state.lifecycle["limit_reached"] == "documents"
    # the period moves on: the consumption leaves the window
    out = reevaluate(state, MODEL, T0 + 40 * DAY)
    assert changes([out], "limit_reached") == ["signal_off"]


def test_limit_reached_on_a_blocked_use_and_seats_from_users() -> None:
    state, _ = feed(ev("profile", "identify", plan="free"))
    state, outs = feed(ev("usage", "limit_blocked", metric="integrations"), state=state)
    assert changes(outs, "limit_reached") == ["signal_on"]
    _, outs = feed(
        ev("profile", "identify", plan="basic"),
        *[ev("login", "login", user_id=f"u{i}") for i in range(4)],
    )
    assert outs[-1].snapshot is not None and outs[-1].snapshot.utilisation["seats"] == 0.8


def test_enterprise_has_no_seat_limit() -> None:
    _, outs = feed(ev("profile", "identify", plan="enterprise"), ev("login", "login", user_id="u"))
    snap = outs[-1].snapshot
    assert snap is not None and "seats" not in snap.utilisation


def test_power_user_after_30_days_of_high_adoption() -> None:
    state = start_pro(T0 - 100 * DAY)
    features = MODEL.plans["pro"].features
    state, outs = feed(*[ev("usage", "feature_used", feature=f) for f in features[:8]], state=state)
    assert outs[-1].snapshot is not None and outs[-1].snapshot.feature_adoption == 0.8
    assert "power_user" not in state.lifecycle
    for day in range(1, 31):  # keep using them; the clock moves a day at a time
        state, outs = feed(
            *[ev("usage", "feature_used", feature=f, at=T0 + day * DAY) for f in features[:8]],
            state=state,
        )
        if day < 30:
            assert "power_user" not in state.lifecycle, day
    assert "power_user" in state.lifecycle
    # adoption falls: the hold restarts
    out = reevaluate(state, MODEL, T0 + 70 * DAY)
    assert "power_user" not in out.state.lifecycle and out.state.power_since is None


def test_roi_proven_and_cross_sell_ready() -> None:
    state = start_pro(T0 - 100 * DAY)
    state, _ = feed(
        *[ev("login", "login", user_id="u", at=T0 - d * DAY) for d in range(10)],
        ev("usage", "outcome_reported", value=250),
        ev("support", "nps_response", score=8),
        state=state,
    )
    assert "roi_proven" in state.lifecycle and "cross_sell_ready" in state.lifecycle
    young = start_pro(T0 - 30 * DAY)
    young, _ = feed(
        ev("usage", "outcome_reported", value=250),
        ev("support", "nps_response", score=9),
        state=young,
    )
    assert "roi_proven" not in young.lifecycle  # less than 3 months of use
    lukewarm, _ = feed(ev("support", "nps_response", score=7), state=state)
    assert "roi_proven" not in lukewarm.lifecycle  # 7 is not above 70 on the 0-100 scale
    assert "cross_sell_ready" in lukewarm.lifecycle


def test_onboarding_milestones_by_their_days_and_never_off() -> None:
    state = start_pro()
    state, outs = feed(
        ev("usage", "feature_used", feature="tutorial", at=T0 + timedelta(hours=20)),
        ev("usage", "outcome_reported", value=10, at=T0 + 2 * DAY),
        ev("usage", "feature_used", feature="reports", at=T0 + 5 * DAY),
        ev("login", "login", user_id="u", at=T0 + 31 * DAY),
        state=state,
    )
    on = [c.name for out in outs for c in out.changes if c.change == "signal_on"]
    assert [n for n in on if n.startswith("milestone_")] == [
        "milestone_tutorial_completed",
        "milestone_first_success",
        "milestone_two_features",
        "milestone_still_active",
    ]
    later = reevaluate(state, MODEL, T0 + 200 * DAY)
    assert not [c for c in later.changes if c.name.startswith("milestone_")]


def test_a_late_tutorial_is_not_a_milestone() -> None:
    state = start_pro()
    state, _ = feed(ev("usage", "feature_used", feature="tutorial", at=T0 + 3 * DAY), state=state)
    assert "tutorial_completed" not in state.milestones


def test_state_stays_bounded() -> None:
    small = MODEL.model_copy(
        update={"limits": MODEL.limits.model_copy(update={"features_per_customer": 5})}
    )
    state = CustomerState("c-1")
    for i in range(50):
        state = score(state, ev("usage", "feature_used", feature=f"f{i}"), small).state
    assert len(state.features) == 5


# -- the model file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("next_plan: enterprise", "next_plan: platinum", r"next_plan: unknown plan"),
        ("approaching: 0.8 ", "approaching: 1.2 ", r"utilisation.*approaching must be below"),
        ("engagement: 40,", "engagement: 45,", r"health.*weights must sum to 100"),
        ("silver: 1000,", "silver: 6000,", r"loyalty\.tiers.*silver < gold"),
        ("gross_margin: 0.80", "gross_margin: 1.5", r"clv\.gross_margin"),
        ("training: 300,", "training: 0,", r"redemption costs must be positive: training"),
        ("threshold: 0.5, min_count: 2}", "threshold: 0.5}", r"engagement_low.*needs min_count"),
    ],
)
def test_invalid_model_names_the_field(tmp_path: Path, old: str, new: str, where: str) -> None:
    text = DEFAULT_MODEL_PATH.read_text()
    assert old in text
    bad = tmp_path / "model.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelError, match=where):
        load_model(bad)
