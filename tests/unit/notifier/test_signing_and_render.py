from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from notifier.domain.render import Renderer, RenderError
from notifier.domain.signing import webhook_headers

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def independent_verify(
    secret: str, headers: dict[str, str], body: bytes, now: int, tolerance: int = 300
) -> bool:
    """Standard Webhooks verification written from the specification, not from our signer."""
    key = base64.b64decode(secret.split("_", 1)[1])
    timestamp = int(headers["webhook-timestamp"])
    if abs(now - timestamp) > tolerance:
        return False
    content = headers["webhook-id"].encode() + b"." + str(timestamp).encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        sig.split(",", 1)[1] == expected
        for sig in headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    )


def test_webhook_signature_verifies_independently() -> None:
    body = b'{"customer_id":"c-1"}'
    headers = webhook_headers(SECRET, "msg_1", 1_760_000_000, body)
    assert independent_verify(SECRET, headers, body, now=1_760_000_010)


def test_tampered_body_or_stale_timestamp_fails() -> None:
    body = b'{"customer_id":"c-1"}'
    headers = webhook_headers(SECRET, "msg_1", 1_760_000_000, body)
    assert not independent_verify(SECRET, headers, b'{"customer_id":"c-2"}', now=1_760_000_010)
    assert not independent_verify(SECRET, headers, body, now=1_760_000_000 + 3600)


@pytest.mark.parametrize(
    "variant", ["discount_30_3_months", "free_upgrade_1_month", "premium_feature_included"]
)
def test_offer_email_renders_every_variant(variant: str) -> None:
    email = Renderer().email(
        "retention_offer/offer",
        {
            "first_name": "Ana",
            "plan": "pro",
            "variant": variant,
            "offer": {"discount_pct": 30, "discount_months": 3, "upgrade_months": 1},
            "offer_url": "http://x/t/click/tok",
            "open_url": "http://x/t/open/tok",
            "unsubscribe_url": "http://x/u/tok",
        },
    )
    assert email.subject.startswith("Ana,")
    assert "http://x/t/click/tok" in email.text and "http://x/t/click/tok" in email.html
    assert ("30%" in email.text) == (variant == "discount_30_3_months")


def test_html_escapes_customer_fields() -> None:
    email = Renderer().email(
        "retention_offer/offer",
        {
            "first_name": "<script>",
            "plan": "pro",
            "variant": None,
            "offer_url": "u",
            "open_url": "o",
            "unsubscribe_url": "u",
        },
    )
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html


def test_missing_field_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="offer_url"):
        Renderer().email("retention_offer/offer", {"first_name": "A", "plan": "p", "variant": None})
    with pytest.raises(RenderError, match="no_such_template"):
        Renderer().text("no_such_template", {})
