"""Signed webhook delivery (httpx), Standard Webhooks headers, SSRF-checked targets.

The guard runs twice: :meth:`WebhookSender.check` refuses a URL before anything is sent
(with the reason), and :class:`VettedTransport` checks the addresses again where the
connection is made and connects to one of the addresses it checked, never to a fresh DNS
answer. So a name that resolves to a public address for the check and to a private one
a moment later (DNS rebinding) cannot reach the private one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Sequence

import httpcore
import httpx

from notifier.domain.signing import webhook_headers
from notifier.domain.ssrf import Target, UnsafeUrl, check_target, parse_target
from notifier.errors import PermanentSendError, SendError

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]  # a literal address: nothing to look up
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


class _VettedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking each host where it connects.

    The connection goes to an address that passed :func:`check_target`, by number; TLS
    (SNI, certificate) and the Host header still use the URL's host name, as httpcore
    passes it to ``start_tls`` and the request separately.
    """

    def __init__(self, allow: Sequence[str], resolver: Resolver) -> None:
        self._allow = tuple(allow)
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port)
        check_target(Target("http", host.lower(), port), addresses, self._allow)
        error: Exception = httpcore.ConnectError(f"{host}: no address to connect to")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeUrl("webhooks are not sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class VettedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, errors, keep-alive pool), whose connections
    are made by :class:`_VettedBackend`. No proxy: a proxy would resolve the host itself.

    Raises :class:`~notifier.domain.ssrf.UnsafeUrl` from a request whose host resolves,
    when connecting, to an address the allow list does not cover.
    """

    def __init__(
        self,
        *,
        allow: Sequence[str],
        limits: httpx.Limits,
        resolver: Resolver | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        # Not super().__init__: it builds the same pool without a way to pass the backend
        # (httpcore's extension point for this); every other method only uses the pool.
        self._pool = httpcore.AsyncConnectionPool(
            # SSL_CERT_FILE / SSL_CERT_DIR still name the CA bundle, as for any httpx client.
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_VettedBackend(allow, resolver or resolve),
        )


def vetted_client(
    *,
    allow: Sequence[str],
    timeout_s: float,
    max_connections: int,
    resolver: Resolver | None = None,
    verify: bool | ssl.SSLContext = True,
) -> httpx.AsyncClient:
    """The HTTP client for webhooks: SSRF-checked, pinned connections; no redirects, no
    proxy (not even one from the environment)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        transport=VettedTransport(allow=allow, limits=limits, resolver=resolver, verify=verify),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
    )


class WebhookSender:
    """The :class:`~notifier.service_layer.ports.WebhookPoster` port on httpx: httpx's
    errors and the SSRF guard's refusals become :class:`SendError` or
    :class:`PermanentSendError` here."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        secret: str,
        *,
        allow: Sequence[str] = (),
        now: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
    ) -> None:
        self.client = client
        self.secret = secret
        self.allow = tuple(allow)
        self.now = now
        self.resolve = resolver or resolve

    async def check(self, url: str) -> None:
        """Raise :class:`PermanentSendError` if ``url`` may not be called (SSRF guard).

        The host is resolved here and every address checked; redirects are never
        followed, so the check covers the only host contacted. With a client from
        :func:`vetted_client` the addresses are checked again where the connection is
        made, and the connection pinned to a checked one (DNS rebinding).
        """
        try:
            target = parse_target(url)
            check_target(target, await self.resolve(target.host, target.port), self.allow)
        except UnsafeUrl as exc:
            raise PermanentSendError(f"webhook refused: {exc}") from exc

    async def post(self, url: str, *, msg_id: str, body: bytes) -> int:
        """POST ``body`` signed; returns the status.

        Raises :class:`PermanentSendError` for a refused URL, a redirect (3xx: never
        followed, and asking again gets the same answer) or a 4xx answer other than
        408/409/429; :class:`SendError` (retried) for network errors, 408, 409, 429 and 5xx.
        """
        await self.check(url)
        headers = {
            "content-type": "application/json",
            **webhook_headers(self.secret, msg_id, int(self.now()), body),
        }
        try:
            response = await self.client.post(
                url, content=body, headers=headers, follow_redirects=False
            )
        except UnsafeUrl as exc:  # the address changed between the check and the connection
            raise PermanentSendError(f"webhook refused when connecting: {exc}") from exc
        except httpx.HTTPError as exc:
            raise SendError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response.status_code
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "no Location")
            raise PermanentSendError(
                f"webhook {url}: HTTP {response.status_code} redirect ({location[:200]}); "
                "redirects are not followed: configure the final URL"
            )
        if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 429):
            raise PermanentSendError(f"webhook {url}: HTTP {response.status_code}")
        raise SendError(f"webhook {url}: HTTP {response.status_code}")
