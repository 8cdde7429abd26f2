"""The customer as the step decisions see it, from the rows the group read gathers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.adapters.step_store import _columns
from orchestrator.domain.rules import customer_from

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PROFILE = {
    "email": "a@b.example",
    "time_zone": "Europe/Madrid",
    "plan": "basic",
    "consent_email": True,
    "consent_in_app": None,
    "profile_at": T0,
}
STATE = {
    "segment": "high",
    "plan": "pro",
    "plan_at": T0 + timedelta(days=1),
    "unsubscribed_at": None,
    "products": ["course"],
    "subscription": None,
}


def test_the_later_plan_wins_and_an_unsubscribe_is_for_good() -> None:
    customer = customer_from("c1", PROFILE, STATE, "high")
    assert (customer.plan, customer.segment, customer.tier) == ("pro", "high", "high")
    assert customer.products == frozenset({"course"}) and customer.subscription == "active"
    assert customer.may_email and not customer.consent_in_app  # NULL in the row: not given
    older = customer_from("c1", PROFILE, {**STATE, "plan_at": T0 - timedelta(days=1)}, None)
    assert older.plan == "basic"
    gone = customer_from("c1", PROFILE, {**STATE, "unsubscribed_at": T0}, None)
    assert gone.unsubscribed and not gone.may_email


def test_a_customer_without_rows_gets_the_defaults() -> None:
    nobody = customer_from("c2", None, None, None)
    assert (nobody.email, nobody.plan, nobody.consent_email, nobody.consent_in_app) == (
        None,
        None,
        False,
        True,
    )
    assert nobody.subscription == "active" and nobody.products == frozenset()


def test_rows_become_one_list_per_column_in_order() -> None:
    rows = [("j1", "step_sent", '{"step":"a"}'), ("j1", "finish", '{"reason":"last step"}')]
    columns = _columns(rows, 3)
    assert columns == [
        ["j1", "j1"],
        ["step_sent", "finish"],
        ['{"step":"a"}', '{"reason":"last step"}'],
    ]
    assert _columns([], 4) == [[], [], [], []]
