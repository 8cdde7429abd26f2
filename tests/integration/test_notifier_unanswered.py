"""An email the mail server received but never answered is not sent twice.

The notifier's real delivery path (the deliverer of ``test_notifier``: real Kafka,
PostgreSQL and aiosmtplib) against a real SMTP server (aiosmtpd) that stores each
message, then, by the recipient's local part, never answers the end of DATA (``mute…``:
it waits past the notifier's SMTP time-out) or drops the connection (``drop…``), the
first time for that notification only. Such an email may have been delivered: under
the default policy a marketing one is recorded ``unknown`` and never retried; with
``EMAIL_RESEND_AFTER_CRASH=always`` it is retried and arrives twice, as the operator
chose. A failure before DATA or a definite refusal (``busy…``: 451 to RCPT; ``defer…``:
451 to the end of DATA, not stored) is retried and delivered once.
"""

from __future__ import annotations

import asyncio
import email
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from common.clock import FakeClock
from common.kafka import ensure_topics
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.procs import free_port
from devstack.stack import Stack
from notifier import metrics
from notifier.entrypoints.deliver import Deliverer
from tests.integration.test_notifier import (  # noqa: F401  (deliverer: a fixture)
    START,
    as_record,
    counter,
    deliverer,
    find_records,
    notification,
    with_settings,
)

TIMEOUT_S = 2.0  # the notifier's SMTP time-out here; the server stays silent longer


class Unanswering:
    """aiosmtpd handler: keeps every message it receives (``received``, by notification
    id) and fails the first attempt of each notification as its recipient says."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        self.refused: set[str] = set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("busy") and address not in self.refused:
            self.refused.add(address)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        [to] = envelope.rcpt_tos
        if to.startswith("defer") and to not in self.refused:
            self.refused.add(to)
            return "451 4.3.0 Local error, not stored"
        nid = email.message_from_bytes(envelope.original_content)["X-Tenure-Notification-Id"]
        self.received[nid] = self.received.get(nid, 0) + 1
        if self.received[nid] == 1 and to.startswith("mute"):
            await asyncio.sleep(3 * TIMEOUT_S)  # stored; the answer comes too late
        if self.received[nid] == 1 and to.startswith("drop"):
            server.transport.close()  # stored; the connection drops before the answer
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier_unanswered")


@pytest.fixture(scope="module")
async def common(database_url: str, common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-unans-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES, Topic.NOTIFICATIONS])
    return common


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Unanswering, int]]:
    handler = Unanswering()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def on(base: Deliverer, port: int, **over: Any) -> Deliverer:
    """The deliverer sending to the test's server, on a clock of its own."""
    d = with_settings(base, smtp_port=port, smtp_timeout_s=TIMEOUT_S, **over)
    return replace(d, clock=FakeClock(START))


async def later(d: Deliverer) -> int:
    """Past every retry a failure could have scheduled and the sending lease: how many
    notifications the retry worker then attempts."""
    assert isinstance(d.clock, FakeClock)
    d.clock.advance(timedelta(hours=2))
    await asyncio.sleep(d.settings.sending_lease_s + 0.2)
    return await d.retry_due()


async def published(common: CommonSettings, nid: str) -> list[dict[str, Any]]:
    topic = topic_name(Topic.DELIVERIES, common.topic_prefix)
    return [value for _, value in await find_records(common, topic, {nid})]


@pytest.mark.parametrize("silence", ["mute", "drop"])
async def test_an_email_stored_but_never_answered_is_unknown_and_not_sent_again(
    deliverer: Deliverer,  # noqa: F811
    server: tuple[Unanswering, int],
    common: CommonSettings,
    silence: str,
) -> None:
    handler, port = server
    d = on(deliverer, port)
    n = notification(recipient=f"{silence}-{uuid.uuid4().hex[:8]}@example.com")
    assert d.settings.email_resend_after_crash == "transactional"  # n is marketing
    unknown = counter(metrics.ATTEMPT_FAILURES, channel="email", kind="unknown")
    await d.handle(as_record(n))
    assert await d.log.status(n.notification_id) == "unknown"
    await later(d)
    assert await d.log.status(n.notification_id) == "unknown"  # never tried again
    assert handler.received[n.notification_id] == 1
    [outcome] = await published(common, n.notification_id)
    assert outcome["status"] == "unknown"
    assert "never answered" in outcome["detail"]
    assert counter(metrics.ATTEMPT_FAILURES, channel="email", kind="unknown") == unknown + 1


async def test_with_the_policy_always_it_is_sent_again_and_arrives_twice(
    deliverer: Deliverer,  # noqa: F811
    server: tuple[Unanswering, int],
    common: CommonSettings,
) -> None:
    handler, port = server
    d = on(deliverer, port, email_resend_after_crash="always")
    n = notification(recipient=f"mute-{uuid.uuid4().hex[:8]}@example.com")
    await d.handle(as_record(n))
    assert await d.log.status(n.notification_id) == "retrying"
    assert await later(d) >= 1  # this one (the log is shared)
    assert await d.log.status(n.notification_id) == "sent"
    assert handler.received[n.notification_id] == 2  # the operator's choice
    assert [o["status"] for o in await published(common, n.notification_id)] == ["sent"]


@pytest.mark.parametrize("refusal", ["busy", "defer"])
async def test_a_refusal_before_or_at_the_end_of_data_is_retried_and_delivered_once(
    deliverer: Deliverer,  # noqa: F811
    server: tuple[Unanswering, int],
    common: CommonSettings,
    refusal: str,
) -> None:
    handler, port = server
    d = on(deliverer, port)
    n = notification(recipient=f"{refusal}-{uuid.uuid4().hex[:8]}@example.com")
    await d.handle(as_record(n))
    assert await d.log.status(n.notification_id) == "retrying"
    assert n.notification_id not in handler.received
    assert await later(d) >= 1  # this one (the log is shared)
    assert await d.log.status(n.notification_id) == "sent"
    assert handler.received[n.notification_id] == 1
    assert [o["status"] for o in await published(common, n.notification_id)] == ["sent"]
