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


def purpose_key(secret: bytes, purpose: str) -> bytes:
    """A key for one kind of token only, so a click token can never unsubscribe."""
    return hmac.new(secret, f"tenure:{purpose}".encode(), hashlib.sha256).digest()


# --- in-app inbox tokens ----------------------------------------------------------------
#
# ``<base64url(customer_id)>.<expiry unix seconds>.<base64url(HMAC-SHA256)>``, where the
# MAC covers the first two parts joined by a dot. The product backend signs them with the
# shared inbox secret; any language can make one in three lines.


def issue_inbox_token(customer_id: str, expires_at: int, secret: bytes) -> str:
    """A token giving access to ``customer_id``'s inbox until ``expires_at`` (unix s)."""
    head = f"{_b64(customer_id.encode())}.{expires_at}"
    mac = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(mac)}"


def verify_inbox_token(token: str, secret: bytes, *, now: int, max_ttl_s: int) -> str:
    """The customer id of a valid token; raises :class:`BadSignature` saying why not.

    Checked in constant time; refused when expired, or valid for longer than
    ``max_ttl_s`` from ``now`` (a token that never expires is a leaked password).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise BadSignature("malformed token: expected <customer>.<expiry>.<signature>")
    encoded, expiry, mac = parts
    expected = hmac.new(secret, f"{encoded}.{expiry}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(mac)
    except ValueError:
        raise BadSignature("malformed token signature") from None
    if not hmac.compare_digest(given, expected):
        raise BadSignature("token signature mismatch")
    if not expiry.isdigit():
        raise BadSignature("malformed token expiry")
    expires_at = int(expiry)
    if expires_at <= now:
        raise BadSignature("token expired")
    if expires_at - now > max_ttl_s:
        raise BadSignature(f"token valid for more than {max_ttl_s} s")
    try:
        return _unb64(encoded).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadSignature("malformed token customer") from None


# --- reply addresses ---------------------------------------------------------------------
#
# ``reply+<notification id>.<16 hex MAC>@<reply domain>``: lower-case hex, because some mail
# systems lower-case local parts, and short enough for the 64-character local-part limit
# with the orchestrator's UUID notification ids.

REPLY_PREFIX = "reply+"
_LOCAL_PART_MAX = 64


def reply_address(notification_id: str, secret: bytes, domain: str) -> str | None:
    """The Reply-To address of a notification, or None if its id makes it too long."""
    mac = hmac.new(secret, notification_id.encode(), hashlib.sha256).hexdigest()[:16]
    local = f"{REPLY_PREFIX}{notification_id}.{mac}"
    if len(local) > _LOCAL_PART_MAX or not all(c.isalnum() or c in "-_." for c in notification_id):
        return None
    return f"{local}@{domain}"


def verify_reply_address(address: str, secret: bytes) -> str:
    """The notification id of a reply address; raises :class:`BadSignature`."""
    local = address.strip().strip("<>").rsplit("@", 1)[0]
    if not local.lower().startswith(REPLY_PREFIX):
        raise BadSignature("not a reply address")
    notification_id, _, mac = local[len(REPLY_PREFIX) :].rpartition(".")
    expected = hmac.new(secret, notification_id.encode(), hashlib.sha256).hexdigest()[:16]
    if not notification_id or not hmac.compare_digest(mac.lower(), expected):
        raise BadSignature("reply address signature mismatch")
    return notification_id
