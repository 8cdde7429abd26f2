"""``POST /v1/inbound/reply``: a credential, a bounded body, 4xx for bad input.

Through the notifier's ASGI app, with the real delivery log (PostgreSQL) and Kafka; no
answer is a 500 and nothing is logged at ERROR level (no traceback per request).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from common.settings import CommonSettings
from devstack.stack import Stack
from notifier.entrypoints.api import create_api
from notifier.entrypoints.deliver import Deliverer
from tests.integration.test_notifier import (  # noqa: F401  (common, deliverer: fixtures)
    INBOUND,
    as_record,
    common,
    deliverer,
    mails_to,
    notification,
    outcomes,
    with_settings,
)


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier_inbound")


LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def replying(deliverer: Deliverer) -> Deliverer:  # noqa: F811
    return with_settings(
        deliverer,
        reply_domain="reply.tenure.example",
        inbound_secret=INBOUND,
        inbound_max_bytes=LIMIT,
    )


@pytest.fixture
async def client(replying: Deliverer) -> AsyncIterator[httpx.AsyncClient]:
    d = replying
    app = create_api(
        d.settings, d.publisher, d.clock, suppressions=d.suppressions, inbox=d.inbox, log=d.log
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as c:
        yield c


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def reply_address(d: Deliverer, stack: Stack) -> tuple[str, str]:
    n = notification()
    await d.handle(as_record(n))
    [message] = mails_to(stack, n.recipient or "")
    return n.notification_id, message["Reply-To"]


async def test_a_reply_needs_the_inbound_credential(
    replying: Deliverer,
    client: httpx.AsyncClient,
    stack: Stack,
    common: CommonSettings,  # noqa: F811
) -> None:
    nid, address = await reply_address(replying, stack)
    body = {"to": address}
    for headers in (
        {},
        basic("tenure", "wrong-secret-0123456789"),
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Basic " + base64.b64encode(INBOUND.encode()).decode()},  # no colon
        {"Authorization": f"Token {INBOUND}"},
    ):
        answer = await client.post("/v1/inbound/reply", json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert "Basic" in answer.headers["WWW-Authenticate"]
    assert (await outcomes(common, nid))[nid] == ["sent"]  # nothing reported
    ok = await client.post("/v1/inbound/reply", json=body, headers=basic("any", INBOUND))
    assert ok.status_code == 200 and ok.json() == {"replied": [nid]}
    bearer = {"Authorization": f"Bearer {INBOUND}"}
    assert (await client.post("/v1/inbound/reply", json=body, headers=bearer)).status_code == 200


async def test_without_a_configured_secret_the_route_is_off(deliverer: Deliverer) -> None:  # noqa: F811
    app = create_api(deliverer.settings, deliverer.publisher, deliverer.clock, log=deliverer.log)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as c:
        answer = await c.post("/v1/inbound/reply", json={"to": "x"}, headers=basic("a", "b"))
    assert answer.status_code == 404


def deep(depth: int) -> bytes:
    return b'{"to": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b'{"to": "reply+x', 400),  # malformed
        ("application/json", b'{"to": "\xff\xfe"}', 400),  # not UTF-8
        ("application/json", b"\xc3\x28", 400),
        ("application/json", deep(5_000), 400),  # nested past orjson's limit
        ("application/json", deep(20_000), 400),
        ("application/json", b"[1, 2]", 400),  # not an object
        ("application/json", b"", 400),
        ("application/json", b"x" * (LIMIT + 1), 413),  # too large, declared length
        ("application/x-www-form-urlencoded", b"to=" + b"a" * LIMIT, 413),
        ("multipart/form-data; boundary=zz", b"--zz\r\nno headers end", 400),
        ("multipart/form-data", b"--zz\r\n\r\n", 400),  # no boundary
        ("text/plain", b"to=reply+x@y", 415),
        ("", b"{}", 415),
    ],
)
async def test_bad_bodies_get_a_4xx_and_no_traceback(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    content_type: str,
    body: bytes,
    status: int,
) -> None:
    headers = {**basic("tenure", INBOUND), "Content-Type": content_type}
    with caplog.at_level(logging.ERROR):
        answer = await client.post("/v1/inbound/reply", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_streamed_body_is_cut_off_at_the_limit(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1_000):  # 64 MB if it were all read
            sent += 1
            yield b'{"to": "' + b"a" * 65_536

    headers = {**basic("tenure", INBOUND), "Content-Type": "application/json"}
    answer = await client.post("/v1/inbound/reply", content=chunks(), headers=headers)
    assert "content-length" not in answer.request.headers  # chunked: no length to check
    assert answer.status_code == 413
    assert sent < 10  # the rest was never read


async def test_form_posts_with_attachments_are_read_for_their_fields(
    replying: Deliverer, client: httpx.AsyncClient, stack: Stack
) -> None:
    nid, address = await reply_address(replying, stack)
    answer = await client.post(
        "/v1/inbound/reply",
        data={"recipient": address, "subject": "Re: your offer"},
        files={"attachment1": ("a.txt", b"hello", "text/plain")},
        headers=basic("tenure", INBOUND),
    )
    assert answer.status_code == 200 and answer.json() == {"replied": [nid]}
