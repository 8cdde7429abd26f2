"""DNS rebinding: the address checked is the address connected to.

A local listener on 127.0.0.1 stands for a private service; a fake resolver answers a
public address the first time it is asked and 127.0.0.1 afterwards, as a hostile DNS
server would. Loopback only: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trustme

from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain.ssrf import UnsafeUrl
from notifier.errors import PermanentSendError, SendError

SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
PUBLIC = "93.184.216.34"


@dataclass
class Listener:
    port: int
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


CA = trustme.CA()


async def listen(tls: ssl.SSLContext | None) -> AsyncIterator[Listener]:
    seen = Listener(port=0)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        seen.requests.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    seen.port = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async for seen in listen(None):
        yield seen


def server_tls(name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert(name).configure_cert(context)
    return context


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


class Rebinding:
    """Public for the first ``honest`` answers, loopback after."""

    def __init__(self, honest: int = 1) -> None:
        self.honest = honest
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [PUBLIC] if len(self.asked) <= self.honest else ["127.0.0.1"]


async def post(sender: WebhookSender, url: str) -> int:
    return await sender.post(url, msg_id="msg_1", body=b'{"a": 1}')


async def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    listener: Listener,
) -> None:
    resolver = Rebinding()
    async with vetted_client(allow=(), timeout_s=2, max_connections=2, resolver=resolver) as client:
        sender = WebhookSender(client, SECRET, resolver=resolver)
        with pytest.raises(PermanentSendError, match=r"when connecting.*127\.0\.0\.1.*loopback"):
            await post(sender, f"http://hooks.example:{listener.port}/task")
    assert resolver.asked == ["hooks.example", "hooks.example"]  # checked, then connected
    assert listener.connections == 0


async def test_an_address_on_the_allow_list_is_connected_to_by_number_keeping_the_host(
    listener: Listener,
) -> None:
    resolver = Rebinding(honest=0)  # always loopback: allowed for this host:port only
    allow = (f"hooks.example:{listener.port}",)
    async with vetted_client(
        allow=allow, timeout_s=2, max_connections=2, resolver=resolver
    ) as client:
        sender = WebhookSender(client, SECRET, allow=allow, resolver=resolver)
        assert await post(sender, f"http://hooks.example:{listener.port}/task") == 200
    [request] = listener.requests
    assert request.startswith(b"POST /task HTTP/1.1\r\n")
    assert f"host: hooks.example:{listener.port}".encode() in request.lower()
    assert b"webhook-signature: v1," in request.lower()


async def test_the_transport_refuses_on_its_own_without_the_sender_check(
    listener: Listener,
) -> None:
    async with vetted_client(
        allow=(), timeout_s=2, max_connections=2, resolver=Rebinding(honest=0)
    ) as client:
        with pytest.raises(UnsafeUrl, match="loopback"):
            await client.post(f"http://hooks.example:{listener.port}/task", content=b"{}")
    assert listener.connections == 0


async def test_over_tls_the_pinned_connection_verifies_the_certificate_of_the_host_name() -> None:
    resolver = Rebinding(honest=0)  # the name resolves to loopback, allowed below
    async for seen in listen(server_tls("hooks.example")):
        allow = (f"hooks.example:{seen.port}",)
        async with vetted_client(
            allow=allow, timeout_s=2, max_connections=2, resolver=resolver, verify=client_tls()
        ) as client:
            sender = WebhookSender(client, SECRET, allow=allow, resolver=resolver)
            assert await post(sender, f"https://hooks.example:{seen.port}/task") == 200
        [request] = seen.requests
        assert f"host: hooks.example:{seen.port}".encode() in request.lower()


async def test_over_tls_a_certificate_for_another_name_is_refused() -> None:
    resolver = Rebinding(honest=0)
    async for seen in listen(server_tls("other.example")):
        allow = (f"hooks.example:{seen.port}",)
        async with vetted_client(
            allow=allow, timeout_s=2, max_connections=2, resolver=resolver, verify=client_tls()
        ) as client:
            sender = WebhookSender(client, SECRET, allow=allow, resolver=resolver)
            with pytest.raises(SendError, match="certificate"):
                await post(sender, f"https://hooks.example:{seen.port}/task")
        assert seen.requests == []
