"""The inbox's event stream (sse-starlette) on the in-memory inbox, driven as an ASGI
server would drive it: the bytes on the wire, Last-Event-ID, keep-alives while quiet,
new messages as they are stored, and the end of the stream when the client goes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from common.clock import FakeClock
from common.kafka import FakePublisher
from common.settings import CommonSettings
from notifier import metrics
from notifier.adapters.memory import (
    MemoryDeliveryLog,
    MemoryInbox,
    MemoryInboxEvents,
    MemorySuppressions,
)
from notifier.domain.signing import issue_inbox_token
from notifier.entrypoints.api import create_api
from notifier.settings import NotifierSettings

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def put(inbox: MemoryInbox, customer: str, title: str) -> None:
    await inbox.store(
        notification_id=f"{customer}-{title}",
        customer_id=customer,
        journey_id=None,
        playbook="upsell_usage",
        step="next_plan_in_app",
        title=title,
        body="b",
        created_at=NOW,
    )


async def test_the_stream_resumes_after_last_event_id_pings_and_ends_with_the_client() -> None:
    settings = NotifierSettings(
        common=CommonSettings(),
        public_url="https://notifier.example",
        link_secret="unit-link-secret",
        webhook_secret="whsec_" + "A" * 32,
        webhook_csm_url="https://hooks.example/csm",
        webhook_escalation_url="https://hooks.example/escalation",
        inbox_heartbeat_s=0.05,
    )
    events = MemoryInboxEvents()
    inbox = MemoryInbox(events)
    app = create_api(
        settings,
        FakePublisher(),
        FakeClock(NOW),
        suppressions=MemorySuppressions(),  # type: ignore[arg-type]
        inbox=inbox,  # type: ignore[arg-type]
        log=MemoryDeliveryLog(),  # type: ignore[arg-type]
        inbox_events=events,  # type: ignore[arg-type]
    )
    for title in ("one", "two", "three"):
        await put(inbox, "a", title)
    await put(inbox, "b", "not yours")
    [first] = await inbox.list("a", limit=1)
    token = issue_inbox_token("a", int(time.time()) + 600, settings.inbox_key())

    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/inbox/stream",
        "raw_path": b"/v1/inbox/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"notifier"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"last-event-id", str(first.id).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("notifier", 80),
    }
    streams = metrics.INBOX_STREAMS._value.get()
    served = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    await put(inbox, "a", "four")  # stored while the stream is open: pushed at once
    await asyncio.sleep(0.2)
    assert metrics.INBOX_STREAMS._value.get() == streams + 1
    gone.set()
    await asyncio.wait_for(served, 5)  # the client left: the stream ended

    [start] = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    blocks = body.decode().split("\n\n")
    assert blocks[0] == "retry: 3000"
    messages = [b for b in blocks if "event: message" in b]
    assert [b.split("\n")[:2] for b in messages] == [
        ["id: 2", "event: message"],
        ["id: 3", "event: message"],
        ["id: 5", "event: message"],
    ]
    assert '"title":"four"' in messages[-1] and "not yours" not in body.decode()
    assert blocks.count(": keep-alive") >= 2  # every 50 ms, quiet or not
    assert metrics.INBOX_STREAMS._value.get() == streams
    assert events.subscribers == {}  # the subscription was closed with the stream
