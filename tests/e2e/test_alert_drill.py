"""Fault drills against the real Prometheus: the SMTP sink stops while notifications are
sent, and TenureDeliveryFailures reaches ``firing``; the sink comes back, the retries go
out, and the alert resolves. The notifier stops while notifications keep coming, and
TenureConsumerLagGrowing fires (from the orchestrator's outside view of the group).

Prometheus scrapes the real notifier and orchestrator every second and evaluates the
rules of deploy/prometheus/alerts.yml every second, with their windows and ``for``
shortened (the drill's configuration; the numbers themselves are pinned by
tests/prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common.kafka import KafkaPublisher
from common.messages import Notification
from common.topics import Topic
from devstack import prometheus
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import Stack

ALERT = "TenureDeliveryFailures"
LAG_ALERT = "TenureConsumerLagGrowing"
DRILL_ENV = {"TENURE_METRICS_EVERY_S": "1"}
RULES = prometheus.DEPLOY_CONFIG.with_name("alerts.yml")


def drill_rules(*names: str, window: str = "15s", pending: str = "3s") -> dict[str, Any]:
    """Rules ``names`` of alerts.yml with every range window ``window`` and ``for: pending``."""
    chosen = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in names:
                rule["expr"] = re.sub(r"\[\d+[smh]\]", f"[{window}]", rule["expr"])
                rule["for"] = pending
                chosen.append(rule)
    assert len(chosen) == len(names)
    return {"groups": [{"name": "drill", "rules": chosen}]}


@pytest.fixture(scope="module")
def prometheus_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not prometheus.BINARY.exists():
        pytest.skip("`make prometheus` could not fetch Debian's package")
    stack.start_service("orchestrator", DRILL_ENV)
    stack.start_service(
        "notifier",
        {
            **DRILL_ENV,
            "TENURE_NOTIFIER_RETRY_POLL_S": "0.2",
            # 30 simulated days: the retries wait for the sink instead of dead-lettering
            "TENURE_NOTIFIER_RETRY_MAX_AGE_S": str(30 * 86_400),
        },
    )
    stack.wait_ready()
    home: Path = tmp_path_factory.mktemp("drill-prometheus")
    (home / "rules.yml").write_text(yaml.safe_dump(drill_rules(ALERT, LAG_ALERT)))
    ports = stack.service_ports()
    jobs = {job: ports[job] for job in ("notifier", "orchestrator")}
    config = prometheus.test_config(jobs, [home / "rules.yml"])
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = spawn(
        prometheus.command(home / "prometheus.yml", home / "data", port),
        log_path=home / "prometheus.log",
        cwd=home,
    )
    try:
        wait_for_port(port, timeout=30, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        stack.stop_services(["notifier", "orchestrator"])


def email() -> Notification:
    nid = str(uuid.uuid4())
    return Notification(
        notification_id=nid,
        customer_id=f"drill-{nid[:8]}",
        journey_id=f"j-{nid[:8]}",
        playbook="retention_offer",
        step="offer",
        channel="email",
        template="retention_offer/offer",
        variant="discount_30_3_months",
        recipient=f"{nid}@example.com",
        created_at=datetime.now(UTC),
        context={
            "first_name": "Ana",
            "email": f"{nid}@example.com",
            "plan": "pro",
            "score": {"churn_probability": 0.9, "signals": [], "red_flags": []},
        },
    )


async def sending(stack: Stack, stop_sending: asyncio.Event, every_s: float) -> None:
    """An email notification every ``every_s`` until told to stop."""
    async with KafkaPublisher(stack.common_settings(), client_id="drill") as publisher:
        while not stop_sending.is_set():
            n = email()
            await publisher.publish(Topic.NOTIFICATIONS, n.customer_id, n)
            await asyncio.sleep(every_s)


async def alert_state(client: httpx.AsyncClient, name: str = ALERT) -> str | None:
    alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
    states = [a["state"] for a in alerts if a["labels"]["alertname"] == name]
    return "firing" if "firing" in states else (states[0] if states else None)


async def wait_for(
    client: httpx.AsyncClient, wanted: str | None, timeout_s: float, name: str = ALERT
) -> float:
    started = time.monotonic()
    while (state := await alert_state(client, name)) != wanted:
        assert time.monotonic() - started < timeout_s, f"{name} still {state}, not {wanted}"
        await asyncio.sleep(0.5)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def traffic(stack: Stack, every_s: float) -> AsyncIterator[None]:
    done = asyncio.Event()
    task = asyncio.create_task(sending(stack, done, every_s))
    try:
        yield
    finally:
        done.set()
        await task


async def test_the_smtp_sink_stopping_fires_the_delivery_alert_and_its_return_resolves_it(
    stack: Stack, prometheus_url: str
) -> None:
    async with (
        httpx.AsyncClient(base_url=prometheus_url, timeout=5) as client,
        traffic(stack, every_s=0.2),
    ):
        await asyncio.sleep(5)  # emails go out: the rule is evaluated and quiet
        assert await alert_state(client) is None
        stack.stop_service("sinks")
        try:
            fired_after = await wait_for(client, "firing", timeout_s=90)
        finally:
            stack.start_sinks()
        resolved_after = await wait_for(client, None, timeout_s=120)
    print(
        f"firing {fired_after:.1f} s after the sink stopped,"
        f" resolved {resolved_after:.1f} s after it came back"
    )


async def test_a_stopped_consumer_fires_the_lag_alert(stack: Stack, prometheus_url: str) -> None:
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5) as client:
        assert await alert_state(client, LAG_ALERT) is None
        stack.stop_service("notifier")
        try:
            async with traffic(stack, every_s=0.05):  # about 20 a second, none consumed
                fired_after = await wait_for(client, "firing", timeout_s=90, name=LAG_ALERT)
            # How long the oldest waiting record has waited, to confirm it (docs/runbooks.md).
            query = (
                'max(tenure_orchestrator_group_oldest_unconsumed_seconds{group="tenure-notifier"})'
            )
            answer = (await client.get("/api/v1/query", params={"query": query})).json()
            (oldest,) = answer["data"]["result"]
            assert float(oldest["value"][1]) > 1
        finally:
            stack.start_service("notifier", DRILL_ENV)
            stack.wait_ready()
        alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
        (lagging,) = [a for a in alerts if a["labels"]["alertname"] == LAG_ALERT]
        assert lagging["labels"]["group"] == "tenure-notifier"
    print(f"lag alert firing {fired_after:.1f} s after the notifier stopped")
