"""The delivery use cases on the in-memory fakes: what happens to one notification.

No network and no database: ``notifier.adapters.memory`` stands in for SMTP, webhooks,
the delivery log, the suppression list and the inbox, ``FakePublisher`` for Kafka and
``FakeClock`` for the shared clock. The same functions run in production
(``entrypoints/deliver.py`` binds them to the real adapters).
"""

from __future__ import annotations

import typing
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from common.clock import FakeClock
from common.kafka import DeadLetters, FakePublisher, PublishError
from common.messages import Channel, Notification
from common.settings import CommonSettings
from notifier.adapters.memory import (
    FakeMailer,
    FakeWebhooks,
    MemoryDeliveryLog,
    MemoryInbox,
    MemorySuppressions,
)
from notifier.domain.render import Renderer
from notifier.errors import (
    Bounced,
    NotifierError,
    OutcomeUnknown,
    PermanentSendError,
    SendError,
)
from notifier.service_layer import delivery
from notifier.service_layer.channels import CHANNELS
from notifier.service_layer.context import Dependencies
from notifier.settings import NotifierSettings

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PREFIX = "u."


def settings(**over: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "common": CommonSettings(topic_prefix=PREFIX),
        "public_url": "https://notifier.example",
        "link_secret": "unit-link-secret",
        "webhook_secret": "whsec_" + "A" * 32,
        "webhook_csm_url": "https://hooks.example/csm",
        "webhook_escalation_url": "https://hooks.example/escalation",
        "retry_base_s": 60,
        "retry_cap_s": 3600,
        "retry_max_age_s": 86_400,
        "sending_lease_s": 1,
        **over,
    }
    return NotifierSettings(**values)


class World:
    """The fakes and the dependencies built on them."""

    def __init__(self, **over: Any) -> None:
        self.clock = FakeClock(START)
        self.mailer = FakeMailer()
        self.webhooks = FakeWebhooks()
        self.suppressions = MemorySuppressions()
        self.log = MemoryDeliveryLog(self.suppressions)
        self.inbox = MemoryInbox()
        self.publisher = FakePublisher(prefix=PREFIX)
        self.deps = Dependencies(
            settings=settings(**over),
            log=self.log,
            mailer=self.mailer,
            webhooks=self.webhooks,
            renderer=Renderer(),
            publisher=self.publisher,
            clock=self.clock,
            suppressions=self.suppressions,
            inbox=self.inbox,
            dead_letters=DeadLetters(self.publisher, consumer_name="unit"),
            uniform=lambda: 0.0,
        )

    def outcomes(self, n: Notification) -> list[str]:
        """The statuses published on ``deliveries`` for ``n``, in order."""
        return [
            orjson.loads(r.value)["status"]
            for r in self.publisher.records
            if r.topic == f"{PREFIX}deliveries" and r.key == n.customer_id
        ]

    def dead_letters(self) -> list[dict[str, bytes]]:
        return [
            dict(r.headers)
            for r in self.publisher.records
            if r.topic == f"{PREFIX}notifications.dlq"
        ]


# The offers of the shipped playbooks' steps, as the orchestrator sends them.
OFFERS: dict[str, dict[str, Any]] = {
    "email": {"discount_pct": 30, "discount_months": 3, "upgrade_months": 1},
    "webhook": {},
    "in_app": {"premium_days": 7},
}


def notification(channel: Channel = "email", **over: Any) -> Notification:
    nid = str(uuid.uuid4())
    playbook, step = {
        "email": ("retention_offer", "offer"),
        "webhook": ("retention_offer", "retention_call"),
        "in_app": ("re_engagement", "premium_trial"),
    }[channel]
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
        **over,
    }
    return Notification.model_validate(fields)


def raw(n: Notification) -> bytes:
    return n.model_dump_json().encode()


def test_every_channel_has_exactly_one_handler() -> None:
    assert set(CHANNELS) == set(typing.get_args(Channel))


def test_every_error_of_the_notifier_derives_from_its_base() -> None:
    for error in (Bounced, PermanentSendError, SendError, OutcomeUnknown):
        assert issubclass(error, NotifierError)


# -- sent once ------------------------------------------------------------------------


async def test_an_email_is_sent_once_and_a_replay_sends_nothing() -> None:
    w = World()
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    await delivery.receive(raw(n), deps=w.deps)
    [sent] = w.mailer.sent
    assert sent.to == n.recipient
    assert sent.email.subject
    assert sent.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert await w.log.status(n.notification_id) == "sent"
    assert w.outcomes(n) == ["sent"]


async def test_each_channel_goes_to_its_handler() -> None:
    w = World()
    hook, inbox = notification("webhook", priority="high"), notification("in_app")
    await delivery.receive(raw(hook), deps=w.deps)
    await delivery.receive(raw(inbox), deps=w.deps)
    [posted] = w.webhooks.posted
    assert posted.url == "https://hooks.example/csm"
    assert posted.msg_id == hook.notification_id
    assert orjson.loads(posted.body)["priority"] == "high"
    assert w.inbox.messages[inbox.notification_id].customer_id == inbox.customer_id
    assert w.mailer.sent == []
    assert w.outcomes(hook) == ["sent"] and w.outcomes(inbox) == ["sent"]


async def test_an_invalid_record_raises_for_the_dead_letter_topic() -> None:
    w = World()
    with pytest.raises(ValueError):
        await delivery.receive(b'{"notification_id": 1}', deps=w.deps)
    assert w.log.rows == {}


# -- not sent on purpose ----------------------------------------------------------------


async def test_a_suppressed_address_gets_no_marketing_email_but_its_csm_task_goes_out() -> None:
    w = World()
    n = notification()
    await w.suppressions.add(
        (n.recipient or "").upper(), customer_id=None, reason="unsubscribed", notification_id=None
    )
    task = notification("webhook", customer_id=n.customer_id)
    await delivery.receive(raw(n), deps=w.deps)
    await delivery.receive(raw(task), deps=w.deps)
    assert w.mailer.sent == []
    assert await w.log.status(n.notification_id) == "suppressed"
    assert w.outcomes(n) == ["suppressed", "sent"]  # the email's, then the task's
    assert len(w.webhooks.posted) == 1


async def test_withheld_consent_suppresses_email_and_in_app() -> None:
    w = World()
    email = notification(context={"first_name": "Ana", "consent": {"email_marketing": False}})
    inbox = notification("in_app", context={"consent": {"in_app": False}})
    await delivery.receive(raw(email), deps=w.deps)
    await delivery.receive(raw(inbox), deps=w.deps)
    assert w.mailer.sent == [] and w.inbox.messages == {}
    assert w.outcomes(email) == ["suppressed"] and w.outcomes(inbox) == ["suppressed"]


# -- failures ---------------------------------------------------------------------------


async def test_a_transient_failure_is_retried_on_the_shared_clock_then_sent() -> None:
    w = World()
    w.mailer.failures.append(SendError("SMTP 421: try later"))
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    assert await w.log.status(n.notification_id) == "retrying"
    assert w.outcomes(n) == []
    # base 60 s, half of it jitter drawn as 0: due 30 s later, not before.
    w.clock.advance(timedelta(seconds=29))
    assert await delivery.retry_due(deps=w.deps) == 0
    w.clock.advance(timedelta(seconds=2))
    assert await delivery.retry_due(deps=w.deps) == 1
    assert len(w.mailer.sent) == 1
    assert w.log.rows[n.notification_id].attempts == 2
    assert w.outcomes(n) == ["sent"]


async def test_retries_stop_after_the_maximum_age_with_a_dead_letter() -> None:
    w = World()
    w.webhooks.failures.extend(SendError("HTTP 500") for _ in range(100))
    n = notification("webhook")
    await delivery.receive(raw(n), deps=w.deps)
    while await w.log.status(n.notification_id) == "retrying":
        w.clock.advance(timedelta(hours=1))
        await delivery.retry_due(deps=w.deps)
        assert w.clock.now() - START < timedelta(hours=30)
    assert await w.log.status(n.notification_id) == "dead"
    assert 10 <= w.webhooks.attempts <= 40
    assert w.outcomes(n) == ["failed"]
    [headers] = w.dead_letters()
    assert headers["dlq.reason"] == b"expired"
    assert (
        headers["dlq.error"].startswith(b"expired: gave up after")
        and b"HTTP 500" in (headers["dlq.error"])
    )


@pytest.mark.parametrize(
    ("error", "status", "outcome", "reason"),
    [
        (Bounced("SMTP 550: no such user"), "bounced", "bounced", None),
        (PermanentSendError("webhook refused: private address"), "dead", "failed", b"permanent"),
    ],
)
async def test_a_permanent_refusal_is_final(
    error: SendError, status: str, outcome: str, reason: bytes | None
) -> None:
    w = World()
    w.mailer.failures.append(error)
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    w.clock.advance(timedelta(days=2))
    assert await delivery.retry_due(deps=w.deps) == 0  # never tried again
    assert await w.log.status(n.notification_id) == status
    assert w.outcomes(n) == [outcome]
    assert [h["dlq.reason"] for h in w.dead_letters()] == ([reason] if reason else [])


async def test_a_broken_template_or_a_missing_route_is_dead_lettered_as_render() -> None:
    w = World()
    unknown = notification(template="retention_offer/no_such_step")
    unrouted = notification("webhook", recipient="team:nowhere")
    await delivery.receive(raw(unknown), deps=w.deps)
    await delivery.receive(raw(unrouted), deps=w.deps)
    assert [h["dlq.reason"] for h in w.dead_letters()] == [b"render", b"render"]
    assert w.outcomes(unknown) == ["failed"] and w.outcomes(unrouted) == ["failed"]


async def test_an_offer_the_template_states_and_the_notification_lacks_is_named() -> None:
    """Validation keeps shipped playbooks from it; a record that does it anyway is
    dead-lettered naming the field, never sent with a blank or a stale figure."""
    w = World()
    n = notification(
        playbook="cross_sell",
        step="bundle_offer",
        template="cross_sell/bundle_offer",
        context={"first_name": "Ana", "offer": {"pct": 20}},
    )
    await delivery.receive(raw(n), deps=w.deps)
    [headers] = w.dead_letters()
    assert headers["dlq.reason"] == b"render"
    assert b"reads offer.discount_pct, which the notification's offer" in headers["dlq.error"]
    assert w.mailer.sent == [] and w.outcomes(n) == ["failed"]


# -- an email the mail server never answered ------------------------------------------------

NO_REPLY = "SMTP: no reply to DATA (SMTPReadTimeoutError: Timed out waiting for server response)"


async def test_a_marketing_email_without_an_answer_is_unknown_and_never_retried() -> None:
    w = World()
    w.mailer.failures.append(OutcomeUnknown(NO_REPLY))
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    assert await w.log.status(n.notification_id) == "unknown"
    w.clock.advance(timedelta(days=2))
    w.log.advance(timedelta(days=2))
    assert await delivery.retry_due(deps=w.deps) == 0
    assert w.mailer.sent == []
    assert w.outcomes(n) == ["unknown"]
    detail = w.log.rows[n.notification_id].detail or ""
    assert "never answered" in detail and "SMTPReadTimeoutError" in detail


@pytest.mark.parametrize(
    ("policy", "marketing", "resent"),
    [
        ("transactional", False, True),
        ("transactional", True, False),
        ("always", True, True),
        ("never", False, False),
    ],
)
async def test_an_email_without_an_answer_is_sent_again_only_where_the_policy_says(
    policy: str, marketing: bool, resent: bool
) -> None:
    w = World(email_resend_after_crash=policy)
    w.mailer.failures.append(OutcomeUnknown(NO_REPLY))
    n = notification()
    n = n.model_copy(update={"context": {**n.context, "marketing": marketing}})
    await delivery.receive(raw(n), deps=w.deps)
    w.clock.advance(timedelta(hours=1))
    w.log.advance(timedelta(hours=1))
    await delivery.retry_due(deps=w.deps)
    assert len(w.mailer.sent) == (1 if resent else 0)
    assert w.outcomes(n) == (["sent"] if resent else ["unknown"])


# -- crashes and lost publishes -----------------------------------------------------------


async def test_a_marketing_email_handed_over_when_its_worker_died_is_unknown_not_resent() -> None:
    w = World()
    n = notification()
    # A worker claimed it and marked it handed, then died before logging the answer.
    await w.log.claim(
        notification_id=n.notification_id,
        customer_id=n.customer_id,
        channel="email",
        payload=raw(n),
        now=START,
    )
    await w.log.handed(n.notification_id)
    w.log.advance(timedelta(seconds=2))  # past the sending lease
    assert await delivery.retry_due(deps=w.deps) == 1
    assert w.mailer.sent == []
    assert await w.log.status(n.notification_id) == "unknown"
    assert w.outcomes(n) == ["unknown"]


async def test_an_outcome_whose_publish_failed_is_published_later_without_a_resend() -> None:
    w = World()

    class Down(FakePublisher):
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise PublishError("broker unreachable")

    n = notification()
    down = replace(w.deps, publisher=Down(prefix=PREFIX))
    with pytest.raises(PublishError):
        await delivery.receive(raw(n), deps=down)
    assert len(w.mailer.sent) == 1
    assert await w.log.status(n.notification_id) == "sent"  # logged, not reported
    w.log.advance(timedelta(seconds=2))
    assert await delivery.retry_due(deps=w.deps) == 0  # nothing to send again
    assert await delivery.report_unreported(deps=w.deps) == 1
    assert await delivery.report_unreported(deps=w.deps) == 0
    assert w.outcomes(n) == ["sent"]
    assert len(w.mailer.sent) == 1


# -- a dead letter replayed (tenure dlq replay) ---------------------------------------------


async def test_a_notification_given_up_on_and_replayed_is_sent_once() -> None:
    w = World()
    w.mailer.failures.append(PermanentSendError("SMTP 554: policy"))  # given up on
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    assert await w.log.status(n.notification_id) == "dead"
    assert [h["dlq.reason"] for h in w.dead_letters()] == [b"permanent"]
    await delivery.receive(raw(n), deps=w.deps)  # redelivered, not replayed: nothing
    assert w.mailer.sent == []
    await delivery.receive(raw(n), deps=w.deps, replayed=True)
    await delivery.receive(raw(n), deps=w.deps, replayed=True)  # replayed twice: once
    assert len(w.mailer.sent) == 1
    assert await w.log.status(n.notification_id) == "sent"


@pytest.mark.parametrize("status", ["sent", "unknown", "sending", "retrying", "bounced"])
async def test_a_replay_never_sends_what_was_or_may_have_been_sent(status: str) -> None:
    w = World()
    n = notification()
    await delivery.receive(raw(n), deps=w.deps)
    sent = len(w.mailer.sent)
    w.log.rows[n.notification_id].status = status
    await delivery.receive(raw(n), deps=w.deps, replayed=True)
    assert len(w.mailer.sent) == sent
    assert await w.log.status(n.notification_id) == status
