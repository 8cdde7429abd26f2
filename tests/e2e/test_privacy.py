"""Data protection through the running stack: export a customer, erase it, check every store.

A churning customer gets its retention offer and unsubscribes with the email's one-click
link; the operator API exports everything kept about it, then erases it. Afterwards no
table of the database holds the customer's id or address (every text, JSON and binary
column is searched), the scoring worker's changelog and the ``scores`` topic end in
tombstones for it, and the unsubscribe still holds: new events for the same id start
over, and the new offer is suppressed, not mailed. ``tenure customers export|erase`` do
the same from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from common.apikeys import KeyRepository, generate
from common.db import create_engine
from common.topics import Topic, topic_name
from devstack.stack import SERVICES, Stack
from tests.e2e.journeys import new_customer, post, query
from tests.e2e.test_retention_offer import churning_customer, emails_to, text_part, wait_for
from tests.integration.test_scoring import read_until


@pytest.fixture(scope="module")
def services(stack: Stack) -> Iterator[tuple[Stack, dict[str, str]]]:
    keys = asyncio.run(operator_keys(stack))  # before the start: the services load them then
    stack.start_services(SERVICES)
    try:
        yield stack, keys
    finally:
        stack.stop_services(SERVICES)


async def operator_keys(stack: Stack) -> dict[str, str]:
    engine = create_engine(stack.database_url or "", pool_size=1)
    try:
        keys = {}
        for name, scope in (("reader", "operator:read"), ("admin", "operator:admin")):
            full, new = generate(f"privacy-{name}", [scope])
            await KeyRepository(engine).create(new)
            keys[name] = full
        return keys
    finally:
        await engine.dispose()


def api(stack: Stack, method: str, path: str, key: str) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{stack.ports.orchestrator}{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def unsubscribe(stack: Stack, address: str) -> None:
    """Click the offer's one-click unsubscribe (RFC 8058), as a mailbox provider does."""
    offer = wait_for(lambda: emails_to(stack.mail_dir, address), 30, "the offer email")[0]
    link = re.search(r"<(http[^>]+)>", offer["List-Unsubscribe"])
    assert link is not None
    response = httpx.post(
        link.group(1), data={"List-Unsubscribe": "One-Click"}, timeout=10, follow_redirects=False
    )
    assert response.status_code == 200, response.text
    assert "/t/click/" in text_part(offer)


def stores_holding(stack: Stack, needles: list[str]) -> list[str]:
    """Every table.column of the database whose value contains one of ``needles``."""
    columns = query(
        stack,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'bytea', 'ARRAY') "
        "AND table_name <> 'alembic_version'",
    )
    found = []
    for table, column, kind in columns:
        where = (
            f"position(convert_to(:n, 'UTF8') IN {column}) > 0"
            if kind == "bytea"
            else f"strpos({column}::text, :n) > 0"
        )
        for needle in needles:
            hits = query(stack, f'SELECT count(*) FROM "{table}" WHERE {where}', n=needle)
            if hits[0][0]:
                found.append(f"{table}.{column}")
    return found


def latest_values(stack: Stack, topic: str, key: str) -> list[bytes | None]:
    """The values of ``key``'s records on ``topic``, oldest first (JSON-quoted keys too)."""
    records = asyncio.run(read_all(stack, topic))
    wanted = {key.encode(), f'"{key}"'.encode()}
    return [r.value for r in records if r.key in wanted]


async def read_all(stack: Stack, topic: str) -> list[Any]:
    found: list[Any] = []

    def done(records: list[Any]) -> bool:
        found[:] = records
        return False

    # Read for the whole timeout: everything there is.
    with contextlib.suppress(AssertionError):
        await read_until(stack.common_settings(), topic, done, timeout=3)
    return found


def test_export_then_erase_leaves_no_trace_and_the_unsubscribe_holds(
    services: tuple[Stack, dict[str, str]],
) -> None:
    stack, keys = services
    customer = new_customer("e2e-gdpr")
    address = f"{customer}@example.com"
    churning_customer(stack, customer)
    unsubscribe(stack, address)
    wait_for(
        lambda: query(
            stack,
            "SELECT 1 FROM customer_state WHERE customer_id = :c AND unsubscribed_at IS NOT NULL",
            c=customer,
        ),
        30,
        "the unsubscribe to reach the orchestrator",
    )

    exported = api(stack, "GET", f"/v1/customers/{customer}/export", keys["reader"])
    assert exported.status_code == 200, exported.text
    document = exported.json()
    assert document["profile"]["email"] == address
    assert document["score"]["churn_probability"] > 0.7
    assert [j["playbook"] for j in document["journeys"]] == ["retention_offer"]
    assert any(n["payload"]["step"] == "offer" for n in document["notifications"])
    assert {d["status"] for d in document["deliveries"]} >= {"sent"}
    assert "unsubscribed" in {o["status"] for o in document["delivery_outcomes"]}
    assert document["email_suppressed"] == "unsubscribed"
    assert api(stack, "DELETE", f"/v1/customers/{customer}", keys["reader"]).status_code == 403

    erased = api(stack, "DELETE", f"/v1/customers/{customer}", keys["admin"])
    assert erased.status_code == 200, erased.text
    removed = erased.json()["removed"]
    assert removed["profile"] == 1 and removed["journeys"] == 1 and removed["notifications"] >= 1

    # Scoring drops its state and says so with a tombstone on scores; the orchestrator
    # then completes the erasure.
    digest = hashlib.sha256(customer.encode()).hexdigest()
    wait_for(
        lambda: query(
            stack,
            "SELECT 1 FROM erasures WHERE customer_hash = :h AND scoring_erased_at IS NOT NULL",
            h=digest,
        ),
        30,
        "scoring's part of the erasure",
    )
    assert stores_holding(stack, [customer, address]) == []
    assert api(stack, "GET", f"/v1/customers/{customer}", keys["reader"]).status_code == 404
    assert api(stack, "GET", f"/v1/customers/{customer}/export", keys["reader"]).status_code == 404
    prefix = stack.topic_prefix
    assert latest_values(stack, topic_name(Topic.SCORES, prefix), customer)[-1] is None
    changelog = latest_values(stack, "tenure-scoring-customer-state-changelog", customer)
    assert changelog and changelog[-1] is None

    # New events for the same id are a new start; the unsubscribe still holds.
    before = len(emails_to(stack.mail_dir, address))
    churning_customer(stack, customer)
    wait_for(
        lambda: query(
            stack,
            "SELECT 1 FROM deliveries WHERE customer_id = :c AND status = 'suppressed'",
            c=customer,
        ),
        30,
        "the new offer, suppressed",
    )
    assert len(emails_to(stack.mail_dir, address)) == before


def tenure(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env()}
    return subprocess.run(
        [sys.executable, "-m", "tenure_cli", "customers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_exports_and_erases(services: tuple[Stack, dict[str, str]]) -> None:
    stack, _ = services
    customer = new_customer("e2e-gdpr-cli")
    churning_customer(stack, customer)
    wait_for(
        lambda: query(stack, "SELECT 1 FROM journeys WHERE customer_id = :c", c=customer),
        30,
        "the journey",
    )
    exported = tenure(stack, "export", customer)
    assert exported.returncode == 0, exported.stderr
    assert f'"email": "{customer}@example.com"' in exported.stdout

    erased = tenure(stack, "erase", customer)
    assert erased.returncode == 0, erased.stderr
    assert '"requested_by": "cli:' in erased.stdout
    assert query(stack, "SELECT 1 FROM customers WHERE customer_id = :c", c=customer) == []
    missing = tenure(stack, "export", customer)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"tenure: error: nothing is kept about customer '{customer}'"

    # A profile from before the erasure (a late or replayed record) is not new data.
    erased_at = datetime.fromisoformat(json.loads(erased.stdout)["erased_at"])
    dropped = erased_records(stack)
    post(
        stack,
        stack.time_scale,
        customer,
        "profile",
        "identify",
        email=f"{customer}@example.com",
        occurred_at=(erased_at - timedelta(minutes=1)).isoformat(),
    )
    wait_for(lambda: erased_records(stack) > dropped, 30, "the old profile to be dropped")
    assert query(stack, "SELECT 1 FROM customers WHERE customer_id = :c", c=customer) == []


def erased_records(stack: Stack) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports.orchestrator}/metrics", timeout=10).text
    found = re.search(r"^tenure_orchestrator_erased_records_total (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
