"""``python -m ingest`` with two worker processes: JSON logs from every worker, and one
``/metrics`` that counts the events of both (Prometheus multiprocess mode).

The test gives ingest its metrics directory, so that it can also read what each worker
counted (one file per process) and check that both served events."""

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
from prometheus_client.mmap_dict import MmapedDict

from common.events import EXAMPLES
from common.kafka import ensure_topics
from common.metrics import MULTIPROCESS_ENV
from common.settings import CommonSettings
from common.topics import Topic
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import Stack

EVENTS = 24
MAX_EVENTS = 400
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
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env[MULTIPROCESS_ENV] = str(metrics_dir)
    log = tmp_path / "ingest.log"
    proc = spawn([sys.executable, "-m", "ingest"], env=env, log_path=log)
    try:
        wait_for_port(port, timeout=60, proc=proc, what="ingest")
        url = f"http://127.0.0.1:{port}"
        sent = 0
        # A new connection each time, until both workers served some (one may start late).
        while sent < EVENTS or len(accepted_per_process(metrics_dir)) < 2:
            assert sent < MAX_EVENTS, f"one worker served all: {accepted_per_process(metrics_dir)}"
            event = {
                **EXAMPLES["login"],
                "event_id": f"w-{sent}",
                "customer_id": f"c-{sent % 5}",
                "occurred_at": datetime.now(UTC).isoformat(),
            }
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for _ in range(60):  # no worker may be ready yet
                    response = await client.post(
                        "/v1/events", json=event, headers={"X-API-Key": "workers-key"}
                    )
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                assert response.status_code == 202, response.text
            sent += 1
        for _ in range(10):  # any worker answers /metrics with the sum of both
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                text = (await client.get("/metrics")).text
            assert sum(float(v) for v in ACCEPTED.findall(text)) == sent
    finally:
        stop(proc)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is JSON, workers' too
    pids = {r["pid"] for r in records}
    assert len(pids) >= 3, f"log lines from {pids}: the parent and both workers expected"
    served = accepted_per_process(metrics_dir)
    assert len(served) == 2, f"events accepted per worker: {served}"
    assert sum(served.values()) == sent
    print(f"\n{len(records)} JSON log lines from processes {sorted(pids)}; accepted {served}")


def accepted_per_process(metrics_dir: Path) -> dict[str, float]:
    """Events counted as accepted, per worker, from each worker's own counter file."""
    served: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for key, value, _stamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            name, _, labels, _ = orjson.loads(key)
            if name == "tenure_ingest_events" and labels.get("outcome") == "accepted" and value:
                served[pid] = served.get(pid, 0.0) + value
    return served
