"""`make run` shows the services' log lines as text on a terminal and keeps them as JSON in
.stack/logs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import orjson

from devstack.stack import Stack

LINE = orjson.dumps(
    {
        "ts": "2026-12-07T05:00:00.123+00:00",
        "level": "info",
        "service": "ingest",
        "pid": 1,
        "logger": "tenure.requests",
        "msg": "request",
        "route": "/v1/events",
        "status": 202,
    }
).decode()


def test_the_terminal_gets_text_and_the_log_file_keeps_json(tmp_path: Path) -> None:
    shown = io.StringIO()
    stack = Stack(root=tmp_path, echo=shown, echo_format="text", database_url="postgresql://x@/t")
    assert stack.env()["TENURE_LOG_FORMAT"] == "json"  # what the services write
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    stack._spawn("ingest", ["-c", f"print({LINE!r})"])
    deadline = time.monotonic() + 10
    while "ingest |" not in shown.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    stack.stop()
    echoed = shown.getvalue()
    assert "05:00:00.123 INFO    ingest request  route=/v1/events status=202" in echoed
    assert (stack.log_dir / "ingest.log").read_text().strip() == LINE
