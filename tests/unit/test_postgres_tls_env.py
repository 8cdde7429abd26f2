"""PostgreSQL TLS as deploy/helm/tenure sets it: ``PGSSLMODE`` and ``PGSSLROOTCERT`` (libpq's
variables, which asyncpg reads when the URL does not say) reach the driver through
``common.db.create_engine``, whatever the database URL.

A loopback server plays PostgreSQL's side of the TLS negotiation (the SSLRequest, then the
handshake with a certificate from a throwaway CA) and hangs up after it: enough to see
whether the client asked for TLS and whether it trusted the certificate.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from common.db import create_engine

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class FakeServer:
    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.seen: list[str] = []  # per connection: plain, tls, or tls-refused

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(8)
            if first != SSL_REQUEST:
                self.seen.append("plain")
                return
            writer.write(b"S")
            await writer.drain()
            try:
                await writer.start_tls(self.context)
                self.seen.append("tls")
            except (ssl.SSLError, ConnectionError):
                self.seen.append("tls-refused")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[FakeServer, int, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    fake = FakeServer(context)
    listener = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        yield fake, port, ca_file
    finally:
        listener.close()
        await listener.wait_closed()


async def connect(port: int, monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """Connect through the project's engine with these libpq variables; the error text."""
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    engine = create_engine(f"postgresql+asyncpg://tenure:pw@localhost:{port}/tenure")
    try:
        async with asyncio.timeout(10):
            async with engine.connect():
                pass
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()
    raise AssertionError("connected to a server that hangs up")


async def test_verify_full_trusts_the_ca_named_by_pgsslrootcert(
    server: tuple[FakeServer, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port, ca_file = server
    await connect(port, monkeypatch, PGSSLMODE="verify-full", PGSSLROOTCERT=str(ca_file))
    assert fake.seen and set(fake.seen) == {"tls"}, fake.seen


async def test_verify_full_refuses_a_certificate_another_ca_signed(
    server: tuple[FakeServer, int, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake, port, _ = server
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    error = await connect(port, monkeypatch, PGSSLMODE="verify-full", PGSSLROOTCERT=str(other))
    assert "certificate verify failed" in error, error
    assert "tls" not in fake.seen, fake.seen


async def test_disable_never_asks_for_tls(
    server: tuple[FakeServer, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port, _ = server
    await connect(port, monkeypatch, PGSSLMODE="disable")
    assert fake.seen == ["plain"], fake.seen
