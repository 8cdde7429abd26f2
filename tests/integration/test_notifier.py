"""The notifier's delivery path on the real SMTP sink, webhook receiver, PostgreSQL and Kafka."""

from __future__ import annotations

import base64
import email
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import KafkaPublisher, Record, ensure_topics, make_consumer
from common.messages import Delivery, Notification
from common.settings import CommonSettings
from common.topics import Topic
from devstack.stack import Stack
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.mailer import SmtpMailer
from notifier.adapters.webhooks import WebhookSender
from notifier.domain.render import Renderer
from notifier.entrypoints.deliver import Deliverer
from notifier.settings import NotifierSettings

SECRET = "whsec_" + base64.b64encode(b"integration-key-0123456789").decode()


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier")


@pytest.fixture(scope="module")
async def deliverer(stack: Stack, database_url: str, common_settings: CommonSettings):
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-notif-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES])
    settings = NotifierSettings(
        common=common,
        smtp_port=stack.ports.smtp,
        link_secret="s",
        webhook_secret=SECRET,
        webhook_csm_url=f"http://127.0.0.1:{stack.ports.webhooks}/it-csm",
        webhook_escalation_url=f"http://127.0.0.1:{stack.ports.webhooks}/it-escalation",
    )
    engine = create_engine(database_url)
    async with httpx.AsyncClient() as http, KafkaPublisher(common, client_id="it") as publisher:
        yield Deliverer(
            settings=settings,
            log=DeliveryLog(engine),
            mailer=SmtpMailer(settings),
            webhooks=WebhookSender(http, SECRET),
            renderer=Renderer(),
            publisher=publisher,
            clock=FakeClock(),
        )
    await engine.dispose()


def notification(
    channel: str = "email", recipient: str | None = None, **over: object
) -> Notification:
    nid = str(uuid.uuid4())
    return Notification(
        notification_id=nid,
        customer_id="c-n1",
        journey_id="j-1",
        playbook="retention_offer",
        step="offer" if channel == "email" else "retention_call",
        channel=channel,  # type: ignore[arg-type]
        template="retention_offer/offer"
        if channel == "email"
        else "retention_offer/retention_call",
        variant="discount_30_3_months",
        recipient=recipient or f"{nid}@example.com",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        context={"first_name": "Ana", "plan": "pro", "score": {"churn_probability": 0.9}},
        **over,
    )


def as_record(n: Notification) -> Record:
    return Record(
        topic="notifications",
        partition=0,
        offset=0,
        key=n.customer_id,
        value=n.model_dump_json().encode(),
        headers=(),
        timestamp_ms=0,
    )


def mails_to(stack: Stack, address: str) -> list[email.message.Message]:
    out = []
    for path in stack.mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        if message["To"] == address:
            out.append(message)
    return out


async def test_replayed_notification_is_delivered_once(deliverer: Deliverer, stack: Stack) -> None:
    n = notification()
    for _ in range(3):
        await deliverer.handle(as_record(n))
    [message] = mails_to(stack, n.recipient or "")
    assert message["X-Tenure-Notification-Id"] == n.notification_id
    kinds = sorted(part.get_content_type() for part in message.walk() if not part.is_multipart())
    assert kinds == ["text/html", "text/plain"]


async def test_webhook_is_signed_and_carries_the_explanation(
    deliverer: Deliverer, stack: Stack
) -> None:
    n = notification("webhook", "csm")
    await deliverer.handle(as_record(n))
    await deliverer.handle(as_record(n))
    hits = [json.loads(p.read_text()) for p in stack.webhook_dir.glob("*it-csm.json")]
    mine = [h for h in hits if json.loads(h["body"])["notification_id"] == n.notification_id]
    assert len(mine) == 1
    assert mine[0]["headers"]["webhook-id"] == n.notification_id
    assert json.loads(mine[0]["body"])["explanation"] == {"churn_probability": 0.9}


async def test_outcomes_are_published_and_smtp_failure_is_reported(
    deliverer: Deliverer, stack: Stack
) -> None:
    unreachable = deliverer.settings.model_copy(update={"smtp_port": 1})
    broken = Deliverer(**{**deliverer.__dict__, "mailer": SmtpMailer(unreachable)})
    failed = notification()
    sent = notification()
    await broken.handle(as_record(failed))
    await deliverer.handle(as_record(sent))
    common = deliverer.settings.common
    consumer = make_consumer(common, [Topic.DELIVERIES], group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    outcomes: dict[str, str] = {}
    try:
        for _ in range(20):
            batches = await consumer.getmany(timeout_ms=500)
            for rs in batches.values():
                for r in rs:
                    d = Delivery.model_validate_json(r.value)
                    outcomes[d.notification_id] = d.status
            if failed.notification_id in outcomes and sent.notification_id in outcomes:
                break
    finally:
        await consumer.stop()
    assert outcomes[failed.notification_id] == "failed"
    assert outcomes[sent.notification_id] == "sent"
    # A failed notification is not marked sent: it can be delivered when SMTP is back.
    await deliverer.handle(as_record(failed))
    assert len(mails_to(stack, failed.recipient or "")) == 1
