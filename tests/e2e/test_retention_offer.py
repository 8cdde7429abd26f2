"""The whole slice, through the four services as processes, on a scaled clock.

Events posted over HTTP → scoring → orchestrator journey → notifier → SMTP sink and
webhook receiver. One customer never answers (offer, CSM call on day 1, escalation on
day 3); another clicks the offer link before day 3 (no escalation is ever sent).
"""

from __future__ import annotations

import asyncio
import email
import json
import re
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.clock import ScaledClock
from common.db import create_engine
from devstack.stack import SERVICES, Stack
from tests.e2e.journeys import NO_QUIET_HOURS, new_customer

DAY_S = 6.0  # real seconds per simulated day (tests/conftest.py E2E_TIME_SCALE)


@pytest.fixture(scope="module")
def services(stack: Stack) -> Iterator[Stack]:
    for name in SERVICES:  # the offsets below count from the trigger: no quiet hours
        stack.start_service(name, NO_QUIET_HOURS)
    stack.wait_ready()
    try:
        yield stack
    finally:
        stack.stop_services(SERVICES)


def clock(stack: Stack) -> ScaledClock:
    return ScaledClock(scale=stack.time_scale, epoch=stack.epoch)


def post(stack: Stack, event: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{stack.ports.ingest}/v1/events",
        json=event,
        headers={"X-API-Key": stack.api_key},
        timeout=10,
    )


def churning_customer(stack: Stack, customer_id: str) -> None:
    """Identify a customer, then send what makes its churn probability pass 0.70."""
    now = clock(stack).now()

    def ev(kind: str, type_: str, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "customer_id": customer_id,
            "occurred_at": now.isoformat(),
            "kind": kind,
            "type": type_,
            **fields,
        }

    events = [
        ev(
            "profile",
            "identify",
            email=f"{customer_id}@example.com",
            first_name="Ana",
            plan="pro",
            consent={"email_marketing": True, "in_app": True},
            owner_csm={"id": "csm-7", "email": "csm7@example.com"},
        ),
        ev("support", "ticket_opened", ticket_id="t1", sentiment=0.1),
        ev("intent", "competitor_trial", source="g2"),
        ev("intent", "alternative_search", source="google"),
    ]
    for event in events:
        response = post(stack, event)
        assert response.status_code == 202, response.text
        assert response.json() == {"event_id": event["event_id"], "status": "accepted"}
        if event["kind"] == "profile":
            # The profile (the address) is projected before the churn score arrives, as a
            # product backend identifies a customer long before it churns: the two come
            # from different topics, and on the scaled clock the orchestrator's wait for
            # a late profile (TENURE_ORCHESTRATOR_PROFILE_WAIT) is a few milliseconds.
            time.sleep(1)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def emails_to(folder: Path, address: str) -> list[Message]:
    found = []
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes())
        if message["To"] == address:
            found.append(message)
    return found


def webhooks_for(folder: Path, customer_id: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        request = json.loads(path.read_text())
        body = json.loads(request["body"])
        if body.get("customer_id") == customer_id:
            found.append(
                {
                    "path": request["path"],
                    "headers": request["headers"],
                    "body": body,
                    "received_at": request["received_at"],
                }
            )
    return found


def text_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text/plain part")


def sim_day(stack: Stack, real_ts: float) -> float:
    """The simulated instant of a real timestamp, in days since the stack's epoch."""
    start = stack.epoch.timestamp()
    return (start + (real_ts - start) * stack.time_scale) / 86400


def test_no_response_escalates_on_day_three(services: Stack) -> None:
    customer = new_customer("e2e-silent")  # in the treatment arm (the holdout sends nothing)
    address = f"{customer}@example.com"
    triggered = time.time()
    churning_customer(services, customer)

    offer = wait_for(lambda: emails_to(services.mail_dir, address), 30, "the offer email")[0]
    assert "offer" in offer["Subject"].lower()
    assert offer["X-Tenure-Notification-Id"]
    assert offer.is_multipart()
    assert "/t/click/" in text_part(offer)

    hooks = wait_for(
        lambda: [
            h
            for h in webhooks_for(services.webhook_dir, customer)
            if h["body"]["step"] == "escalation"
        ],
        8 * DAY_S,
        "the escalation",
    )
    every = webhooks_for(services.webhook_dir, customer)
    steps = [h["body"]["step"] for h in every]
    assert steps == ["retention_call", "escalation"], steps
    call, escalation = every
    assert call["path"] == "/csm" and call["body"]["priority"] == "high"
    assert escalation["path"] == "/escalation"
    assert call["body"]["owner_csm"] == "csm7@example.com"
    explanation = call["body"]["explanation"]
    assert explanation["churn_probability"] >= 0.90  # trial + alternative search red flag
    assert {s["name"] for s in explanation["signals"]} >= {"competitor_trial", "alternative_search"}
    assert [f["name"] for f in explanation["red_flags"]] == ["trial_and_search"]
    for hook in every:
        assert hook["headers"]["webhook-signature"].startswith("v1,")
        assert hook["headers"]["webhook-id"] == hook["body"]["notification_id"]
    # Offsets on the scaled clock: the call one day after the trigger, escalation three days.
    start = sim_day(services, triggered)
    call_day = sim_day(services, call["received_at"]) - start
    escalation_day = sim_day(services, escalation["received_at"]) - start
    assert 1.0 <= call_day < 1.6, call_day
    assert 3.0 <= escalation_day < 3.6, escalation_day
    assert hooks and len(emails_to(services.mail_dir, address)) == 1


def test_click_before_day_three_stops_the_escalation(services: Stack) -> None:
    customer = new_customer("e2e-clicker")
    address = f"{customer}@example.com"
    churning_customer(services, customer)

    offer = wait_for(lambda: emails_to(services.mail_dir, address), 30, "the offer email")[0]
    link = re.search(r"http://\S+/t/click/\S+", text_part(offer))
    assert link is not None
    clicked = httpx.get(link.group(0), follow_redirects=False, timeout=10)
    assert clicked.status_code == 302
    clicked_day = sim_day(services, time.time())

    # Wait past day 3 (plus margin) and check that no escalation was sent.
    time.sleep(4 * DAY_S)
    steps = [h["body"]["step"] for h in webhooks_for(services.webhook_dir, customer)]
    assert "escalation" not in steps, steps
    # A clicked link is an answer: the CSM call due on day 1 is cancelled too, unless the
    # click came after it.
    if clicked_day - sim_day(services, offer_received(services, address)) < 0.9:
        assert steps == [], steps


def offer_received(stack: Stack, address: str) -> float:
    for path in sorted(stack.mail_dir.glob("*.eml")):
        if email.message_from_bytes(path.read_bytes())["To"] == address:
            return path.stat().st_mtime
    raise AssertionError("no offer")


def test_tampered_click_link_is_refused(services: Stack) -> None:
    response = httpx.get(f"http://127.0.0.1:{services.ports.notifier}/t/click/abc.def", timeout=10)
    assert response.status_code == 404


def projected_score(stack: Stack, customer_id: str) -> dict[str, Any] | None:
    """The score snapshot the orchestrator projected into PostgreSQL, if any."""

    async def query() -> dict[str, Any] | None:
        engine = create_engine(stack.database_url or "", pool_size=1)
        try:
            async with engine.connect() as conn:
                row = await conn.execute(
                    sa.text("SELECT snapshot FROM scores WHERE customer_id = :c"),
                    {"c": customer_id},
                )
                return row.scalar()
        finally:
            await engine.dispose()

    return asyncio.run(query())


def test_an_event_sent_twice_is_counted_once(services: Stack) -> None:
    customer = f"e2e-dup-{uuid.uuid4().hex[:6]}"
    now = clock(services).now().isoformat()
    ticket = {
        "event_id": f"{customer}-t1",
        "customer_id": customer,
        "occurred_at": now,
        "kind": "support",
        "type": "ticket_opened",
        "ticket_id": "t1",
        "sentiment": 0.1,
    }
    for _ in range(3):
        assert post(services, ticket).status_code == 202
    batch = httpx.post(
        f"http://127.0.0.1:{services.ports.ingest}/v1/batch",
        json={"events": [ticket, ticket, {**ticket, "event_id": f"{customer}-t2"}]},
        headers={"X-API-Key": services.api_key},
        timeout=10,
    )
    assert batch.status_code == 202 and batch.json()["accepted"] == 3
    # Six records on Kafka, two distinct event ids: the scorer counts two tickets.
    snapshot = wait_for(
        lambda: (s := projected_score(services, customer)) and s["events_counted"] == 2 and s,
        30,
        "the score of two distinct events",
    )
    assert [s["name"] for s in snapshot["signals"]] == ["ticket_sentiment_negative"]
    time.sleep(2)
    final = projected_score(services, customer)
    assert final is not None and final["events_counted"] == 2
