"""Helpers of the end-to-end playbook timelines: services on a faster clock, ingest calls,
and reads of journeys and notification records from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from common.clock import ScaledClock
from common.db import create_engine
from devstack.stack import SERVICES, Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks

BOOKS = load_playbooks(SHIPPED)
# Simulated days a step may fire after its due instant: polls and relays, on two cores
# that other test sessions share (a real second at one simulated day per second).
LATE = 1.0


# An empty quiet-hours window: a timeline asserted from its trigger would otherwise depend
# on the hour the stack's scaled clock stands at (quiet hours have tests of their own).
NO_QUIET_HOURS = {
    "TENURE_ORCHESTRATOR_QUIET_START": "00:00",
    "TENURE_ORCHESTRATOR_QUIET_END": "00:00",
}


def fast_env(scale: float) -> dict[str, str]:
    """Service settings for a playbook timeline test at ``scale`` (simulated s per real s)."""
    return {
        "TENURE_TIME_SCALE": str(scale),
        **NO_QUIET_HOURS,
        # Events are posted at the scaled clock's now; on a busy machine a few real seconds
        # of consumer lag are days of simulated age, beyond the default max age of an event
        # trigger (the rule has unit and integration tests of its own).
        "TENURE_ORCHESTRATOR_EVENT_TRIGGER_MAX_AGE": "P365D",
        "TENURE_ORCHESTRATOR_TIMER_POLL_S": "0.05",
        "TENURE_ORCHESTRATOR_TRIGGER_POLL_S": "0.05",
    }


def start_services(stack: Stack, scale: float, extra_env: dict[str, str] | None = None) -> None:
    for name in SERVICES:
        stack.start_service(name, {**fast_env(scale), **(extra_env or {})})
    stack.wait_ready()


def stop_services(stack: Stack) -> None:
    stack.stop_services(SERVICES)


@contextlib.contextmanager
def running_services(
    stack: Stack, scale: float, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The four services on a clock of ``scale`` (and ``extra_env``), for one test module."""
    start_services(stack, scale, extra_env)
    try:
        yield stack
    finally:
        stop_services(stack)


def clock(stack: Stack, scale: float) -> ScaledClock:
    return ScaledClock(scale=scale, epoch=stack.epoch)


def new_customer(prefix: str) -> str:
    """A customer id in the treatment arm of every playbook (the holdout sends nothing)."""
    while True:
        customer = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if all(decisions.assign_arm(b, customer) == decisions.TREATMENT for b in BOOKS.values()):
            return customer


def post(stack: Stack, scale: float, customer: str, kind: str, type_: str, **fields: Any) -> None:
    event = {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": clock(stack, scale).now().isoformat(),
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


def identify(stack: Stack, scale: float, customer: str, *, plan: str) -> None:
    """The profile every journey test starts from: email consent, a CSM, UTC."""
    post(
        stack,
        scale,
        customer,
        "profile",
        "identify",
        email=f"{customer}@example.com",
        first_name="Ana",
        plan=plan,
        time_zone="UTC",
        consent={"email_marketing": True, "in_app": True},
        owner_csm={"id": "csm-7", "email": "csm7@example.com"},
    )


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


def wait_for(predicate: Any, days: float, what: str, *, scale: float) -> Any:
    """Poll ``predicate`` until it is truthy, for at most ``days`` simulated days."""
    deadline = time.monotonic() + days * 86_400 / scale
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {days} simulated days waiting for {what}")


def days(delta: timedelta) -> float:
    return delta / timedelta(days=1)
