"""What the delivery use cases depend on: the ports, the renderer, the settings they read
and what is derived from those once (links, retry policy, webhook routes)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from common.clock import Clock
from common.kafka import DeadLetters, Publisher
from common.messages import Notification
from notifier.domain import messages
from notifier.domain.render import Renderer
from notifier.domain.retry import RetryPolicy
from notifier.links import Links
from notifier.service_layer.ports import (
    DeliveryLog,
    InboxStore,
    Mailer,
    SuppressionList,
    WebhookPoster,
)
from notifier.settings import NotifierSettings, WebhookEndpoint


def retry_policy(settings: NotifierSettings) -> RetryPolicy:
    return RetryPolicy(
        base=timedelta(seconds=settings.retry_base_s),
        cap=timedelta(seconds=settings.retry_cap_s),
        jitter=settings.retry_jitter,
        max_age=timedelta(seconds=settings.retry_max_age_s),
    )


@dataclass(frozen=True)
class Dependencies:
    """The delivery use cases' dependencies, passed to each as ``deps=``.

    ``uniform`` draws the retry jitter (in [0, 1)); the clock is the shared one (retries
    are scheduled on it). Built by :mod:`notifier.bootstrap`, or by a test on the fakes
    of :mod:`notifier.adapters.memory`.
    """

    settings: NotifierSettings
    log: DeliveryLog
    mailer: Mailer
    webhooks: WebhookPoster
    renderer: Renderer
    publisher: Publisher
    clock: Clock
    suppressions: SuppressionList
    inbox: InboxStore
    dead_letters: DeadLetters
    uniform: Callable[[], float] = field(default=random.random)

    # Built once from the (frozen) settings, not for every message.
    @cached_property
    def links(self) -> Links:
        return Links(self.settings)

    @cached_property
    def policy(self) -> RetryPolicy:
        return retry_policy(self.settings)

    @cached_property
    def routes(self) -> dict[str, WebhookEndpoint]:
        return self.settings.routes()

    @cached_property
    def mail_endpoint(self) -> str:
        """The mail server as the availability gauge names it (host:port)."""
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    @cached_property
    def message_domain(self) -> str:
        return self.settings.message_domain()

    @cached_property
    def handover(self) -> asyncio.Semaphore:
        """Emails marked ``handed`` and waiting for (or using) an SMTP connection: twice
        the pool, so that a connection that frees up finds the next email already
        marked (the mark's commit overlaps the sends), and a crash leaves at most this
        many ``unknown``, not every notification in flight."""
        return asyncio.Semaphore(2 * self.settings.smtp_pool_size)

    def resent_after_crash(self, n: Notification) -> bool:
        """Whether ``n``, found in flight after its worker died or sent without an answer
        from the mail server (:class:`~notifier.errors.OutcomeUnknown`), is sent again; if
        not, it is marked ``handed`` before it goes to the mail server and such an
        outcome is recorded ``unknown`` (docs/decisions.md)."""
        if n.channel != "email":
            return True  # webhook-id and the inbox's notification id de-duplicate
        policy = self.settings.email_resend_after_crash
        return policy == "always" or (policy == "transactional" and not messages.is_marketing(n))
