"""Re-engagement end to end: from ingest calls to the notification records, on a scaled clock.

Two customers sign up over HTTP. The onboarding emails go out (notifier -> SMTP sink)
and nobody opens them, so scoring turns ``engagement_low`` on once two are sent
(day 3). The orchestrator holds that signal for 14 days, then starts re_engagement:
summary email (+0), in-app premium trial (+2 d), CSM task (+4 d). The second
customer logs in after the summary: the journey exits as re-engaged (nothing more
is sent) and course_upsell starts for it.

The services run at half a simulated day per real second, with quiet hours switched
off so that the days are exact (quiet hours have their own unit and integration
tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from orchestrator.domain import decisions
from tests.e2e.journeys import (
    LATE,
    days,
    identify,
    journeys,
    new_customer,
    notifications,
    post,
    query,
    running_services,
    sent,
    wait_for,
)

SCALE = 43_200.0  # half a simulated day per real second


@pytest.fixture(scope="module")
def services(stack: Stack) -> Iterator[Stack]:
    with running_services(stack, SCALE):
        yield stack


def sign_up(stack: Stack, customer: str) -> None:
    identify(stack, SCALE, customer, plan="free")
    time.sleep(0.5)  # the profile is projected before the first step is decided
    post(stack, SCALE, customer, "payment", "subscription_started", plan="free")


def test_re_engagement_timeline_and_exit_on_login(services: Stack) -> None:
    silent, returning = new_customer("e2e-quiet"), new_customer("e2e-back")
    for customer in (silent, returning):
        sign_up(services, customer)

    onboarding = wait_for(
        lambda: journeys(services, silent).get("onboarding"),
        5,
        "onboarding",
        scale=SCALE,
    )
    # engagement_low on after two unopened onboarding emails (day 3), held 14 days
    wait_for(
        lambda: journeys(services, returning).get("re_engagement"),
        25,
        "re_engagement",
        scale=SCALE,
    )
    back = journeys(services, returning)["re_engagement"]
    wait_for(lambda: "summary" in sent(services, back.journey_id), 3, "the summary", scale=SCALE)
    post(services, SCALE, returning, "login", "login", user_id="u-1")

    quiet = wait_for(
        lambda: journeys(services, silent).get("re_engagement"),
        5,
        "re_engagement",
        scale=SCALE,
    )
    steps = wait_for(
        lambda: (s := sent(services, quiet.journey_id)) and len(s) == 3 and s,
        8,
        "three steps",
        scale=SCALE,
    )
    start = quiet.started_at
    # engagement_low turned on when the second onboarding email was sent (day 3), and the
    # journey started 14 days later
    first_success = sent(services, onboarding.journey_id)["first_success"]
    assert 3 <= days(first_success - onboarding.started_at) < 3 + LATE
    [held] = query(
        services,
        "SELECT due_at, status FROM held_triggers WHERE customer_id = :c "
        "AND playbook = 're_engagement' AND status = 'fired'",
        c=silent,
    )
    assert 14 <= days(held.due_at - first_success) < 14 + LATE  # delivery -> scoring -> signal
    assert 0 <= days(start - held.due_at) < LATE
    for step, offset in (("summary", 0), ("premium_trial", 2), ("csm_help", 4)):
        assert offset <= days(steps[step] - start) < offset + LATE, (step, steps[step] - start)
    wait_for(
        lambda: journeys(services, silent)["re_engagement"].state == "completed",
        2,
        "completion",
        scale=SCALE,
    )

    records = wait_for(
        lambda: (n := notifications(services, silent)) and len(n) >= 7 and n,
        3,
        "the records",
        scale=SCALE,
    )
    mine = [n for n in records if n["playbook"] == "re_engagement"]
    assert [(n["step"], n["channel"], n["recipient"]) for n in mine] == [
        ("summary", "email", f"{silent}@example.com"),
        ("premium_trial", "in_app", None),
        ("csm_help", "webhook", "csm"),
    ]
    assert mine[1]["context"]["offer"] == {"premium_days": 7}
    assert mine[2]["context"]["owner_csm"] == "csm7@example.com"
    assert all(
        n["notification_id"] == decisions.notification_id(quiet.journey_id, n["step"]) for n in mine
    )
    assert [n["step"] for n in records if n["playbook"] == "onboarding"][:4] == [
        "welcome",
        "first_success",
        "check_in",
        "results",
    ]

    # The one who logged in: re-engaged, nothing after the summary, course_upsell started.
    gone = journeys(services, returning)
    assert (gone["re_engagement"].state, gone["re_engagement"].exit_reason) == (
        "exited",
        "re_engaged",
    )
    assert set(sent(services, gone["re_engagement"].journey_id)) == {"summary"}
    assert "course_upsell" in gone
    later = [
        n["step"] for n in notifications(services, returning) if n["playbook"] == "re_engagement"
    ]
    assert later == ["summary"]
