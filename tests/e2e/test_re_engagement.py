"""Re-engagement end to end: from ingest calls to the notification records, on a scaled clock.

Two customers sign up over HTTP. The onboarding emails go out (notifier -> SMTP sink)
and nobody opens them, so scoring turns ``engagement_low`` on once two are sent
(day 3). The orchestrator holds that signal for 14 days, then starts re_engagement:
summary email (+0), in-app premium trial (+2 d), CSM task (+4 d). The second
customer logs in after the summary: the journey exits as re-engaged (nothing more
is sent) and course_upsell starts for it.

The services run at two simulated days per real second, with quiet hours switched
off so that the days are exact (quiet hours have their own unit and integration
tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.clock import ScaledClock
from common.db import create_engine
from devstack.stack import SERVICES, Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks

SCALE = 43_200.0  # two simulated days per real second
DAY_S = 86_400 / SCALE
FAST = {
    "TENURE_TIME_SCALE": str(SCALE),
    "TENURE_ORCHESTRATOR_QUIET_START": "00:00",
    "TENURE_ORCHESTRATOR_QUIET_END": "00:00",  # an empty window: no quiet hours
    "TENURE_ORCHESTRATOR_TIMER_POLL_S": "0.05",
    "TENURE_ORCHESTRATOR_TRIGGER_POLL_S": "0.05",
}
BOOKS = load_playbooks(SHIPPED)
LATE = 0.5  # days a step may fire after its due instant (polls, relays, two shared cores)


@pytest.fixture(scope="module")
def services(stack: Stack) -> Iterator[Stack]:
    for name in SERVICES:
        stack.start_service(name, FAST)
    stack.wait_ready()
    try:
        yield stack
    finally:
        for name in SERVICES:
            stack.stop_service(name)


def clock(stack: Stack) -> ScaledClock:
    return ScaledClock(scale=SCALE, epoch=stack.epoch)


def new_customer(prefix: str) -> str:
    """A customer id in the treatment arm of every playbook (the holdout sends nothing)."""
    while True:
        customer = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if all(decisions.assign_arm(b, customer) == decisions.TREATMENT for b in BOOKS.values()):
            return customer


def post(stack: Stack, customer: str, kind: str, type_: str, **fields: Any) -> None:
    event = {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": clock(stack).now().isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }
    response = httpx.post(
        f"http://127.0.0.1:{stack.ports.ingest}/v1/events",
        json=event,
        headers={"X-API-Key": stack.api_key},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def sign_up(stack: Stack, customer: str) -> None:
    post(
        stack,
        customer,
        "profile",
        "identify",
        email=f"{customer}@example.com",
        first_name="Ana",
        plan="free",
        time_zone="UTC",
        consent={"email_marketing": True, "in_app": True},
        owner_csm={"id": "csm-7", "email": "csm7@example.com"},
    )
    time.sleep(0.5)  # the profile is projected before the first step is decided
    post(stack, customer, "payment", "subscription_started", plan="free")


def query(stack: Stack, sql: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(stack.database_url or "", pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(sql), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def journeys(stack: Stack, customer: str) -> dict[str, Any]:
    rows = query(
        stack,
        "SELECT journey_id, playbook, state, exit_reason, started_at FROM journeys "
        "WHERE customer_id = :c",
        c=customer,
    )
    return {r.playbook: r for r in rows}


def sent(stack: Stack, journey_id: str) -> dict[str, datetime]:
    """Step -> when it was sent (the journey's history)."""
    rows = query(
        stack,
        "SELECT detail->>'step' AS step, at FROM journey_transitions "
        "WHERE journey_id = :j AND event = 'step_sent'",
        j=journey_id,
    )
    return {r.step: r.at for r in rows}


def notifications(stack: Stack, customer: str) -> list[dict[str, Any]]:
    """The notification records the outbox relay published, in order."""
    rows = query(
        stack,
        "SELECT convert_from(payload, 'UTF8')::jsonb AS n FROM outbox "
        "WHERE key = :c AND published_at IS NOT NULL ORDER BY id",
        c=customer,
    )
    return [r.n for r in rows]


def wait_for(predicate: Any, days: float, what: str) -> Any:
    deadline = time.monotonic() + days * DAY_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {days} simulated days waiting for {what}")


def days(delta: timedelta) -> float:
    return delta / timedelta(days=1)


def test_re_engagement_timeline_and_exit_on_login(services: Stack) -> None:
    silent, returning = new_customer("e2e-quiet"), new_customer("e2e-back")
    for customer in (silent, returning):
        sign_up(services, customer)

    onboarding = wait_for(lambda: journeys(services, silent).get("onboarding"), 5, "onboarding")
    # engagement_low on after two unopened onboarding emails (day 3), held 14 days
    wait_for(lambda: journeys(services, returning).get("re_engagement"), 25, "re_engagement")
    back = journeys(services, returning)["re_engagement"]
    wait_for(lambda: "summary" in sent(services, back.journey_id), 3, "the summary")
    post(services, returning, "login", "login", user_id="u-1")

    quiet = wait_for(lambda: journeys(services, silent).get("re_engagement"), 5, "re_engagement")
    steps = wait_for(
        lambda: (s := sent(services, quiet.journey_id)) and len(s) == 3 and s, 8, "three steps"
    )
    start = quiet.started_at
    assert 17 <= days(start - onboarding.started_at) < 17 + 1.5
    [held] = query(
        services,
        "SELECT due_at, status FROM held_triggers WHERE customer_id = :c "
        "AND playbook = 're_engagement'",
        c=silent,
    )
    assert held.status == "fired" and 0 <= days(start - held.due_at) < LATE
    for step, offset in (("summary", 0), ("premium_trial", 2), ("csm_help", 4)):
        assert offset <= days(steps[step] - start) < offset + LATE, (step, steps[step] - start)
    wait_for(
        lambda: journeys(services, silent)["re_engagement"].state == "completed", 2, "completion"
    )

    records = wait_for(
        lambda: (n := notifications(services, silent)) and len(n) >= 7 and n, 3, "the records"
    )
    mine = [n for n in records if n["playbook"] == "re_engagement"]
    assert [(n["step"], n["channel"], n["recipient"]) for n in mine] == [
        ("summary", "email", f"{silent}@example.com"),
        ("premium_trial", "in_app", None),
        ("csm_help", "webhook", "csm"),
    ]
    assert mine[1]["context"]["offer_premium_days"] == 7
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
