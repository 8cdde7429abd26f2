"""Signed webhook delivery (httpx), Standard Webhooks headers, SSRF-checked targets."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence

import httpx

from notifier.adapters.mailer import PermanentSendError, SendError
from notifier.domain.signing import webhook_headers
from notifier.domain.ssrf import UnsafeUrl, check_target, parse_target


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


class WebhookSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        secret: str,
        *,
        allow: Sequence[str] = (),
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.secret = secret
        self.allow = tuple(allow)
        self.now = now

    async def check(self, url: str) -> None:
        """Raise :class:`PermanentSendError` if ``url`` may not be called (SSRF guard).

        The host is resolved here and every address checked; redirects are never
        followed, so the check covers the only host contacted. (A DNS answer that changes
        between this check and the connection is not covered; see docs/decisions.md.)
        """
        try:
            target = parse_target(url)
            check_target(target, await resolve(target.host, target.port), self.allow)
        except UnsafeUrl as exc:
            raise PermanentSendError(f"webhook refused: {exc}") from exc

    async def post(self, url: str, *, msg_id: str, body: bytes) -> int:
        """POST ``body`` signed; returns the status.

        Raises :class:`PermanentSendError` for a refused URL or a 4xx answer other than
        408/429, :class:`SendError` (retried) for network errors, 408, 429 and 5xx.
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
        except httpx.HTTPError as exc:
            raise SendError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response.status_code
        if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 429):
            raise PermanentSendError(f"webhook {url}: HTTP {response.status_code}")
        raise SendError(f"webhook {url}: HTTP {response.status_code}")
