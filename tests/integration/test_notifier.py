"""The notifier on the real SMTP sink, webhook receiver, PostgreSQL and Kafka.

Emails arrive with their parts and RFC 8058 headers; the one-click unsubscribe works
with a POST exactly as RFC 8058 describes and is honoured afterwards; webhooks verify
with an independent Standard Webhooks implementation; failures are retried on the
shared clock or dead-lettered with their reason; a notification replayed three times
through Kafka is delivered once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.utils
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import (
    DeadLetters,
    KafkaPublisher,
    PublishError,
    Record,
    ensure_topics,
    make_consumer,
    read_topic,
    replay_dead_letters,
)
from common.messages import Delivery, Notification
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, topic_name
from devstack.stack import Stack
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox
from notifier.adapters.mailer import SmtpMailer
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain.render import Renderer
from notifier.domain.signing import webhook_headers
from notifier.entrypoints.api import create_api
from notifier.entrypoints.deliver import Deliverer, consume
from notifier.links import Links
from notifier.settings import NotifierSettings

SECRET = "whsec_" + base64.b64encode(b"integration-key-0123456789").decode()
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PUBLIC_URL = "https://notifier.tenure.example"
INBOUND = "it-inbound-secret-0123456789"


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier")


@pytest.fixture(scope="module")
async def common(database_url: str, common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-notif-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES, Topic.NOTIFICATIONS])
    return common


def notifier_settings(stack: Stack, common: CommonSettings, **over: Any) -> NotifierSettings:
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    values: dict[str, Any] = {
        "common": common,
        "smtp_port": stack.ports.smtp,
        "public_url": PUBLIC_URL,
        "link_secret": "it-link-secret",
        "webhook_secret": SECRET,
        "webhook_csm_url": f"{hooks}/it-csm",
        "webhook_escalation_url": f"{hooks}/it-escalation",
        "webhook_allow_hosts": (f"127.0.0.1:{stack.ports.webhooks}",),
        "retry_base_s": 60,
        "retry_cap_s": 3600,
        "retry_max_age_s": 86_400,
        "sending_lease_s": 1,
        **over,
    }
    return NotifierSettings(**values)


@pytest.fixture(scope="module")
async def deliverer(stack: Stack, common: CommonSettings) -> AsyncIterator[Deliverer]:
    settings = notifier_settings(stack, common)
    engine = create_engine(common.database_url)
    async with (
        vetted_client(allow=settings.webhook_allow_hosts, timeout_s=10, max_connections=4) as http,
        KafkaPublisher(common, client_id="it") as publisher,
    ):
        log = DeliveryLog(engine)
        yield Deliverer(
            settings=settings,
            log=log,
            mailer=SmtpMailer(settings),
            webhooks=WebhookSender(http, SECRET, allow=settings.webhook_allow_hosts),
            renderer=Renderer(),
            publisher=publisher,
            clock=FakeClock(START),
            suppressions=Suppressions(engine),
            inbox=Inbox(engine),
            dead_letters=DeadLetters(publisher, consumer_name="it-notifier"),
            uniform=lambda: 0.0,
        )
        await log.aclose()
    await engine.dispose()


def with_settings(d: Deliverer, **over: Any) -> Deliverer:
    """The same deliverer with other settings (and the adapters that read them)."""
    settings = NotifierSettings(**{**dict(d.settings), **over})
    return replace(d, settings=settings, mailer=SmtpMailer(settings))


# The offers of the shipped playbooks' steps, as the orchestrator sends them.
OFFERS: dict[str, dict[str, Any]] = {
    "email": {"discount_pct": 30, "discount_months": 3, "upgrade_months": 1},
    "webhook": {},
    "in_app": {"premium_days": 7},
}


def notification(channel: str = "email", **over: Any) -> Notification:
    nid = str(uuid.uuid4())
    templates = {
        "email": ("retention_offer", "offer"),
        "webhook": ("retention_offer", "retention_call"),
        "in_app": ("re_engagement", "premium_trial"),
    }
    playbook, step = templates[channel]
    fields: dict[str, Any] = {
        "notification_id": nid,
        "customer_id": f"c-{nid[:8]}",
        "journey_id": f"j-{nid[:8]}",
        "playbook": playbook,
        "step": step,
        "channel": channel,
        "template": f"{playbook}/{step}",
        "variant": "discount_30_3_months",
        "recipient": {"email": f"{nid}@example.com", "webhook": "csm", "in_app": None}[channel],
        "created_at": START,
        "context": {
            "first_name": "Ana",
            "email": f"{nid}@example.com",
            "plan": "pro",
            "owner_csm": "csm7@example.com",
            "score": {"churn_probability": 0.9, "signals": [], "red_flags": []},
            "offer": OFFERS[channel],
        },
    }
    fields.update(over)
    return Notification.model_validate(fields)


def as_record(n: Notification, prefix: str = "t.") -> Record:
    return Record(
        topic=f"{prefix}notifications",
        partition=0,
        offset=0,
        key=n.customer_id,
        value=n.model_dump_json().encode(),
        headers=(),
        timestamp_ms=0,
    )


def mails_to(stack: Stack, address: str) -> list[Message]:
    out = []
    for path in sorted(stack.mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes())
        if message["To"] == address:
            out.append(message)
    return out


def hooks_for(stack: Stack, notification_id: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(stack.webhook_dir.glob("*.json")):
        request = json.loads(path.read_text())
        try:
            body = json.loads(request["body"])
        except json.JSONDecodeError:
            continue
        task = body.get("tenure", body)
        if task.get("notification_id") == notification_id:
            found.append(request)
    return found


def part(message: Message, kind: str) -> str:
    for p in message.walk():
        if p.get_content_type() == kind:
            payload = p.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError(f"no {kind} part")


async def find_records(
    common: CommonSettings, topic: str, want: set[str], *, timeout_s: float = 15
) -> list[tuple[Record, dict[str, Any]]]:
    """Records of ``topic`` (from the start) whose notification id is in ``want``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records, _ = await read_topic(common, topic, timeout_s=timeout_s)
        values = [(r, json.loads(r.value)) for r in records]
        found = [(r, v) for r, v in values if v.get("notification_id") in want]
        if {v["notification_id"] for _, v in found} >= want or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def outcomes(common: CommonSettings, *ids: str) -> dict[str, list[str]]:
    """Delivery statuses published for each notification id, in order."""
    found = await find_records(common, topic_name(Topic.DELIVERIES, common.topic_prefix), set(ids))
    by_id: dict[str, list[str]] = {i: [] for i in ids}
    for _, value in found:
        by_id[Delivery.model_validate(value).notification_id].append(value["status"])
    return by_id


async def dead_letters(common: CommonSettings, *ids: str) -> dict[str, str]:
    """The ``dlq.error`` of each notification id on the notifications dead-letter topic."""
    topic = dlq_name(topic_name(Topic.NOTIFICATIONS, common.topic_prefix))
    found = await find_records(common, topic, set(ids))
    return {v["notification_id"]: dict(r.headers)["dlq.error"].decode() for r, v in found}


def counter(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get())


# -- email -------------------------------------------------------------------------------


async def test_email_has_both_parts_one_click_headers_and_tracked_links(
    deliverer: Deliverer, stack: Stack
) -> None:
    n = notification()
    await deliverer.handle(as_record(n))
    [message] = mails_to(stack, n.recipient or "")
    assert message["X-Tenure-Notification-Id"] == n.notification_id
    assert message["Subject"] == "Ana, an offer to keep your pro plan working for you"
    kinds = sorted(p.get_content_type() for p in message.walk() if not p.is_multipart())
    assert kinds == ["text/html", "text/plain"]
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{PUBLIC_URL}/u/") and unsubscribe.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = part(message, "text/plain"), part(message, "text/html")
    assert "30% off" in text and "Hi Ana," in text
    assert "/t/click/" in text and "/t/click/" in html and "/t/open/" in html
    assert unsubscribe[1:-1] in text
    assert await deliverer.log.status(n.notification_id) == "sent"


async def test_every_email_has_a_date_and_a_message_id_on_the_sending_domain(
    deliverer: Deliverer, stack: Stack
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    default = notification()
    await deliverer.handle(as_record(default))
    configured = notification()
    await with_settings(deliverer, message_id_domain="mail.example.org").handle(
        as_record(configured)
    )
    after = datetime.now(UTC)
    [first] = mails_to(stack, default.recipient or "")
    [second] = mails_to(stack, configured.recipient or "")
    for message in (first, second):
        assert len(message.get_all("Date") or []) == 1
        assert before <= email.utils.parsedate_to_datetime(message["Date"]) <= after
        assert len(message.get_all("Message-ID") or []) == 1
    # The sending domain is mail_from's (Tenure <success@tenure.example>) unless configured.
    assert first["Message-ID"] == f"<{default.notification_id}@tenure.example>"
    assert second["Message-ID"] == f"<{configured.notification_id}@mail.example.org>"


async def test_one_click_unsubscribe_by_rfc_8058_post_is_honoured(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    first = notification()
    await deliverer.handle(as_record(first))
    [message] = mails_to(stack, first.recipient or "")
    url = message["List-Unsubscribe"].strip("<>")
    path = url.removeprefix(deliverer.settings.public_url)
    app = create_api(
        deliverer.settings,
        deliverer.publisher,
        deliverer.clock,
        suppressions=deliverer.suppressions,
        inbox=deliverer.inbox,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as client:
        # A GET (a link scanner, a preview) shows a page and unsubscribes nobody.
        page = await client.get(path)
        assert page.status_code == 200 and 'name="List-Unsubscribe"' in page.text
        assert await deliverer.suppressions.reason(first.recipient or "") is None
        # Without the RFC 8058 body, nothing happens.
        assert (await client.post(path, data={})).status_code == 400
        assert (await client.post(path[:-3] + "AAA", data=ONE_CLICK)).status_code == 404
        # Exactly what a mailbox provider sends (RFC 8058 section 3.1).
        answer = await client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
        # multipart/form-data, which RFC 8058 recommends, works as well (and is idempotent).
        again = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
        assert again.status_code == 200
    assert await deliverer.suppressions.reason((first.recipient or "").upper()) == "unsubscribed"

    later = notification(
        notification_id=str(uuid.uuid4()),
        customer_id=first.customer_id,
        recipient=first.recipient,
        playbook="win_back",
        step="offer",
        template="win_back/offer",
    )
    task = notification("webhook", customer_id=first.customer_id)
    await deliverer.handle(as_record(later))
    await deliverer.handle(as_record(task))
    assert len(mails_to(stack, first.recipient or "")) == 1  # no marketing email since
    assert await deliverer.log.status(later.notification_id) == "suppressed"
    assert len(hooks_for(stack, task.notification_id)) == 1  # CSM tasks are not marketing
    published = await outcomes(common, first.notification_id, later.notification_id)
    assert published[first.notification_id] == ["sent", "unsubscribed", "unsubscribed"]
    assert published[later.notification_id] == ["suppressed"]


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def link_tokens(message: Message) -> dict[str, str]:
    """The click, open and unsubscribe tokens of an email."""
    html = part(message, "text/html")
    found = {
        kind: re.search(rf"{re.escape(PUBLIC_URL)}{path}([A-Za-z0-9._-]+)", html)
        for kind, path in (("click", "/t/click/"), ("open", "/t/open/"), ("unsubscribe", "/u/"))
    }
    assert all(found.values()), found
    return {kind: match.group(1) for kind, match in found.items() if match}


def readable(token: str) -> str:
    """Everything a reader can get out of a token: each part as is and base64-decoded."""
    out = [token]
    for piece in token.split("."):
        with contextlib.suppress(ValueError):
            out.append(base64.urlsafe_b64decode(piece + "=" * (-len(piece) % 4)).decode("latin-1"))
    return " ".join(out)


async def test_links_are_opaque_expire_and_survive_a_key_rotation(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    n = notification()
    await deliverer.handle(as_record(n))
    [message] = mails_to(stack, n.recipient or "")
    tokens = link_tokens(message)
    for token in tokens.values():
        text = readable(token)
        for secret in (n.customer_id, n.recipient or "", n.journey_id, n.playbook):
            assert secret not in text, (secret, text)

    def api(**over: Any) -> httpx.AsyncClient:
        d = with_settings(deliverer, **over) if over else deliverer
        app = create_api(
            d.settings, d.publisher, d.clock, suppressions=d.suppressions, inbox=d.inbox, log=d.log
        )
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n")

    # Followed: the customer, journey and address come from the delivery log.
    async with api() as client:
        assert (await client.get(f"/t/click/{tokens['click']}")).status_code == 302
        assert (await client.get(f"/t/open/{tokens['open']}")).status_code == 200
        page = await client.get(f"/u/{tokens['unsubscribe']}")
        assert page.status_code == 200 and (n.recipient or "") in page.text
        assert (await client.get(f"/t/click/{tokens['unsubscribe']}")).status_code == 404
    # Rotated: a new key signs, the old one still verifies the links already sent...
    async with api(link_secret="it-new-key", link_previous_secrets=("it-link-secret",)) as client:
        assert (await client.get(f"/t/click/{tokens['click']}")).status_code == 302
        assert (await client.get(f"/u/{tokens['unsubscribe']}")).status_code == 200
    # ...until it is dropped: then they are unknown links.
    async with api(link_secret="it-new-key") as client:
        assert (await client.get(f"/t/click/{tokens['click']}")).status_code == 404
        assert (await client.get(f"/u/{tokens['unsubscribe']}")).status_code == 404
    # Expired: the click still leads to the offer but is not recorded; unsubscribe says so.
    year_ago = time.time() - 366 * 86_400
    old = Links(deliverer.settings, now=lambda: year_ago).for_notification(n)
    async with api() as client:
        click = await client.get(old.offer_url.removeprefix(PUBLIC_URL))
        assert click.status_code == 302
        assert click.headers["location"] == deliverer.settings.landing_url
        expired = await client.post(old.unsubscribe_url.removeprefix(PUBLIC_URL), data=ONE_CLICK)
        assert expired.status_code == 410 and "expired" in expired.text
    assert await deliverer.suppressions.reason(n.recipient or "") is None

    published = await find_records(
        common, topic_name(Topic.DELIVERIES, common.topic_prefix), {n.notification_id}
    )
    found = [Delivery.model_validate(value) for _, value in published]
    assert [d.status for d in found] == ["sent", "clicked", "opened", "clicked"]
    for d in found:
        assert (d.customer_id, d.journey_id, d.playbook, d.step, d.channel) == (
            n.customer_id,
            n.journey_id,
            n.playbook,
            n.step,
            "email",
        )


async def test_a_reply_to_the_signed_reply_address_reports_replied(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    d = with_settings(deliverer, reply_domain="reply.tenure.example", inbound_secret=INBOUND)
    n = notification()
    await d.handle(as_record(n))
    [message] = mails_to(stack, n.recipient or "")
    reply_to = message["Reply-To"]
    assert reply_to.startswith(f"reply+{n.notification_id}.")
    assert reply_to.endswith("@reply.tenure.example")
    app = create_api(
        d.settings, d.publisher, d.clock, suppressions=d.suppressions, inbox=d.inbox, log=d.log
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://notifier",
        auth=("tenure", INBOUND),  # HTTP Basic, as in the URL given to the mail service
    ) as client:
        # As an inbound-mail webhook posts it: form fields, the address inside a header.
        answer = await client.post(
            "/v1/inbound/reply", data={"to": f"Tenure <{reply_to}>", "from": n.recipient}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"replied": [n.notification_id]}
        local, domain = reply_to.split("@")
        forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"  # another MAC
        refused = await client.post("/v1/inbound/reply", json={"recipient": forged})
        assert refused.status_code == 404
    published = await outcomes(common, n.notification_id)
    assert published[n.notification_id] == ["sent", "replied"]


async def test_consent_withheld_in_context_sends_nothing(
    deliverer: Deliverer, stack: Stack
) -> None:
    n = notification()
    n = n.model_copy(update={"context": {**n.context, "consent": {"email_marketing": False}}})
    await deliverer.handle(as_record(n))
    assert mails_to(stack, n.recipient or "") == []
    assert await deliverer.log.status(n.notification_id) == "suppressed"


async def test_a_refused_recipient_is_a_bounce_not_a_retry(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    n = notification(recipient=f"bounce-{uuid.uuid4().hex[:6]}@example.com")
    await deliverer.handle(as_record(n))
    assert await deliverer.log.status(n.notification_id) == "bounced"
    assert (await outcomes(common, n.notification_id))[n.notification_id] == ["bounced"]


# -- failures: retried on the shared clock or dead-lettered, never lost ----------------------


async def test_smtp_down_is_retried_with_backoff_and_delivered_once_when_back(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    clock = FakeClock(START)
    down = replace(with_settings(deliverer, smtp_port=1), clock=clock)
    up = replace(deliverer, clock=clock)
    n = notification()
    retries = counter(metrics.RETRIES_SCHEDULED, channel="email")
    await down.handle(as_record(n))
    assert await down.log.status(n.notification_id) == "retrying"
    assert counter(metrics.RETRIES_SCHEDULED, channel="email") == retries + 1
    # Not due yet: base 60 s, jitter drawn as 0 -> 30 s; nothing happens before.
    clock.advance(timedelta(seconds=29))
    await up.retry_due()
    assert mails_to(stack, n.recipient or "") == []
    # Still down at the first retry: the next one is further away (60 s).
    clock.advance(timedelta(seconds=2))
    await down.retry_due()
    assert await down.log.status(n.notification_id) == "retrying"
    clock.advance(timedelta(seconds=59))
    await up.retry_due()
    assert mails_to(stack, n.recipient or "") == []
    clock.advance(timedelta(seconds=2))
    await up.retry_due()
    assert len(mails_to(stack, n.recipient or "")) == 1
    # A replay of the record afterwards changes nothing.
    await up.handle(as_record(n))
    await up.retry_due()
    assert len(mails_to(stack, n.recipient or "")) == 1
    assert (await outcomes(common, n.notification_id))[n.notification_id] == ["sent"]


async def test_retries_stop_after_a_day_with_a_dead_letter_and_a_metric(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    clock = FakeClock(START)
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    broken = replace(
        with_settings(deliverer, webhook_csm_url=f"{hooks}/status/500/it-always-down"),
        clock=clock,
    )
    n = notification("webhook")
    dead = counter(metrics.DEAD_LETTERS, channel="webhook", reason="expired")
    await broken.handle(as_record(n))
    attempts = 1
    while await broken.log.status(n.notification_id) == "retrying":
        clock.advance(timedelta(hours=1))
        attempts += await broken.retry_due()
        assert clock.now() - START < timedelta(hours=30)
    assert await broken.log.status(n.notification_id) == "dead"
    assert 10 <= attempts <= 40
    assert len(hooks_for(stack, n.notification_id)) == attempts
    assert counter(metrics.DEAD_LETTERS, channel="webhook", reason="expired") == dead + 1
    assert (await outcomes(common, n.notification_id))[n.notification_id] == ["failed"]
    reason = (await dead_letters(common, n.notification_id))[n.notification_id]
    assert reason.startswith("expired: gave up after") and "HTTP 500" in reason


async def test_broken_template_and_missing_field_are_dead_lettered_with_the_reason(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    unknown = notification(template="retention_offer/no_such_step")
    missing = notification()
    missing = missing.model_copy(
        update={"context": {k: v for k, v in missing.context.items() if k != "first_name"}}
    )
    before = counter(metrics.DEAD_LETTERS, channel="email", reason="render")
    await deliverer.handle(as_record(unknown))
    await deliverer.handle(as_record(missing))
    assert counter(metrics.DEAD_LETTERS, channel="email", reason="render") == before + 2
    assert mails_to(stack, unknown.recipient or "") == []
    reasons = await dead_letters(common, unknown.notification_id, missing.notification_id)
    assert "no_such_step" in reasons[unknown.notification_id]
    assert "'first_name' is undefined" in reasons[missing.notification_id]
    published = await outcomes(common, unknown.notification_id, missing.notification_id)
    assert published == {unknown.notification_id: ["failed"], missing.notification_id: ["failed"]}


async def test_a_claim_left_by_a_crashed_worker_is_taken_again(
    deliverer: Deliverer, stack: Stack
) -> None:
    n = notification()
    # As if a worker claimed it and died before sending: the row says 'sending'.
    await deliverer.log.claim(
        notification_id=n.notification_id,
        customer_id=n.customer_id,
        channel="email",
        payload=n.model_dump_json().encode(),
        now=START,
    )
    await deliverer.handle(as_record(n))  # the redelivered record: the claim is held
    assert mails_to(stack, n.recipient or "") == []
    await asyncio.sleep(deliverer.settings.sending_lease_s + 0.2)
    assert await deliverer.retry_due() >= 1
    assert len(mails_to(stack, n.recipient or "")) == 1
    assert await deliverer.log.status(n.notification_id) == "sent"


async def test_an_outcome_whose_publish_failed_is_published_later(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    class Down:
        async def publish(self, *args: object, **kwargs: object) -> None:
            raise PublishError("broker unreachable")

    n = notification()
    broken = replace(deliverer, publisher=Down())  # type: ignore[arg-type]
    with pytest.raises(PublishError):
        await broken.handle(as_record(n))
    assert len(mails_to(stack, n.recipient or "")) == 1
    assert await deliverer.log.status(n.notification_id) == "sent"  # logged, not reported
    await asyncio.sleep(deliverer.settings.sending_lease_s + 0.2)
    assert await deliverer.retry_due() == 0  # nothing to send again
    assert await deliverer.report_unreported() == 1
    assert await deliverer.report_unreported() == 0  # reported now
    assert (await outcomes(common, n.notification_id))[n.notification_id] == ["sent"]
    assert len(mails_to(stack, n.recipient or "")) == 1


# -- endpoint availability ----------------------------------------------------------------


def endpoint_up(channel: str, endpoint: str) -> float | None:
    labels = {"channel": channel, "endpoint": endpoint}
    return REGISTRY.get_sample_value("tenure_notifier_endpoint_up", labels)


async def test_the_mail_server_is_down_while_the_sink_is_stopped_and_up_when_it_is_back(
    deliverer: Deliverer, stack: Stack
) -> None:
    d = replace(deliverer, clock=FakeClock(START))
    server = f"127.0.0.1:{stack.ports.smtp}"
    await d.handle(as_record(notification()))
    assert endpoint_up("email", server) == 1
    stack.stop_service("sinks")
    try:
        n = notification()
        await d.handle(as_record(n))
        assert await d.log.status(n.notification_id) == "retrying"
        assert endpoint_up("email", server) == 0
    finally:
        stack.start_sinks()
    d.clock.advance(timedelta(hours=1))
    assert await d.retry_due() == 1
    assert len(mails_to(stack, n.recipient or "")) == 1
    assert endpoint_up("email", server) == 1


async def test_a_webhook_route_is_down_while_its_endpoint_fails_named_by_the_route(
    deliverer: Deliverer, stack: Stack
) -> None:
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    failing = with_settings(deliverer, webhook_csm_url=f"{hooks}/status/503/it-down")
    await failing.handle(as_record(notification("webhook")))
    assert endpoint_up("webhook", "csm") == 0
    await deliverer.handle(as_record(notification("webhook")))
    assert endpoint_up("webhook", "csm") == 1
    names = {
        s.labels["endpoint"]
        for m in REGISTRY.collect()
        if m.name == "tenure_notifier_endpoint_up"
        for s in m.samples
    }
    assert not any("://" in name for name in names)  # a route's name, never its URL


# -- webhooks ---------------------------------------------------------------------------------


async def test_webhook_verifies_with_an_independent_standard_webhooks_implementation(
    deliverer: Deliverer, stack: Stack
) -> None:
    n = notification("webhook", priority="high")
    await deliverer.handle(as_record(n))
    [hit] = hooks_for(stack, n.notification_id)
    assert hit["path"] == "/it-csm"
    headers = hit["headers"]
    body = hit["body"].encode()
    verified = Webhook(SECRET).verify(body, headers)
    assert verified["notification_id"] == n.notification_id
    assert verified["explanation"]["churn_probability"] == 0.9
    assert verified["priority"] == "high" and verified["owner_csm"] == "csm7@example.com"
    assert headers["webhook-id"] == n.notification_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60

    tampered = body.replace(b"0.9", b"0.1")
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    stale_ts = int(time.time()) - 3600
    stale = webhook_headers(SECRET, n.notification_id, stale_ts, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, stale)
    other_key = "whsec_" + base64.b64encode(b"another-key-0123456789abcd").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other_key).verify(body, headers)


async def test_transient_webhook_errors_are_retried_with_the_same_id(
    deliverer: Deliverer, stack: Stack
) -> None:
    clock = FakeClock(START)
    flaky = f"http://127.0.0.1:{stack.ports.webhooks}/flaky/2/it-{uuid.uuid4().hex[:6]}"
    d = replace(with_settings(deliverer, webhook_escalation_url=flaky), clock=clock)
    n = notification("webhook", recipient="escalation", step="escalation")
    await d.handle(as_record(n))
    for _ in range(2):
        clock.advance(timedelta(hours=1))
        await d.retry_due()
    hits = hooks_for(stack, n.notification_id)
    assert [h["status"] for h in hits] == [503, 503, 200]
    assert {h["headers"]["webhook-id"] for h in hits} == {n.notification_id}
    for hit in hits:
        Webhook(SECRET).verify(hit["body"].encode(), hit["headers"])
    assert await d.log.status(n.notification_id) == "sent"


async def test_routes_per_csm_and_slack_bodies(deliverer: Deliverer, stack: Stack) -> None:
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    d = with_settings(
        deliverer,
        webhook_endpoints={
            "csm:csm7@example.com": {"url": f"{hooks}/it-ana-slack"},
            "team:emea": {"url": f"{hooks}/it-emea"},
        },
        webhook_slack_targets=("csm:csm7@example.com",),
    )
    mine = notification("webhook")
    team = notification("webhook")
    team = team.model_copy(
        update={"context": {**team.context, "owner_csm": "bob@example.com", "team": "emea"}}
    )
    await d.handle(as_record(mine))
    await d.handle(as_record(team))
    [slack] = hooks_for(stack, mine.notification_id)
    [emea] = hooks_for(stack, team.notification_id)
    assert slack["path"] == "/it-ana-slack" and emea["path"] == "/it-emea"
    body = Webhook(SECRET).verify(slack["body"].encode(), slack["headers"])
    assert body["text"].startswith("Retention call: Ana") and body["blocks"]
    assert body["tenure"]["explanation"]["churn_probability"] == 0.9


async def test_private_addresses_are_refused_unless_allowed(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    strict = replace(
        deliverer,
        webhooks=WebhookSender(deliverer.webhooks.client, SECRET, allow=()),
    )
    for url in (
        f"http://127.0.0.1:{stack.ports.webhooks}/it-ssrf",
        f"http://localhost:{stack.ports.webhooks}/it-ssrf",
        "http://169.254.169.254/latest/meta-data/",
    ):
        n = notification("webhook")
        await with_settings(strict, webhook_csm_url=url).handle(as_record(n))
        assert await deliverer.log.status(n.notification_id) == "dead", url
        assert hooks_for(stack, n.notification_id) == []
        reason = (await dead_letters(common, n.notification_id))[n.notification_id]
        assert reason.startswith("permanent: webhook refused") and "address" in reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_a_permanent_failure_not_a_retry(
    deliverer: Deliverer, stack: Stack, common: CommonSettings, status: int
) -> None:
    clock = FakeClock(START)
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    d = replace(
        with_settings(deliverer, webhook_csm_url=f"{hooks}/status/{status}/it-moved"), clock=clock
    )
    n = notification("webhook")
    await d.handle(as_record(n))
    clock.advance(timedelta(hours=2))
    assert await d.retry_due() == 0
    assert await d.log.status(n.notification_id) == "dead"
    assert len(hooks_for(stack, n.notification_id)) == 1  # asked once, never again
    reason = (await dead_letters(common, n.notification_id))[n.notification_id]
    assert reason.startswith(f"permanent: webhook {hooks}/status/{status}/it-moved: HTTP {status}")
    assert "redirect" in reason


async def test_a_notification_given_up_on_is_delivered_once_when_its_dead_letter_is_replayed(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    """``tenure dlq replay notifications`` after the cause is fixed: the record comes back
    from the dead-letter topic through Kafka and is delivered once, however often it is
    replayed (its row was ``dead``; one ``sent`` stays sent)."""
    hooks = f"http://127.0.0.1:{stack.ports.webhooks}"
    prefix = f"it-dlq-{uuid.uuid4().hex[:6]}."  # a dead-letter topic of this test's own
    own = common.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(own, [Topic.NOTIFICATIONS])
    topic = topic_name(Topic.NOTIFICATIONS, prefix)
    n = notification("webhook")
    moved = with_settings(deliverer, common=own, webhook_csm_url=f"{hooks}/status/301/it-moved")
    await moved.handle(as_record(n, prefix))  # a permanent failure: dead-lettered
    assert await moved.log.status(n.notification_id) == "dead"

    # the route fixed (the fixture's deliverer), the dead letter replayed twice
    first = await replay_dead_letters(common, topic)
    again = await replay_dead_letters(common, topic)
    assert (len(first.replayed), len(again.replayed)) == (1, 0)
    consumer = make_consumer(common, [topic], group_id=f"it-dlq-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.create_task(consume(consumer, deliverer, stop=stop))
    try:
        async with asyncio.timeout(30):
            while await deliverer.log.status(n.notification_id) != "sent":
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        await deliverer.handle(  # a second replay of the same record: not sent again
            replace(as_record(n, prefix), headers=(("replayed_from", b"x:0:0"),))
        )
    finally:
        stop.set()
        await loop
        await consumer.stop()
    delivered = [h for h in hooks_for(stack, n.notification_id) if "it-moved" not in h["path"]]
    assert len(delivered) == 1
    assert (await outcomes(common, n.notification_id))[n.notification_id] == ["failed", "sent"]


# -- exactly once in effect -----------------------------------------------------------------


async def test_records_replayed_three_times_through_kafka_are_delivered_once(
    deliverer: Deliverer, stack: Stack, common: CommonSettings
) -> None:
    batch = [notification("email"), notification("webhook"), notification("in_app")]
    batch += [notification("email") for _ in range(3)]
    topic = topic_name(Topic.NOTIFICATIONS, common.topic_prefix)
    async with KafkaPublisher(common, client_id="it-replay") as publisher:
        for _ in range(3):
            for n in batch:
                await publisher.publish(topic, n.customer_id, n)
    consumer = make_consumer(
        common, [Topic.NOTIFICATIONS], group_id=f"it-replay-{uuid.uuid4().hex[:6]}"
    )
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.create_task(consume(consumer, deliverer, stop=stop))
    ids = {n.notification_id for n in batch}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with create_engine(common.database_url).connect() as conn:
                done = await conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM deliveries WHERE notification_id = ANY(:ids) "
                        "AND status = 'sent' AND reported_at IS NOT NULL"
                    ),
                    {"ids": list(ids)},
                )
            if done == len(batch):
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # let the replays of the last records go through too
    finally:
        stop.set()
        await loop
        await consumer.stop()
    for n in batch:
        if n.channel == "email":
            assert len(mails_to(stack, n.recipient or "")) == 1
        elif n.channel == "webhook":
            assert len(hooks_for(stack, n.notification_id)) == 1
        else:
            messages = await deliverer.inbox.list(n.customer_id, limit=10)
            assert [m.notification_id for m in messages] == [n.notification_id]
    published = await outcomes(common, *ids)
    assert all(statuses == ["sent"] for statuses in published.values()), published
