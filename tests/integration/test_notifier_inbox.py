"""The in-app inbox over real HTTP (uvicorn), PostgreSQL and Kafka.

A token for customer A lists, marks and streams A's messages only: never B's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import DeadLetters, KafkaPublisher, ensure_topics
from common.runtime import serve_http
from common.settings import CommonSettings
from common.topics import Topic
from devstack.procs import free_port
from devstack.stack import Stack
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox, InboxEvents
from notifier.adapters.mailer import SmtpMailer
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain.render import Renderer
from notifier.domain.signing import issue_inbox_token
from notifier.entrypoints.api import create_api
from notifier.entrypoints.deliver import Deliverer
from tests.integration.test_notifier import (
    SECRET,
    START,
    as_record,
    notification,
    notifier_settings,
    outcomes,
)


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier_inbox")


@pytest.fixture(scope="module")
async def common(database_url: str, common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-inbox-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES, Topic.NOTIFICATIONS])
    return common


@pytest.fixture(scope="module")
async def served(stack: Stack, common: CommonSettings) -> AsyncIterator[tuple[Deliverer, str]]:
    settings = notifier_settings(stack, common, inbox_secret="backend-shared-secret")
    engine = create_engine(common.database_url)
    stop = asyncio.Event()
    port = free_port()
    async with (
        vetted_client(allow=settings.webhook_allow_hosts, timeout_s=10, max_connections=4) as http,
        KafkaPublisher(common, client_id="it") as publisher,
    ):
        deliverer = Deliverer(
            settings=settings,
            log=DeliveryLog(engine),
            mailer=SmtpMailer(settings),
            webhooks=WebhookSender(http, SECRET, allow=settings.webhook_allow_hosts),
            renderer=Renderer(),
            publisher=publisher,
            clock=FakeClock(START),
            suppressions=Suppressions(engine),
            inbox=Inbox(engine),
            dead_letters=DeadLetters(publisher, consumer_name="it-inbox"),
        )
        app = create_api(
            settings,
            publisher,
            deliverer.clock,
            suppressions=deliverer.suppressions,
            inbox=deliverer.inbox,
            stop=stop,
        )
        server = asyncio.create_task(serve_http(app, host="127.0.0.1", port=port, stop=stop))
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient() as probe:
            while time.monotonic() < deadline:
                try:
                    await probe.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        try:
            yield deliverer, f"http://127.0.0.1:{port}"
        finally:
            stop.set()
            await server
            await deliverer.log.aclose()
    await engine.dispose()


def token(customer_id: str, ttl_s: int = 600, key: bytes = b"backend-shared-secret") -> str:
    return issue_inbox_token(customer_id, int(time.time()) + ttl_s, key)


def auth(customer_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(customer_id)}"}


async def deliver_in_app(d: Deliverer, customer_id: str, template: str) -> str:
    playbook, step = template.split("/")
    n = notification(
        "in_app", customer_id=customer_id, playbook=playbook, step=step, template=template
    )
    await d.handle(as_record(n))
    return n.notification_id


async def test_a_customer_sees_marks_and_dismisses_only_its_own_messages(
    served: tuple[Deliverer, str], common: CommonSettings
) -> None:
    d, base = served
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    na = await deliver_in_app(d, a, "re_engagement/premium_trial")
    nb = await deliver_in_app(d, b, "upsell_need/plan_in_app")
    async with httpx.AsyncClient(base_url=base) as client:
        listed_a = (await client.get("/v1/inbox", headers=auth(a))).json()
        listed_b = (await client.get("/v1/inbox", headers=auth(b))).json()
        assert [m["title"] for m in listed_a["messages"]] == ["It has been two weeks"]
        assert listed_a["unread"] == 1
        assert "7 days" in listed_a["messages"][0]["body"]
        assert [m["title"] for m in listed_b["messages"]] == [
            "You have reached a limit of your plan"
        ]
        id_a = listed_a["messages"][0]["id"]
        id_b = listed_b["messages"][0]["id"]

        # A's token cannot touch B's message: not found, as if it did not exist.
        for action in ("read", "dismiss"):
            answer = await client.post(f"/v1/inbox/{id_b}/{action}", headers=auth(a))
            assert answer.status_code == 404, answer.text
        assert (await client.get("/v1/inbox", headers=auth(b))).json()["unread"] == 1

        read = await client.post(f"/v1/inbox/{id_a}/read", headers=auth(a))
        assert read.status_code == 200 and read.json()["read_at"] is not None
        again = await client.post(f"/v1/inbox/{id_a}/read", headers=auth(a))
        assert again.status_code == 200
        unread = (await client.get("/v1/inbox?unread_only=true", headers=auth(a))).json()
        assert unread["messages"] == []
        assert (await client.post(f"/v1/inbox/{id_a}/dismiss", headers=auth(a))).status_code == 200
        assert (await client.get("/v1/inbox", headers=auth(a))).json()["messages"] == []

    published = await outcomes(common, na, nb)
    assert published[na] == ["sent", "read", "dismissed"]  # the second read is not news
    assert published[nb] == ["sent"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda c: None, "missing inbox token"),
        (lambda c: token(c, ttl_s=-1), "expired"),
        (lambda c: token(c, key=b"not-the-shared-secret"), "mismatch"),
        (lambda c: token(c, ttl_s=10 * 86_400), "valid for more than"),
        (lambda c: token(c)[:-2] + "xx", "mismatch"),
    ],
)
async def test_bad_tokens_are_refused(
    served: tuple[Deliverer, str], make: Any, reason: str
) -> None:
    _, base = served
    raw = make("a-1")
    headers = {"Authorization": f"Bearer {raw}"} if raw else {}
    async with httpx.AsyncClient(base_url=base) as client:
        for method, path in (
            ("GET", "/v1/inbox"),
            ("POST", "/v1/inbox/1/read"),
            ("POST", "/v1/inbox/1/dismiss"),
            ("GET", "/v1/inbox/stream"),
        ):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code == 401, (path, answer.text)
            assert reason in answer.json()["detail"]
            assert answer.headers["www-authenticate"] == "Bearer"


async def read_events(
    response: httpx.Response, want: int, timeout_s: float
) -> list[dict[str, Any]]:
    """The first ``want`` SSE ``message`` events of a streaming response."""
    events: list[dict[str, Any]] = []
    current: dict[str, str] = {}

    async def pump() -> None:
        async for line in response.aiter_lines():
            if line == "":
                if current.get("event") == "message":
                    events.append({"id": current["id"], **json.loads(current["data"])})
                    if len(events) >= want:
                        return
                current.clear()
            elif not line.startswith(":") and ":" in line:
                field, _, value = line.partition(":")
                current[field] = value.lstrip(" ")

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pump(), timeout_s)
    return events


async def test_stream_pushes_new_messages_to_their_customer_only(
    served: tuple[Deliverer, str],
) -> None:
    d, base = served
    a, b = f"sa-{uuid.uuid4().hex[:6]}", f"sb-{uuid.uuid4().hex[:6]}"
    await deliver_in_app(d, a, "upsell_usage/next_plan_in_app")  # before the stream: old
    # EventSource cannot set headers: the token may come as a query parameter.
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream("GET", f"/v1/inbox/stream?token={token(a)}") as stream_a,
        client.stream("GET", "/v1/inbox/stream", headers=auth(b)) as stream_b,
    ):
        assert stream_a.status_code == 200 and stream_b.status_code == 200
        assert stream_a.headers["content-type"].startswith("text/event-stream")
        await asyncio.sleep(0.3)
        await deliver_in_app(d, b, "downgrade_save/value_in_app")
        await deliver_in_app(d, a, "re_engagement/premium_trial")
        await deliver_in_app(d, a, "upsell_need/plan_in_app")
        got_a = await read_events(stream_a, want=2, timeout_s=5)
        got_b = await read_events(stream_b, want=2, timeout_s=1.5)
    assert [e["title"] for e in got_a] == [
        "It has been two weeks",
        "You have reached a limit of your plan",
    ]
    assert [e["title"] for e in got_b] == ["Before you downgrade"]

    # Reconnecting with Last-Event-ID resumes after the last message seen.
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream(
            "GET", "/v1/inbox/stream", headers={**auth(a), "Last-Event-ID": got_a[0]["id"]}
        ) as resumed,
    ):
        again = await read_events(resumed, want=1, timeout_s=5)
    assert [e["title"] for e in again] == ["You have reached a limit of your plan"]


# -- LISTEN/NOTIFY ----------------------------------------------------------------------


class RolledBack(Exception):
    pass


async def store(inbox: Inbox, conn: Any, customer_id: str) -> None:
    await inbox.store(
        conn=conn,
        notification_id=f"n-{uuid.uuid4().hex}",
        customer_id=customer_id,
        journey_id=None,
        playbook="upsell_usage",
        step="next_plan_in_app",
        title="t",
        body="b",
        created_at=START,
    )


async def test_a_committed_message_wakes_its_customer_only_and_a_rolled_back_one_nobody(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    inbox = Inbox(engine)
    events = InboxEvents(engine, channel=inbox.channel)
    a, b = f"la-{uuid.uuid4().hex[:6]}", f"lb-{uuid.uuid4().hex[:6]}"
    try:
        async with events.subscribe(a) as woken_a, events.subscribe(b) as woken_b:
            await asyncio.wait_for(events.listening.wait(), 10)
            assert woken_a.is_set()  # every subscription starts with a catch-up read
            woken_a.clear()
            woken_b.clear()

            with pytest.raises(RolledBack):
                async with engine.begin() as conn:
                    await store(inbox, conn, a)
                    raise RolledBack
            async with engine.begin() as conn:
                await store(inbox, conn, b)
            await asyncio.wait_for(woken_b.wait(), 5)
            assert not woken_a.is_set()  # the rolled-back message was never announced

            async with engine.begin() as conn:
                await store(inbox, conn, a)
                await asyncio.sleep(0.3)
                assert not woken_a.is_set()  # not before the commit
            await asyncio.wait_for(woken_a.wait(), 5)
    finally:
        await events.aclose()
        await engine.dispose()


async def test_a_lost_listen_connection_is_reopened_and_the_stream_catches_up(
    served: tuple[Deliverer, str], database_url: str
) -> None:
    d, base = served
    a = f"lc-{uuid.uuid4().hex[:6]}"
    engine = create_engine(database_url)
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream("GET", "/v1/inbox/stream", headers=auth(a)) as stream,
    ):
        lines = stream.aiter_lines()

        async def next_message() -> dict[str, Any]:
            current: dict[str, str] = {}
            async for line in lines:
                if line == "" and current.get("event") == "message":
                    return dict(json.loads(current["data"]))
                if line == "":
                    current.clear()
                elif not line.startswith(":") and ":" in line:
                    field, _, value = line.partition(":")
                    current[field] = value.lstrip(" ")
            raise AssertionError("the stream ended")

        await deliver_in_app(d, a, "re_engagement/premium_trial")
        first = await asyncio.wait_for(next_message(), 5)
        async with engine.connect() as conn:
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert killed == 1
        await deliver_in_app(d, a, "upsell_need/plan_in_app")  # perhaps while nobody listens
        second = await asyncio.wait_for(next_message(), 10)
    await engine.dispose()
    assert first["title"] == "It has been two weeks"
    assert second["title"] == "You have reached a limit of your plan"
