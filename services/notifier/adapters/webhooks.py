"""Signed webhook delivery (httpx), Standard Webhooks headers."""

from __future__ import annotations

import time

import httpx

from notifier.adapters.mailer import SendError
from notifier.domain.signing import webhook_headers


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient, secret: str) -> None:
        self.client = client
        self.secret = secret

    async def post(self, url: str, *, msg_id: str, body: bytes) -> int:
        """POST ``body`` signed; returns the status. Raises :class:`SendError` unless 2xx."""
        headers = {
            "content-type": "application/json",
            **webhook_headers(self.secret, msg_id, int(time.time()), body),
        }
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise SendError(f"webhook {url}: HTTP {response.status_code}")
        return response.status_code
