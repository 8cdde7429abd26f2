"""Plan cohorts (docs/domain.md section 6): observed churn and expansion rates for CLV.

Pure functions only: the per-customer deltas, the per-plan sums, the pooled months.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.events import parse_event
from scoring.domain.cohorts import (
    CohortDelta,
    fold_delta,
    month_of,
    on_cancelled,
    on_upgraded,
    pooled,
    register,
)
from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
from scoring.domain.rules import reevaluate, score
from scoring.domain.state import CustomerState
from scoring.domain.value import clv, cohort_rates, customer_clv

MODEL = load_model(DEFAULT_MODEL_PATH)
CLV = MODEL.clv
MAY = datetime(2026, 5, 10, 12, tzinfo=UTC)
JUNE = datetime(2026, 6, 10, 12, tzinfo=UTC)
JULY = datetime(2026, 7, 2, 12, tzinfo=UTC)


def summed(deltas: list[CohortDelta]) -> dict[str, Any]:
    aggregate: dict[str, list[float]] | None = None
    for delta in deltas:
        aggregate = fold_delta(aggregate, delta, CLV)
    return aggregate or {}


def test_domain_example_rates_give_the_worked_clv() -> None:
    # 100 customers of 1,000 MRR at June's start; 5 lost in June; 20,000 of expansion MRR
    deltas = [CohortDelta("pro", "2026-06", customers=1, mrr=1000.0) for _ in range(100)]
    deltas += [CohortDelta("pro", "2026-06", lost=1) for _ in range(5)]
    deltas += [CohortDelta("pro", "2026-06", expansion=20_000.0)]
    stats = pooled(summed(deltas), JULY, CLV)
    assert stats is not None and stats.customers_at_start == 100 and stats.customers_lost == 5
    rates = cohort_rates(stats, CLV)
    assert rates.observed
    assert rates.monthly_churn == pytest.approx(0.05)  # 5 / 100
    assert rates.expansion == pytest.approx(0.20)  # 20k / 100k
    assert customer_clv(100, stats, CLV) == pytest.approx(1920)
    assert clv(100, 0.80, rates.monthly_churn, rates.expansion) == pytest.approx(1920)


def test_the_month_in_progress_is_not_pooled_and_old_months_fall_out() -> None:
    deltas = [CohortDelta("basic", "2026-06", customers=1, mrr=29.0) for _ in range(40)]
    deltas += [CohortDelta("basic", "2026-06", lost=1) for _ in range(4)]
    june = summed(deltas)
    assert pooled(june, JUNE, CLV) is None  # June is still running
    stats = pooled(june, JULY, CLV)
    assert stats is not None and (stats.customers_at_start, stats.customers_lost) == (40, 4)
    # a delta of a later month also closes June, whatever the clock says
    assert pooled(fold_delta(june, CohortDelta("basic", "2026-07", customers=1), CLV), JUNE, CLV)
    much_later = datetime(2027, 8, 1, tzinfo=UTC)  # June 2026 is more than 12 months back
    assert pooled(june, much_later, CLV) is None


def test_observed_rates_only_from_enough_customer_months() -> None:
    few = summed([CohortDelta("basic", "2026-06", customers=1, mrr=29.0) for _ in range(10)])
    few = fold_delta(few, CohortDelta("basic", "2026-06", lost=1), CLV)
    stats = pooled(few, JULY, CLV)
    assert stats is not None and stats.customers_at_start < CLV.min_cohort_customer_months
    assert cohort_rates(stats, CLV).observed is False
    assert cohort_rates(stats, CLV).monthly_churn == CLV.default_monthly_churn
    # the same 10 customers over three complete months are 30 customer-months: enough
    three = few
    for month in ("2026-04", "2026-05"):
        for _ in range(10):
            three = fold_delta(three, CohortDelta("basic", month, customers=1, mrr=29.0), CLV)
    rates = cohort_rates(pooled(three, JULY, CLV), CLV)
    assert rates.observed and rates.monthly_churn == pytest.approx(1 / 30)


def test_a_customer_is_counted_once_per_month_and_only_if_there_at_its_start() -> None:
    cohort: dict[str, list[Any]] = {}
    before_june = datetime(2026, 5, 20, tzinfo=UTC).isoformat()
    args: dict[str, Any] = dict(plan="pro", plan_at=before_june, mrr=99.0, cancelled_at=None)
    assert register(cohort, at=JUNE, model=CLV, **args) == [
        CohortDelta("pro", "2026-06", customers=1, mrr=99.0)
    ]
    assert register(cohort, at=JUNE + timedelta(days=3), model=CLV, **args) == []
    # arrived during June: not at June's start
    joined = dict(args, plan_at=datetime(2026, 6, 2, tzinfo=UTC).isoformat())
    assert register({}, at=JUNE, model=CLV, **joined) == []
    # cancelled before June began: not a customer at its start
    gone = dict(args, cancelled_at=datetime(2026, 5, 30, tzinfo=UTC).isoformat())
    assert register({}, at=JUNE, model=CLV, **gone) == []
    assert register({}, at=JUNE, model=CLV, **dict(args, plan=None)) == []
    # a cancellation during June that arrived first (another topic): counted and lost at once
    late = dict(args, cancelled_at=datetime(2026, 6, 20, tzinfo=UTC).isoformat())
    assert register({}, at=JUNE, model=CLV, **late) == [
        CohortDelta("pro", "2026-06", customers=1, mrr=99.0),
        CohortDelta("pro", "2026-06", lost=1),
    ]


def test_a_cancellation_is_lost_once_and_withdraws_months_counted_ahead() -> None:
    cohort: dict[str, list[Any]] = {"2026-06": ["pro", 99.0, 0], "2026-07": ["pro", 99.0, 0]}
    deltas = on_cancelled(cohort, JUNE)
    assert deltas == [
        CohortDelta("pro", "2026-06", lost=1),
        CohortDelta("pro", "2026-07", customers=-1, mrr=-99.0),
    ]
    assert on_cancelled(cohort, JUNE) == []  # a second cancellation notice counts nothing
    assert on_upgraded(cohort, JUNE, 100.0) == [CohortDelta("pro", "2026-06", expansion=100.0)]
    assert on_upgraded(cohort, JULY, 100.0) == []  # not counted in July: no cohort to expand
    assert on_upgraded(cohort, JUNE, -20.0) == []


def ev(type_: str, at: datetime, kind: str = "payment", **fields: Any):
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


def test_the_rules_emit_the_deltas_of_a_customer_history() -> None:
    state = CustomerState("c-1")
    history = [
        ev("subscription_started", MAY, plan="basic", mrr_after=29.0),
        ev("login", JUNE, kind="login", user_id="u"),  # at June's start on basic: counted
        ev(
            "subscription_upgraded",
            JUNE + timedelta(days=2),
            plan="pro",
            mrr_before=29.0,
            mrr_after=99.0,
        ),
        ev("subscription_cancelled", JULY),  # counted in July (on pro now), lost in July
    ]
    deltas: list[CohortDelta] = []
    for event in history:
        outcome = score(state, event, MODEL, now=event.occurred_at)
        state = outcome.state
        deltas += outcome.cohort
    assert deltas == [
        CohortDelta("basic", "2026-06", customers=1, mrr=29.0),
        CohortDelta("basic", "2026-06", expansion=70.0),
        CohortDelta("pro", "2026-07", customers=1, mrr=99.0),
        CohortDelta("pro", "2026-07", lost=1),
    ]
    # a duplicate of any of them changes nothing
    assert score(state, history[1], MODEL).cohort == ()
    # cancelled: the clock's next month does not count it
    assert reevaluate(state, MODEL, datetime(2026, 8, 3, tzinfo=UTC)).cohort == ()


def test_the_clock_counts_a_silent_customer_in_a_new_month() -> None:
    state = score(
        CustomerState("c-1"),
        ev("subscription_started", MAY, plan="pro", mrr_after=99.0),
        MODEL,
        now=MAY,
    ).state
    outcome = reevaluate(state, MODEL, JUNE)
    assert outcome.cohort == (CohortDelta("pro", "2026-06", customers=1, mrr=99.0),)
    assert reevaluate(outcome.state, MODEL, JUNE + timedelta(days=1)).cohort == ()
    assert month_of(JUNE) in outcome.state.cohort


def test_observed_rates_change_the_clv_and_its_explanation() -> None:
    deltas = [CohortDelta("basic", "2026-06", customers=1, mrr=29.0) for _ in range(30)]
    deltas += [CohortDelta("basic", "2026-06", lost=1) for _ in range(15)]
    stats = pooled(summed(deltas), JULY, CLV)
    assert stats is not None
    state = CustomerState("c-2")
    event = ev("subscription_started", JULY, plan="basic", mrr_after=29.0)
    default = score(state, event, MODEL, now=JULY).snapshot
    observed = score(state, event, MODEL, now=JULY, cohorts={"basic": stats}).snapshot
    assert default is not None and observed is not None
    assert default.clv == pytest.approx(29 * 0.8 * 20 * 1.2) and not default.clv_rates_observed
    assert observed.clv == pytest.approx(29 * 0.8 * 2 * 1.0)  # churn 15/30, no expansion
    assert observed.clv_rates_observed and observed.clv_monthly_churn == pytest.approx(0.5)
    assert observed.clv_expansion_rate == 0.0
