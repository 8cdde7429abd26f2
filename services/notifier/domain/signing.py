"""Signed tracking links and Standard Webhooks signatures (HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson


class BadSignature(Exception):
    """A token or signature does not verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(payload: dict[str, Any], secret: bytes) -> str:
    """``<payload>.<mac>``, both base64url: a link parameter that cannot be forged."""
    body = _b64(orjson.dumps(payload))
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac[:16])}"


def verify_token(token: str, secret: bytes) -> dict[str, Any]:
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(_unb64(mac), expected):
            raise BadSignature("token signature mismatch")
        data = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BadSignature(f"malformed token: {exc}") from exc
    if not isinstance(data, dict):
        raise BadSignature("malformed token")
    return data


def webhook_key(secret: str) -> bytes:
    """The raw key of a ``whsec_<base64>`` secret (Standard Webhooks)."""
    return base64.b64decode(secret.removeprefix("whsec_"))


def webhook_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers: id, timestamp and ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(webhook_key(secret), signed, hashlib.sha256).digest())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature.decode()}",
    }
