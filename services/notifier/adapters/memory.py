"""In-memory fakes of the delivery use cases' ports (``service_layer/ports.py``), for
unit tests: no network, no database, the same contracts as the real adapters.

Each fake can be told to fail: give :class:`FakeMailer` or :class:`FakeWebhooks` the
errors to raise, in order, before it succeeds (``failures``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from notifier.adapters.inbox import InboxMessage
from notifier.adapters.suppressions import address_hash
from notifier.domain.render import RenderedEmail
from notifier.errors import SendError
from notifier.service_layer.ports import Claim, Claimed, Existing, Unreported

TERMINAL = ("sent", "suppressed", "bounced", "dead", "unknown")
IN_FLIGHT = ("sending", "handed")


@dataclass(frozen=True)
class SentEmail:
    to: str
    email: RenderedEmail
    headers: dict[str, str]


class FakeMailer:
    """Keeps every email it was given in :attr:`sent`; raises the queued ``failures``
    first, one per call."""

    def __init__(self, failures: Iterable[SendError] = ()) -> None:
        self.sent: list[SentEmail] = []
        self.failures = deque(failures)

    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        if self.failures:
            raise self.failures.popleft()
        self.sent.append(SentEmail(to, email, headers))


@dataclass(frozen=True)
class Posted:
    url: str
    msg_id: str
    body: bytes


class FakeWebhooks:
    """Keeps every POST in :attr:`posted`; raises the queued ``failures`` first (each
    counts as an attempt, as a refused POST does)."""

    def __init__(self, failures: Iterable[SendError] = ()) -> None:
        self.posted: list[Posted] = []
        self.attempts = 0
        self.failures = deque(failures)

    async def post(self, url: str, *, msg_id: str, body: bytes) -> int:
        self.attempts += 1
        if self.failures:
            raise self.failures.popleft()
        self.posted.append(Posted(url, msg_id, body))
        return 200


class MemorySuppressions:
    """The suppression list, keyed by the same address hash as the real one."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    async def add(
        self, address: str, *, customer_id: str | None, reason: str, notification_id: str | None
    ) -> bool:
        key = address_hash(address)
        if key in self.reasons:
            return False
        self.reasons[key] = reason
        return True

    async def reason(self, address: str) -> str | None:
        return self.reasons.get(address_hash(address))


class MemoryInbox:
    """In-app messages by notification id (a second store of one id changes nothing),
    numbered in the order stored; a stored message wakes the customer's subscriptions of
    ``events``, as the real inbox's ``NOTIFY`` does."""

    def __init__(self, events: MemoryInboxEvents | None = None) -> None:
        self.messages: dict[str, InboxMessage] = {}
        self.events = events or MemoryInboxEvents()
        self.channel = "memory"

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
        if notification_id in self.messages:
            return False
        self.messages[notification_id] = InboxMessage(
            id=len(self.messages) + 1,
            notification_id=notification_id,
            customer_id=customer_id,
            journey_id=journey_id,
            playbook=playbook,
            step=step,
            title=title,
            body=body,
            created_at=created_at,
            read_at=None,
            dismissed_at=None,
        )
        self.events.wake(customer_id)
        return True

    async def list(
        self, customer_id: str, *, after_id: int = 0, limit: int, include_read: bool = True
    ) -> list[InboxMessage]:
        found = [
            m
            for m in self.messages.values()
            if m.customer_id == customer_id
            and m.id > after_id
            and m.dismissed_at is None
            and (include_read or m.read_at is None)
        ]
        return sorted(found, key=lambda m: m.id)[:limit]

    async def last_id(self, customer_id: str) -> int:
        return max(
            (m.id for m in self.messages.values() if m.customer_id == customer_id), default=0
        )


class MemoryInboxEvents:
    """:class:`~notifier.adapters.inbox.InboxEvents` without PostgreSQL: :meth:`wake`
    stands for a committed message's ``NOTIFY``."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[asyncio.Event]] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, customer_id: str) -> AsyncIterator[asyncio.Event]:
        woken = asyncio.Event()
        woken.set()  # the first read catches up, as with the real one
        self.subscribers.setdefault(customer_id, set()).add(woken)
        try:
            yield woken
        finally:
            self.subscribers[customer_id].discard(woken)
            if not self.subscribers[customer_id]:
                del self.subscribers[customer_id]

    def wake(self, customer_id: str) -> None:
        for woken in self.subscribers.get(customer_id, ()):
            woken.set()


@dataclass
class Row:
    """One notification's row of the delivery log."""

    notification_id: str
    payload: bytes
    status: str
    attempts: int
    first_attempt_at: datetime
    updated_at: datetime
    detail: str | None = None
    next_attempt_at: datetime | None = None
    reported: bool = False
    ingested_at: datetime | None = None


@dataclass
class MemoryDeliveryLog:
    """The delivery log as a dict of rows. ``now`` is the log's own time (the real one in
    PostgreSQL: the sending lease and the quiet time are measured on it); a test moves
    it with :meth:`advance`. Reads the suppression list it is given, as the claim does."""

    suppressions: MemorySuppressions = field(default_factory=MemorySuppressions)
    now: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    rows: dict[str, Row] = field(default_factory=dict)

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def _row(self, notification_id: str) -> Row:
        """The row to change, its ``updated_at`` now."""
        row = self.rows[notification_id]
        row.updated_at = self.now
        return row

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
        suppressed = await self.suppressions.reason(address) if address else None
        row = self.rows.get(notification_id)
        if row is not None:
            return Claimed(Existing(row.status, row.detail, row.reported), suppressed)
        self.rows[notification_id] = Row(
            notification_id, payload, "sending", 1, now, self.now, ingested_at=ingested_at
        )
        return Claimed(None, suppressed)

    async def finish(
        self,
        notification_id: str,
        status: str,
        detail: str | None = None,
        *,
        reported: bool = False,
    ) -> None:
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        row = self._row(notification_id)
        row.status, row.detail, row.next_attempt_at, row.reported = status, detail, None, reported

    async def handed(self, notification_id: str) -> None:
        self._row(notification_id).status = "handed"

    async def mark_reported(self, notification_id: str) -> None:
        self._row(notification_id).reported = True

    async def reclaim_dead(self, notification_id: str, *, payload: bytes, now: datetime) -> bool:
        row = self.rows.get(notification_id)
        if row is None or row.status != "dead":
            return False
        self.rows[notification_id] = Row(
            notification_id, payload, "sending", 1, now, self.now, ingested_at=row.ingested_at
        )
        return True

    async def retry_at(self, notification_id: str, due: datetime, detail: str) -> None:
        row = self._row(notification_id)
        row.status, row.next_attempt_at, row.detail = "retrying", due, detail

    async def claim_due(self, *, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        def due(row: Row) -> bool:
            if row.status == "retrying":
                return row.next_attempt_at is not None and row.next_attempt_at <= now
            return row.status in IN_FLIGHT and row.updated_at < self.now - lease

        claims = []
        for row in [row for row in self.rows.values() if due(row)][:limit]:
            previous = row.status
            row.status, row.attempts, row.updated_at = "sending", row.attempts + 1, self.now
            claims.append(
                Claim(
                    row.notification_id,
                    row.payload,
                    row.attempts,
                    row.first_attempt_at,
                    previous,
                    row.ingested_at,
                )
            )
        return claims

    async def unreported(self, *, limit: int, quiet: timedelta) -> list[Unreported]:
        rows = [
            row
            for row in self.rows.values()
            if row.status in TERMINAL and not row.reported and row.updated_at < self.now - quiet
        ]
        return [
            Unreported(row.notification_id, row.payload, row.status, row.detail)
            for row in rows[:limit]
        ]

    async def notification(self, notification_id: str) -> bytes | None:
        row = self.rows.get(notification_id)
        return None if row is None else row.payload

    async def status(self, notification_id: str) -> str | None:
        row = self.rows.get(notification_id)
        return None if row is None else row.status
