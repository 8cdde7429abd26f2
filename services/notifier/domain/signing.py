"""Signed link tokens, reply addresses, inbox tokens and Standard Webhooks signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence

import itsdangerous

from notifier.errors import NotifierError


class BadSignature(NotifierError):
    """A token or signature does not verify."""


class TokenExpired(BadSignature):
    """A token that verifies but is older than its kind's lifetime."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Notification ids made of these are signed as they are (the orchestrator's are UUIDs);
# any other id is base64url-encoded behind a "~", which no such id contains.
_URL_SAFE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class LinkTokens:
    """Opaque tokens of one kind of link (tracking, unsubscribe): itsdangerous's timestamp
    signer over the notification id alone.

    A token is ``<notification id>.<timestamp>.<HMAC-SHA256>``: it names the notification
    and nothing else (the customer, the address and the journey are looked up from the
    delivery log), says when it was issued, and verifies only for its ``purpose`` (the
    salt), within ``max_age_s`` real seconds, under one of ``keys``. ``keys`` are oldest
    first: the last one signs, every one verifies (rotation: add a new key at the end, drop
    the oldest once its links may have expired). The signer rather than itsdangerous's
    serializer: a JSON payload bought nothing here and cost six times as much per token.
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        purpose: str,
        max_age_s: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one key")
        clock = now

        class _Signer(itsdangerous.TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self.max_age_s = max_age_s
        self._signer = _Signer(
            list(keys), salt=f"tenure.link.{purpose}", digest_method=hashlib.sha256
        )

    def issue(self, notification_id: str) -> str:
        """A token for ``notification_id``, signed with the newest key, dated now."""
        value = notification_id
        if not _URL_SAFE.fullmatch(value):
            value = "~" + _b64(notification_id.encode())
        return self._signer.sign(value).decode()

    def verify(self, token: str) -> str:
        """The notification id of a valid token; raises :class:`TokenExpired` for a token
        older than ``max_age_s``, :class:`BadSignature` for any other invalid token."""
        try:
            value = self._signer.unsign(token, max_age=self.max_age_s).decode()
            if value.startswith("~"):
                value = _unb64(value[1:]).decode()
        except itsdangerous.SignatureExpired as exc:
            raise TokenExpired(f"link expired: {exc}") from None
        except (itsdangerous.BadData, ValueError) as exc:
            raise BadSignature(f"invalid link token: {exc}") from None
        if not value:
            raise BadSignature("invalid link token: no notification id")
        return value


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


def verify_reply_address(address: str, keys: Sequence[bytes]) -> str:
    """The notification id of a reply address signed with any of ``keys`` (rotation);
    raises :class:`BadSignature`."""
    local = address.strip().strip("<>").rsplit("@", 1)[0]
    if not local.lower().startswith(REPLY_PREFIX):
        raise BadSignature("not a reply address")
    notification_id, _, mac = local[len(REPLY_PREFIX) :].rpartition(".")
    if notification_id:
        for key in keys:
            expected = hmac.new(key, notification_id.encode(), hashlib.sha256).hexdigest()[:16]
            if hmac.compare_digest(mac.lower(), expected):
                return notification_id
    raise BadSignature("reply address signature mismatch")
