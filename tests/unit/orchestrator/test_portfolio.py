"""Portfolio figures and MRR movements: the pure rules (docs/domain.md section 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain import portfolio as P
from orchestrator.domain.attribution import Payment
from orchestrator.domain.movements import (
    SIGN,
    Kind,
    State,
    Subscription,
    classify,
    following,
)
from orchestrator.domain.movements import money as movement_money
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.domain.value import customer_clv

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
D = Decimal


def pay(type_: str, n: int = 1, **kw: object) -> Payment:
    args: dict[str, object] = {"event_id": f"e{n}", "type": type_, "at": T0 + timedelta(days=n)}
    args.update(kw)
    return Payment(**args)  # type: ignore[arg-type]


def run(*payments: Payment) -> tuple[list[tuple[Kind, Decimal]], Subscription | None]:
    before: Subscription | None = None
    moved = []
    for p in payments:
        found = classify("c1", p, before, default_currency="EUR")
        if found is None:
            continue
        if found.movement is not None:
            moved.append((found.movement.kind, found.movement.amount))
        before = following(found)
    return moved, before


# --- the worked examples ----------------------------------------------------------------------


def test_nrr_worked_example_is_115_percent() -> None:
    assert P.net_revenue_retention(D(100_000), D(30_000), D(5_000), D(10_000)) == 1.15
    assert P.gross_revenue_retention(D(100_000), D(5_000), D(10_000)) == 0.85


def test_five_percent_a_month_is_46_percent_a_year() -> None:
    assert P.annual_churn(0.05) == pytest.approx(0.4596, abs=1e-4)
    assert round(P.annual_churn(0.05), 2) == 0.46
    figures = P.customer_figures(at_start=100, lost=5, upgraded=0, days_to_upsell=[])
    assert figures.churn_rate == 0.05
    assert figures.annual_churn == pytest.approx(0.4596, abs=1e-4)


def test_clv_worked_example_is_1920_with_the_scoring_function() -> None:
    assert customer_clv(100, None, load_model(DEFAULT_MODEL_PATH).clv) == pytest.approx(1920)


def test_the_waterfall_and_its_rates() -> None:
    sums = {Kind.NEW: D(2_000), Kind.EXPANSION: D(30_000), Kind.CONTRACTION: D(5_000)}
    sums[Kind.CHURN] = D(10_000)
    got = P.mrr_figures(D(100_000), D(117_000), sums, upgrades=4)
    assert (got.nrr, got.grr, got.expansion_rate) == (1.15, 0.85, 0.3)
    assert got.average_upgrade_value == D("7500.00")
    assert got.reactivation == 0
    empty = P.mrr_figures(D(0), D(0), {}, upgrades=0)
    assert (empty.nrr, empty.grr, empty.expansion_rate, empty.average_upgrade_value) == (
        None,
        None,
        None,
        None,
    )


def test_upsell_figures() -> None:
    got = P.customer_figures(at_start=40, lost=2, upgraded=10, days_to_upsell=[30, 10, 20, 90])
    assert got.upsell_conversion == 0.25
    assert got.median_days_to_upsell == 25
    assert P.customer_figures(0, 0, 0, []).churn_rate is None
    assert P.average_upgrade_value(D(100), 3) == D("33.33")


def test_money_rounds_halves_away_from_zero_as_the_dashboard_s_views() -> None:
    """One rule for money (docs/decisions.md, *Money rounds half away from zero*):
    PostgreSQL's round(numeric, 2), which the views use, rounds 49.505 to 49.51; so must
    the API and the report (half to even gave 49.50)."""
    assert P.average_upgrade_value(D("99.01"), 2) == D("49.51")  # 49.505
    assert P.average_upgrade_value(D("0.25"), 2) == D("0.13")  # 0.125
    assert P.average_upgrade_value(D("99.03"), 2) == D("49.52")  # 49.515
    assert P.revenue_per_message({"EUR": D("0.05")}, 2) == {"EUR": D("0.03")}
    assert movement_money(49.505) == D("49.51")
    assert movement_money(-0.125) == D("-0.13")


def test_revenue_per_message_by_currency() -> None:
    assert P.revenue_per_message({"EUR": D(100), "USD": D(10)}, 8) == {
        "EUR": D("12.50"),
        "USD": D("1.25"),
    }
    assert P.revenue_per_message({"EUR": D(100)}, 0) is None


def test_uplift_interval_two_proportion_normal_approximation() -> None:
    # 30/100 against 20/100: 0.10 +- 1.96 * sqrt(.3*.7/100 + .2*.8/100) = 0.10 +- 0.1192
    got = P.uplift_interval(30, 100, 20, 100, confidence=0.95)
    assert got is not None
    assert got.estimate == pytest.approx(0.10)
    assert got.low == pytest.approx(0.10 - 0.119226, abs=1e-5)
    assert got.high == pytest.approx(0.10 + 0.119226, abs=1e-5)
    assert P.uplift_interval(3, 10, 0, 0, confidence=0.95) is None
    with pytest.raises(ValueError, match="confidence"):
        P.uplift_interval(1, 2, 1, 2, confidence=1.5)
    # z, which the dashboard's uplift view reads from portfolio_settings (migration 0014)
    assert P.two_sided_z(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert P.two_sided_z(0.80) == pytest.approx(1.281552, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        P.two_sided_z(0)


@given(
    st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_uplift_interval_holds_its_estimate_and_widens_with_confidence(
    treated: tuple[int, int], control: tuple[int, int]
) -> None:
    narrow = P.uplift_interval(*treated, *control, confidence=0.8)
    wide = P.uplift_interval(*treated, *control, confidence=0.95)
    assert narrow is not None and wide is not None
    assert wide.low <= narrow.low <= narrow.estimate <= narrow.high <= wide.high
    assert -1 <= narrow.estimate <= 1


def test_months_parse_and_span() -> None:
    nov = P.Month.parse("2026-11")
    assert (nov.start, nov.end) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert [str(m) for m in P.months(nov, P.Month.parse("2027-02"), limit=12)] == [
        "2026-11",
        "2026-12",
        "2027-01",
        "2027-02",
    ]
    for bad in ("2026-13", "2026-1", "Nov", "2026-00"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            P.Month.parse(bad)
    with pytest.raises(ValueError, match="before"):
        P.months(nov, P.Month.parse("2026-10"), limit=12)
    with pytest.raises(ValueError, match="more than 3 months"):
        P.months(nov, P.Month.parse("2027-11"), limit=3)


# --- classifying payment events ---------------------------------------------------------------


def test_a_life_of_new_expansion_contraction_churn_and_reactivation() -> None:
    moved, last = run(
        pay("subscription_started", 1, plan="basic", mrr_after=29.0, currency="USD"),
        pay("invoice_paid", 2, amount=29.0),
        pay("subscription_upgraded", 3, plan="pro", mrr_before=29.0, mrr_after=99.0),
        pay("subscription_downgraded", 4, plan="team", mrr_after=79.0),  # before: known 99
        pay("downgrade_requested", 5, plan="basic"),
        pay("subscription_cancelled", 6),
        pay("subscription_cancelled", 7),  # a second cancellation: nothing
        pay("subscription_reactivated", 8),  # restores the MRR it had when it cancelled
    )
    assert moved == [
        (Kind.NEW, D("29.00")),
        (Kind.EXPANSION, D("70.00")),
        (Kind.CONTRACTION, D("20.00")),
        (Kind.CHURN, D("79.00")),
        (Kind.REACTIVATION, D("79.00")),
    ]
    assert last == Subscription(State.REACTIVATED, D("79.00"), "team", "USD", D("79.00"))


def test_a_movement_names_plans_currency_and_time() -> None:
    before = Subscription(State.ACTIVE, D(29), "basic", "EUR")
    found = classify(
        "c1",
        pay("subscription_upgraded", 3, plan="pro", mrr_after=99.0),
        before,
        default_currency="USD",
    )
    assert found is not None and found.movement is not None
    m = found.movement
    assert (m.kind, m.amount, m.currency, m.plan_before, m.plan_after) == (
        Kind.EXPANSION,
        D("70.00"),
        "EUR",
        "basic",
        "pro",
    )
    assert (m.mrr_before, m.mrr_after, m.at, m.event_type) == (
        D(29),
        D("99.00"),
        T0 + timedelta(days=3),
        "subscription_upgraded",
    )
    assert found.state.state is State.ACTIVE


def test_amount_is_the_change_when_mrr_after_is_missing() -> None:
    moved, last = run(
        pay("subscription_started", 1, amount=50.0),
        pay("subscription_upgraded", 2, amount=25.0),
        pay("subscription_downgraded", 3, amount=100.0),  # never below 0
    )
    assert moved == [(Kind.NEW, D(50)), (Kind.EXPANSION, D(25)), (Kind.CONTRACTION, D(75))]
    assert last is not None and last.mrr == 0 and last.currency == "EUR"


def test_a_customer_first_seen_upgrading_is_taken_as_live() -> None:
    moved, last = run(pay("subscription_upgraded", 1, mrr_before=29.0, mrr_after=99.0))
    assert moved == [(Kind.EXPANSION, D(70))]
    assert last is not None and last.state is State.ACTIVE


def test_a_start_of_a_cancelled_subscription_is_a_reactivation() -> None:
    moved, last = run(
        pay("subscription_started", 1, mrr_after=10.0),
        pay("subscription_cancelled", 2),
        pay("subscription_started", 3, mrr_after=12.0),
    )
    assert [k for k, _ in moved] == [Kind.NEW, Kind.CHURN, Kind.REACTIVATION]
    assert last is not None and last.state is State.REACTIVATED and last.mrr == 12


def test_a_plan_change_at_the_same_mrr_moves_nothing_but_the_plan() -> None:
    moved, last = run(
        pay("subscription_started", 1, plan="a", mrr_after=10.0),
        pay("subscription_upgraded", 2, plan="b", mrr_after=10.0),
    )
    assert moved == [(Kind.NEW, D(10))]
    assert last is not None and last.plan == "b"


EVENT_TYPES = st.sampled_from(
    [
        "subscription_started",
        "subscription_upgraded",
        "subscription_downgraded",
        "subscription_cancelled",
        "subscription_reactivated",
        "invoice_paid",
        "purchase",
    ]
)
MRR = st.none() | st.integers(0, 1000).map(float)


@given(st.lists(st.tuples(EVENT_TYPES, MRR, MRR, MRR), max_size=30))
def test_movements_add_up_to_the_mrr_and_are_positive(
    events: list[tuple[str, float | None, float | None, float | None]],
) -> None:
    """Whatever the events, from a first start on the recorded MRR is the signed sum of
    the movements, each starting at the MRR the last one left; every amount is positive,
    and a cancelled customer has no MRR."""
    before: Subscription | None = None
    total = D(0)
    for n, (type_, amount, mrr_before, mrr_after) in enumerate(events):
        if before is None and type_ != "subscription_started":
            continue
        p = pay(type_, n, amount=amount, mrr_before=mrr_before, mrr_after=mrr_after)
        found = classify("c1", p, before, default_currency="EUR")
        if found is None:
            continue
        if found.movement is not None:
            m = found.movement
            assert m.amount > 0
            assert m.mrr_before == (before.mrr if before is not None else 0)
            total += SIGN[m.kind] * m.amount
        before = following(found)
        assert before.mrr == total
        if before.state is State.CANCELLED:
            assert before.mrr == 0
