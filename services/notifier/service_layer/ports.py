"""The ports of the delivery use cases: what they need of the world, as Protocols.

Each has its real adapter in ``notifier.adapters`` and an in-memory fake in
``notifier.adapters.memory`` (the unit tests run the use cases on the fakes):

- :class:`Mailer`: ``adapters.mailer.SmtpMailer`` (aiosmtplib), fake ``FakeMailer``;
- :class:`WebhookPoster`: ``adapters.webhooks.WebhookSender`` (httpx), ``FakeWebhooks``;
- :class:`DeliveryLog`: ``adapters.delivery_log.DeliveryLog`` (PostgreSQL),
  ``MemoryDeliveryLog``;
- :class:`SuppressionList`: ``adapters.suppressions.Suppressions``, ``MemorySuppressions``;
- :class:`InboxStore`: ``adapters.inbox.Inbox``, ``MemoryInbox``.

The publisher of outcomes is :class:`common.kafka.Publisher` (``FakePublisher``), the
dead-letter topic :class:`common.kafka.DeadLetters` (on either publisher), the clock
:class:`common.clock.Clock` (``FakeClock``). Adapters raise the notifier's errors
(:mod:`notifier.errors`) or :class:`common.outage.DatabaseUnavailable`, never a
library's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from notifier.domain.render import RenderedEmail


@dataclass(frozen=True)
class Claim:
    """A notification a worker now owns: try it (again), or, if it was ``handed``,
    decide whether to (``previous`` is the status it was taken in)."""

    notification_id: str
    payload: bytes
    attempts: int
    first_attempt_at: datetime
    previous: str = "retrying"
    ingested_at: datetime | None = None  # of the event it reacts to, as claimed


@dataclass(frozen=True)
class Unreported:
    """A terminal outcome that never reached the deliveries topic."""

    notification_id: str
    payload: bytes
    status: str
    detail: str | None


@dataclass(frozen=True)
class Existing:
    """What the log already knows about a notification id seen again."""

    status: str
    detail: str | None
    reported: bool


@dataclass(frozen=True)
class Claimed:
    """The answer to a claim: ``existing`` None when this worker owns the notification
    now; ``suppressed`` the address's suppression reason, when one was asked for."""

    existing: Existing | None
    suppressed: str | None


class Mailer(Protocol):
    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        """Hand one message to the mail server. Not idempotent.

        Raises :class:`~notifier.errors.Bounced` (the recipient refused for good),
        :class:`~notifier.errors.PermanentSendError` or :class:`~notifier.errors.SendError`
        (transient: connection, timeout, a 4xx answer).
        """
        ...


class WebhookPoster(Protocol):
    async def post(self, url: str, *, msg_id: str, body: bytes) -> int:
        """POST ``body`` to ``url``, signed, with ``msg_id`` as its webhook id (receivers
        de-duplicate on it); the HTTP status of a 2xx answer.

        Raises :class:`~notifier.errors.PermanentSendError` for a URL that may not be
        called or an answer asking the same again cannot change (3xx, most 4xx), and
        :class:`~notifier.errors.SendError` for what may pass later (network, 408, 409,
        429, 5xx).
        """
        ...


class DeliveryLog(Protocol):
    """One row per notification id: who owns it, its outcome, its retry schedule.

    Every method may raise :class:`common.outage.DatabaseUnavailable`; every write is
    idempotent, so a call cut by an outage can be made again.
    """

    async def claim(
        self,
        *,
        notification_id: str,
        customer_id: str,
        channel: str,
        payload: bytes,
        now: datetime,
        address: str | None = None,
        ingested_at: datetime | None = None,
    ) -> Claimed:
        """Claim a notification seen on Kafka; with ``address``, also read its suppression.

        New (``existing`` is None): the row is now ``sending``, attempt 1, and this worker
        sends it; ``ingested_at`` (its record's header) is kept for its retries. Otherwise
        ``existing`` is the row: a replay, never sent again from here.
        """
        ...

    async def finish(
        self,
        notification_id: str,
        status: str,
        detail: str | None = None,
        *,
        reported: bool = False,
    ) -> None:
        """Record a terminal outcome (sent, suppressed, bounced, dead, unknown), and
        whether it is already on the deliveries topic."""
        ...

    async def handed(self, notification_id: str) -> None:
        """Record that an email is being handed to the mail server now (a worker that
        dies after this leaves it ``handed``: maybe sent)."""
        ...

    async def mark_reported(self, notification_id: str) -> None:
        """Record that the outcome is on the deliveries topic."""
        ...

    async def reclaim_dead(self, notification_id: str, *, payload: bytes, now: datetime) -> bool:
        """Take back a notification given up on (``dead``) whose record was replayed from
        the dead-letter topic: the row is ``sending`` again, attempt 1, and this worker
        sends it (True). Any other status stays as it is (False): what was sent, or may
        have been (``unknown``), is never sent again this way."""
        ...

    async def retry_at(self, notification_id: str, due: datetime, detail: str) -> None:
        """Schedule another attempt at ``due`` (shared clock)."""
        ...

    async def claim_due(self, *, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        """Take up to ``limit`` notifications due again (retries due at ``now``, rows left
        in flight longer than ``lease`` by a worker that died), each with one more
        attempt; two workers never take the same row."""
        ...

    async def unreported(self, *, limit: int, quiet: timedelta) -> list[Unreported]:
        """Terminal outcomes not yet on the deliveries topic, untouched for ``quiet``."""
        ...


class SuppressionList(Protocol):
    async def reason(self, address: str) -> str | None:
        """Why ``address`` gets no marketing email, or None if it may."""
        ...


class InboxStore(Protocol):
    async def store(
        self,
        *,
        notification_id: str,
        customer_id: str,
        journey_id: str | None,
        playbook: str | None,
        step: str | None,
        title: str,
        body: str,
        created_at: datetime,
    ) -> bool:
        """Put a message in the customer's in-app inbox; False if it is there already
        (idempotent on ``notification_id``). Announced to the customer's open streams
        once stored."""
        ...
