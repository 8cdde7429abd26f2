"""Pure notifier rules: retry schedule, SSRF guard, headers, routing, CSM task bodies, tokens."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest

from common.messages import Notification
from notifier.domain import messages
from notifier.domain.retry import RetryPolicy
from notifier.domain.signing import (
    BadSignature,
    LinkTokens,
    TokenExpired,
    issue_inbox_token,
    verify_inbox_token,
)
from notifier.domain.ssrf import Target, UnsafeUrl, check_target, parse_target

T0 = datetime(2026, 1, 5, tzinfo=UTC)
POLICY = RetryPolicy(
    base=timedelta(seconds=30),
    cap=timedelta(hours=1),
    jitter=0.5,
    max_age=timedelta(hours=24),
)


def n(channel: str = "email", **over: object) -> Notification:
    fields: dict[str, object] = {
        "notification_id": "n-1",
        "customer_id": "c-1",
        "journey_id": "j-1",
        "playbook": "retention_offer",
        "step": "retention_call",
        "channel": channel,
        "template": "retention_offer/retention_call",
        "recipient": "csm",
        "created_at": T0,
        "context": {"owner_csm": "ana@csm.example", "score": {"churn_probability": 0.92}},
        **over,
    }
    return Notification.model_validate(fields)


# -- retries ---------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    assert POLICY.delay(1, 0.0) == timedelta(seconds=15)  # half fixed, half random
    assert POLICY.delay(1, 0.999999) == pytest.approx(timedelta(seconds=30), abs=timedelta(0.001))
    assert POLICY.delay(3, 0.0) == timedelta(seconds=60)
    assert POLICY.delay(30, 0.0) == timedelta(minutes=30)
    assert POLICY.delay(10_000, 0.5) == timedelta(minutes=45)


def test_no_jitter_is_deterministic() -> None:
    fixed = RetryPolicy(timedelta(seconds=1), timedelta(seconds=8), 0.0, timedelta(hours=1))
    assert [fixed.delay(a, 0.7).total_seconds() for a in range(1, 6)] == [1, 2, 4, 8, 8]


def test_gives_up_after_the_max_age() -> None:
    now = T0 + timedelta(hours=23, minutes=50)
    assert POLICY.next_attempt(first_attempt_at=T0, now=now, failed_attempts=20, u=0.0) is None
    due = POLICY.next_attempt(first_attempt_at=T0, now=T0, failed_attempts=1, u=0.0)
    assert due == T0 + timedelta(seconds=15)


def test_a_day_of_retries_is_a_bounded_number_of_attempts() -> None:
    now, attempts = T0, 0
    while (
        due := POLICY.next_attempt(
            first_attempt_at=T0, now=now, failed_attempts=attempts + 1, u=0.5
        )
    ) is not None:
        now, attempts = due, attempts + 1
    assert now <= T0 + timedelta(hours=24)
    assert 25 <= attempts <= 40


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        RetryPolicy(timedelta(seconds=10), timedelta(seconds=1), 0.1, timedelta(hours=1))
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(timedelta(seconds=1), timedelta(seconds=10), 1.5, timedelta(hours=1))


# -- SSRF --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    with pytest.raises(UnsafeUrl, match=kind):
        check_target(Target("https", "hooks.example", 443), [address], allow=())


def test_public_addresses_pass_and_one_bad_address_is_enough_to_refuse() -> None:
    check_target(Target("https", "hooks.example", 443), ["93.184.215.14"], allow=())
    with pytest.raises(UnsafeUrl):
        check_target(Target("https", "x", 443), ["93.184.215.14", "10.0.0.1"], allow=())


def test_allow_list_by_host_port_or_network() -> None:
    local = Target("http", "127.0.0.1", 8090)
    check_target(local, ["127.0.0.1"], allow=["127.0.0.1:8090"])
    check_target(local, ["127.0.0.1"], allow=["127.0.0.0/8"])
    check_target(Target("http", "sinks", 8090), ["172.18.0.5"], allow=["sinks"])
    with pytest.raises(UnsafeUrl):
        check_target(local, ["127.0.0.1"], allow=["127.0.0.1:9999"])


def test_urls_must_be_plain_http() -> None:
    assert parse_target("https://Hooks.Example/x") == Target("https", "hooks.example", 443)
    for bad in ("file:///etc/passwd", "gopher://x", "http://user:pw@x/", "http:///nohost"):
        with pytest.raises(UnsafeUrl):
            parse_target(bad)
    with pytest.raises(UnsafeUrl, match="did not resolve"):
        check_target(Target("https", "nowhere.invalid", 443), [], allow=())


# -- headers, routing, bodies --------------------------------------------------------------


def test_marketing_email_gets_one_click_unsubscribe_and_csm_tasks_do_not() -> None:
    email = n("email", recipient="a@x.example", step="offer", template="retention_offer/offer")
    headers = messages.email_headers(email, "https://n/u/tok")
    assert headers["List-Unsubscribe"] == "<https://n/u/tok>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    transactional = n("email", recipient="a@x", context={"marketing": False})
    assert "List-Unsubscribe" not in messages.email_headers(transactional, "u")
    assert not messages.is_marketing(n("webhook"))
    assert messages.is_marketing(n("in_app", recipient=None))


def test_consent_withheld_in_context() -> None:
    assert messages.withheld_consent(
        n(context={"consent": {"email_marketing": False}}), "email_marketing"
    )
    assert not messages.withheld_consent(n(context={}), "email_marketing")


def test_csm_route_prefers_the_owner_then_the_team() -> None:
    routes = {"csm": 1, "escalation": 2, "csm:ana@csm.example": 3, "team:emea": 4}
    assert messages.route_for(n(), routes) == "csm:ana@csm.example"
    other = n(context={"owner_csm": "bob@csm.example", "team": "emea"})
    assert messages.route_for(other, routes) == "team:emea"
    assert messages.route_for(n(context={}), routes) == "csm"
    assert messages.route_for(n(recipient="escalation"), routes) == "escalation"
    with pytest.raises(messages.NoRoute, match="'nowhere'"):
        messages.route_for(n(recipient="nowhere"), routes)


def test_standard_body_carries_the_explanation() -> None:
    body = messages.csm_task_body(n(priority="high"), "Call Ana")
    assert body["explanation"] == {"churn_probability": 0.92}
    assert body["notification_id"] == "n-1" and body["priority"] == "high"
    assert body["owner_csm"] == "ana@csm.example" and body["title"] == "Call Ana"


def test_slack_body_is_a_slack_message_with_the_why() -> None:
    score = {
        "churn_probability": 0.92,
        "signals": [{"name": "competitor_trial", "value": 1, "threshold": 1}],
        "red_flags": [{"name": "trial_and_search"}],
    }
    body = messages.csm_task_body(n(context={"score": score}), "Call Ana", "slack")
    assert body["text"] == "Call Ana"
    flat = str(body["blocks"])
    assert "92%" in flat and "competitor_trial" in flat and "trial_and_search" in flat
    assert body["tenure"]["explanation"] == score


# -- tokens ---------------------------------------------------------------------------------


NID = "3f2b8c1e-9a4d-5e6f-8a7b-1c2d3e4f5a6b"


def test_link_tokens_name_the_notification_only_and_cannot_be_forged() -> None:
    tokens = LinkTokens([b"k"], purpose="track", max_age_s=3600, now=lambda: 1_760_000_000)
    token = tokens.issue(NID)
    assert tokens.verify(token) == NID
    value, timestamp, signature = token.split(".")
    issued = int.from_bytes(base64.urlsafe_b64decode(timestamp + "=" * (-len(timestamp) % 4)))
    assert (value, issued) == (NID, 1_760_000_000)  # the id and when, nothing else
    assert len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))) == 32
    other = LinkTokens([b"other"], purpose="track", max_age_s=3600, now=lambda: 1_760_000_000)
    with pytest.raises(BadSignature):
        other.verify(token)
    forged = other.issue("another-id").split(".")[0] + "." + token.split(".", 1)[1]
    for bad in (forged, "garbage", "", token[:-2], token + "x"):
        with pytest.raises(BadSignature):
            tokens.verify(bad)


def test_link_tokens_of_any_notification_id_are_url_safe() -> None:
    tokens = LinkTokens([b"k"], purpose="track", max_age_s=3600)
    for nid in ("n-1", "a.b", "with space/slash?é", "~tilde", "x" * 200):
        token = tokens.issue(nid)
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", token), token
        assert tokens.verify(token) == nid


def test_link_tokens_of_one_purpose_do_not_verify_for_another() -> None:
    track = LinkTokens([b"k"], purpose="track", max_age_s=3600)
    unsubscribe = LinkTokens([b"k"], purpose="unsubscribe", max_age_s=3600)
    with pytest.raises(BadSignature):
        unsubscribe.verify(track.issue(NID))


def test_link_tokens_expire() -> None:
    now = [1_760_000_000.0]
    tokens = LinkTokens([b"k"], purpose="track", max_age_s=3600, now=lambda: now[0])
    token = tokens.issue(NID)
    now[0] += 3600
    assert tokens.verify(token) == NID
    now[0] += 2
    with pytest.raises(TokenExpired, match="expired"):
        tokens.verify(token)


def test_link_keys_rotate_the_newest_signs_every_listed_one_verifies() -> None:
    old = LinkTokens([b"k1"], purpose="track", max_age_s=3600)
    rotated = LinkTokens([b"k1", b"k2"], purpose="track", max_age_s=3600)
    new_only = LinkTokens([b"k2"], purpose="track", max_age_s=3600)
    issued_before = old.issue(NID)
    assert rotated.verify(issued_before) == NID  # links in emails already sent still work
    issued_after = rotated.issue(NID)
    assert new_only.verify(issued_after) == NID  # signed with the newest key
    with pytest.raises(BadSignature):
        old.verify(issued_after)
    with pytest.raises(BadSignature):
        new_only.verify(issued_before)  # once the old key is dropped


def test_inbox_token_round_trip_and_refusals() -> None:
    key = b"shared"
    token = issue_inbox_token("acme.42", 1_000_100, key)
    assert verify_inbox_token(token, key, now=1_000_000, max_ttl_s=3600) == "acme.42"
    with pytest.raises(BadSignature, match="expired"):
        verify_inbox_token(token, key, now=1_000_100, max_ttl_s=3600)
    with pytest.raises(BadSignature, match="mismatch"):
        verify_inbox_token(token, b"other", now=1_000_000, max_ttl_s=3600)
    with pytest.raises(BadSignature, match="more than"):
        verify_inbox_token(token, key, now=1_000_000, max_ttl_s=10)
    head, _, mac = token.rpartition(".")
    other_customer = issue_inbox_token("acme.43", 1_000_100, key).rpartition(".")[0]
    with pytest.raises(BadSignature, match="mismatch"):
        verify_inbox_token(f"{other_customer}.{mac}", key, now=1_000_000, max_ttl_s=3600)
    longer = head.rsplit(".", 1)[0] + ".1000200." + mac
    with pytest.raises(BadSignature, match="mismatch"):
        verify_inbox_token(longer, key, now=1_000_000, max_ttl_s=3600)
    for garbage in ("", "a.b", "a.b.c.d", "a.b.!!"):
        with pytest.raises(BadSignature):
            verify_inbox_token(garbage, key, now=1_000_000, max_ttl_s=3600)


def test_reply_addresses_are_signed_short_and_case_tolerant() -> None:
    from notifier.domain.signing import reply_address, verify_reply_address

    nid = "3f2b8c1e-9a4d-5e6f-8a7b-1c2d3e4f5a6b"  # uuid5, like the orchestrator's
    address = reply_address(nid, b"k", "reply.example")
    assert address is not None and address.endswith("@reply.example")
    assert len(address.split("@")[0]) <= 64
    assert verify_reply_address(address, [b"k"]) == nid
    assert verify_reply_address(f"<{address.upper()}>".lower(), [b"k"]) == nid
    assert verify_reply_address(address, [b"old", b"k"]) == nid  # key rotation
    with pytest.raises(BadSignature):
        verify_reply_address(address, [b"other"])
    with pytest.raises(BadSignature):
        verify_reply_address(address.replace(nid, nid[:-1] + "c"), [b"k"])
    assert reply_address("x" * 60, b"k", "reply.example") is None  # would not fit


def test_message_ids_are_one_per_notification_on_the_given_domain() -> None:
    email = n("email", notification_id="0b6e7c1e-6a43-5b1c-9d2e-1f3a4b5c6d7e")
    headers = messages.email_headers(email, "https://n/u/tok", message_id_domain="mail.example.org")
    assert headers["Message-ID"] == "<0b6e7c1e-6a43-5b1c-9d2e-1f3a4b5c6d7e@mail.example.org>"
    odd = messages.message_id("has space@and<angle>", "mail.example.org")
    assert odd.startswith("<") and odd.endswith("@mail.example.org>")
    assert " " not in odd and odd.count("@") == 1 and len(odd) == 64 + len("<@mail.example.org>")
