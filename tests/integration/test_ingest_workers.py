"""``python -m ingest`` with two worker processes: JSON logs from every worker, and one
``/metrics`` that counts the events of both (Prometheus multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from common.events import EXAMPLES
from common.kafka import ensure_topics
from common.settings import CommonSettings
from common.topics import Topic
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import Stack

EVENTS = 24
ACCEPTED = re.compile(r'^tenure_ingest_events_total\{[^}]*outcome="accepted"[^}]*\} (\S+)$', re.M)


async def test_two_workers_log_json_and_report_metrics_together(
    stack: Stack, common_settings: CommonSettings, tmp_path: Path
) -> None:
    prefix = f"it-workers-{uuid.uuid4().hex[:6]}."
    await ensure_topics(common_settings.model_copy(update={"topic_prefix": prefix}), Topic.events())
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "TENURE_TOPIC_PREFIX": prefix,
        "TENURE_INGEST_PORT": str(port),
        "TENURE_INGEST_WORKERS": "2",
        "TENURE_INGEST_KEYS_FROM_DATABASE": "false",
        "TENURE_INGEST_API_KEY": "workers-key",
        "TENURE_LOG_FORMAT": "json",
        "TENURE_TIME_SCALE": "1",  # the session's scaled clock would age the example dates
        "TENURE_CLOCK_EPOCH": "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "ingest.log"
    proc = spawn([sys.executable, "-m", "ingest"], env=env, log_path=log)
    try:
        wait_for_port(port, timeout=60, proc=proc, what="ingest")
        url = f"http://127.0.0.1:{port}"
        for i in range(EVENTS):  # a new connection each time: both workers get some
            event = {
                **EXAMPLES["login"],
                "event_id": f"w-{i}",
                "customer_id": f"c-{i % 5}",
                "occurred_at": datetime.now(UTC).isoformat(),
            }
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for _ in range(60):  # the second worker may still be starting
                    response = await client.post(
                        "/v1/events", json=event, headers={"X-API-Key": "workers-key"}
                    )
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                assert response.status_code == 202, response.text
        for _ in range(10):  # any worker answers /metrics with the sum of both
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                text = (await client.get("/metrics")).text
            assert sum(float(v) for v in ACCEPTED.findall(text)) == EVENTS
    finally:
        stop(proc)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is JSON, workers' too
    pids = {r["pid"] for r in records}
    assert len(pids) >= 3, f"log lines from {pids}: the parent and both workers expected"
    print(f"\n{len(records)} JSON log lines from processes {sorted(pids)}")
