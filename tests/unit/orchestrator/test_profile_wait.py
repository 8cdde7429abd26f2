"""An email step whose journey was started by a score that overtook the customer's first
profile (Kafka orders each topic, not the topics together) waits for the profile for up
to ``profile_wait`` from the journey's start, instead of being skipped for want of an
address at once (found by tests/cluster/test_replicas.py: after a failover two of the
journeys' offers were skipped, the identify events accepted seconds before the score)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.settings import OrchestratorSettings

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
RULES = OrchestratorSettings().rules()
OFFER = load_playbooks(SHIPPED)["retention_offer"]
UNKNOWN = R.customer_from("c-1", None, None, None)  # no profile projected yet


def decide(customer: R.Customer, now: datetime, rules: R.Rules = RULES) -> D.StepDecision:
    situation = D.Situation(customer, started_at=T0)
    return D.decide_step(OFFER, OFFER.step("offer"), situation, now=now, rules=rules)


def test_the_default_wait_is_ten_minutes_looked_at_ten_times() -> None:
    assert RULES.profile_wait == timedelta(minutes=10)
    assert RULES.profile_polls == 10


def test_the_number_of_looks_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_ORCHESTRATOR_PROFILE_WAIT", "PT8M")
    monkeypatch.setenv("TENURE_ORCHESTRATOR_PROFILE_POLLS", "4")
    rules = OrchestratorSettings().rules()
    assert (rules.profile_wait, rules.profile_polls) == (timedelta(minutes=8), 4)
    looks = []
    now = T0
    while (decision := decide(UNKNOWN, now, rules)).action == "defer":
        assert decision.until is not None
        looks.append(decision.until - T0)
        now = decision.until
    assert looks == [timedelta(minutes=m) for m in (2, 4, 6, 8)]
    assert (decision.action, decision.reason) == ("skip", "no email address")
    one = decide(UNKNOWN, T0, replace(rules, profile_polls=1))
    assert one.until == T0 + timedelta(minutes=8)
    monkeypatch.setenv("TENURE_ORCHESTRATOR_PROFILE_POLLS", "0")
    with pytest.raises(ValidationError, match="profile_polls"):
        OrchestratorSettings()


def test_an_email_step_of_a_customer_without_a_profile_waits_for_it() -> None:
    assert not UNKNOWN.profiled
    decision = decide(UNKNOWN, T0)
    assert (decision.action, decision.reason, decision.until) == (
        "defer",
        "awaiting profile",
        T0 + RULES.profile_wait / RULES.profile_polls,
    )
    last = decide(UNKNOWN, T0 + RULES.profile_wait - timedelta(seconds=1))
    assert (last.action, last.until) == ("defer", T0 + RULES.profile_wait)  # not beyond


def test_it_is_skipped_once_the_wait_is_over() -> None:
    decision = decide(UNKNOWN, T0 + RULES.profile_wait)
    assert (decision.action, decision.reason) == ("skip", "no email address")


def test_a_profile_without_an_address_is_skipped_at_once() -> None:
    profile = {
        "email": None,
        "time_zone": "UTC",
        "plan": "pro",
        "consent_email": True,
        "consent_in_app": True,
        "profile_at": T0,
    }
    known = R.customer_from("c-1", profile, None, None)
    assert known.profiled
    assert (decide(known, T0).action, decide(known, T0).reason) == ("skip", "no email address")


def test_the_profile_arriving_meanwhile_lets_the_step_send() -> None:
    known = R.Customer("c-1", email="ana@acme.example", consent_email=True, time_zone="UTC")
    assert decide(known, T0 + RULES.profile_wait / 2).send
