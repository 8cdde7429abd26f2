"""``python -m ingest`` as deployed: two workers, documentation off, metrics on a port of
their own, and a slow client closed (issue 13, items 15 and 17), on the session's Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from common.events import EXAMPLES
from common.settings import CommonSettings
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import REPO, Stack

KEY = "serving-test-key"


@pytest.fixture(scope="module")
def ingest(stack: Stack, common_settings: CommonSettings) -> Iterator[tuple[int, int]]:
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TENURE_")},
        "TENURE_KAFKA_BOOTSTRAP": common_settings.kafka_bootstrap,
        "TENURE_TOPIC_PREFIX": common_settings.topic_prefix,
        "TENURE_INGEST_PORT": str(port),
        "TENURE_INGEST_WORKERS": "2",
        "TENURE_INGEST_API_KEY": KEY,
        "TENURE_INGEST_KEYS_FROM_DATABASE": "false",
        "TENURE_INGEST_DOCS": "false",
        "TENURE_INGEST_METRICS_PORT": str(metrics_port),
        "TENURE_INGEST_HTTP_HEADER_TIMEOUT_S": "1",
    }
    log = stack.log_dir / f"ingest-serving-{uuid.uuid4().hex[:6]}.log"
    proc = spawn([sys.executable, "-m", "ingest"], env=env, log_path=log, cwd=REPO)
    try:
        wait_for_port(port, timeout=60, proc=proc, what="ingest")
        yield port, metrics_port
    finally:
        stop(proc)


def post_event(port: int) -> int:
    event = {
        **EXAMPLES["login"],
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    deadline = time.monotonic() + 60
    while True:  # the workers accept once their producers started
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/events", json=event, headers={"X-API-Key": KEY}
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            return response.status_code
        time.sleep(0.5)


def test_documentation_is_off_and_metrics_are_on_their_own_port(ingest: tuple[int, int]) -> None:
    port, metrics_port = ingest
    assert post_event(port) == 202
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
        assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 404, path
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metrics.status_code == 200
    # the workers' metrics, summed by the supervisor's listener
    assert 'tenure_ingest_requests_total{route="/v1/events",status="202"}' in metrics.text


async def test_a_slow_client_is_closed_while_events_are_accepted(ingest: tuple[int, int]) -> None:
    port, _ = ingest
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
    for _, writer in slow:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    assert await asyncio.to_thread(post_event, port) == 202

    async def closed(reader: asyncio.StreamReader) -> bool:
        with contextlib.suppress(ConnectionError):
            try:
                async with asyncio.timeout(4):
                    await reader.read()
            except TimeoutError:
                return False
        return True

    assert all(await asyncio.gather(*(closed(r) for r, _ in slow)))
    for _, writer in slow:
        writer.close()
