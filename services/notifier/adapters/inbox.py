"""The in-app inbox in PostgreSQL. Every query is scoped to one customer id.

A stored message is announced with ``NOTIFY`` in the transaction that inserts it (so only
committed messages are announced); :class:`InboxEvents` listens and wakes the open streams
of that customer, which then read their new messages from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.db.tables import inbox_messages

log = logging.getLogger(__name__)

CHANNEL = "tenure_inbox"


@dataclass(frozen=True)
class InboxMessage:
    id: int
    notification_id: str
    customer_id: str
    journey_id: str | None
    playbook: str | None
    step: str | None
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None
    dismissed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "title": self.title,
            "body": self.body,
            "playbook": self.playbook,
            "step": self.step,
            "created_at": self.created_at.isoformat(),
            "read_at": self.read_at.isoformat() if self.read_at else None,
        }


def _message(row: Any) -> InboxMessage:
    return InboxMessage(**{c.name: getattr(row, c.name) for c in inbox_messages.columns})


class Inbox:
    def __init__(self, engine: AsyncEngine, *, channel: str = CHANNEL) -> None:
        self.engine = engine
        self.channel = channel

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
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Put a message in the customer's inbox; False if it is there already (idempotent).

        A new message is announced to the customer's open streams once committed: with
        ``conn``, inside the caller's transaction (the ``NOTIFY`` goes out when it commits,
        never if it rolls back); without, in a transaction of its own.
        """
        stmt = (
            insert(inbox_messages)
            .values(
                notification_id=notification_id,
                customer_id=customer_id,
                journey_id=journey_id,
                playbook=playbook,
                step=step,
                title=title,
                body=body,
                created_at=created_at,
            )
            .on_conflict_do_nothing(index_elements=["notification_id"])
            .returning(inbox_messages.c.id)
        )
        if conn is None:
            async with self.engine.begin() as own:
                return await self._insert(own, stmt, customer_id)
        return await self._insert(conn, stmt, customer_id)

    async def _insert(self, conn: AsyncConnection, stmt: Any, customer_id: str) -> bool:
        if (await conn.execute(stmt)).first() is None:
            return False
        await conn.execute(
            sa.select(sa.func.pg_notify(self.channel, customer_id))  # the customer id only
        )
        return True

    async def list(
        self, customer_id: str, *, after_id: int = 0, limit: int, include_read: bool = True
    ) -> list[InboxMessage]:
        """The customer's undismissed messages with ``id > after_id``, oldest first."""
        query = (
            sa.select(inbox_messages)
            .where(
                inbox_messages.c.customer_id == customer_id,
                inbox_messages.c.id > after_id,
                inbox_messages.c.dismissed_at.is_(None),
            )
            .order_by(inbox_messages.c.id)
            .limit(limit)
        )
        if not include_read:
            query = query.where(inbox_messages.c.read_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_message(r) for r in rows]

    async def last_id(self, customer_id: str) -> int:
        """The id of the customer's newest message (0 if none): where a new stream starts."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.max(inbox_messages.c.id)).where(
                    inbox_messages.c.customer_id == customer_id
                )
            )
        return int(value or 0)

    async def mark(
        self, customer_id: str, message_id: int, *, column: str, at: datetime
    ) -> tuple[InboxMessage, bool] | None:
        """Set ``read_at`` or ``dismissed_at`` of one of the customer's messages.

        None when the customer has no such message (another customer's id included);
        else the message and whether this call changed it (False when already set).
        """
        if column not in ("read_at", "dismissed_at"):
            raise ValueError(column)
        col = inbox_messages.c[column]
        owned = sa.and_(
            inbox_messages.c.id == message_id, inbox_messages.c.customer_id == customer_id
        )
        async with self.engine.begin() as conn:
            changed = (
                await conn.execute(
                    inbox_messages.update()
                    .where(owned, col.is_(None))
                    .values({column: at})
                    .returning(*inbox_messages.columns)
                )
            ).first()
            if changed is not None:
                return _message(changed), True
            row = (await conn.execute(sa.select(inbox_messages).where(owned))).first()
        return None if row is None else (_message(row), False)


class InboxEvents:
    """Wakes the open inbox streams of a customer when a message for them is committed.

    One ``LISTEN`` connection per process, opened with the first subscription and kept
    until ``stop``; the ``NOTIFY`` payload is the customer id, and every stream of that
    customer (on every replica: each listens) is woken. A notification is a doorbell, not
    the message: a woken stream reads its messages after its cursor from the table, so
    notifications that arrive together, or for a message already read, cost one read and
    lose nothing. While the connection is down nothing is heard, so every stream is
    woken once it is (re)established, to catch up; it is retried every ``retry_s``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        channel: str = CHANNEL,
        retry_s: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.channel = channel
        self._retry_s = retry_s
        self._stop = stop or asyncio.Event()
        self._subscribers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the LISTEN connection is up

    @contextlib.asynccontextmanager
    async def subscribe(self, customer_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever a message for ``customer_id`` may have been committed
        (clear it before reading); set once at the start, so the first read catches up."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="inbox-listen")
        woken = asyncio.Event()
        woken.set()
        self._subscribers[customer_id].add(woken)
        try:
            yield woken
        finally:
            subscribers = self._subscribers.get(customer_id)
            if subscribers is not None:
                subscribers.discard(woken)
                if not subscribers:
                    del self._subscribers[customer_id]

    def _wake(self, customer_id: str) -> None:
        for woken in self._subscribers.get(customer_id, ()):
            woken.set()

    def _wake_all(self) -> None:
        for subscribers in self._subscribers.values():
            for woken in subscribers:
                woken.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._wake(payload)

    async def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                await self._listen_once()
            except Exception as exc:  # any failure: listen again; streams stay open
                log.warning("inbox LISTEN connection failed: %s", exc)
            if not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._retry_s)

    async def _listen_once(self) -> None:
        """LISTEN until the connection is lost or ``stop``."""
        lost = asyncio.Event()
        async with self._engine.connect() as conn:
            try:
                driver = (await conn.get_raw_connection()).driver_connection
                if driver is None:
                    raise RuntimeError("no driver connection")
                driver.add_termination_listener(lambda _conn: lost.set())
                await driver.add_listener(self.channel, self._on_notify)
                self.listening.set()
                self._wake_all()  # whatever was committed while nobody listened
                await _first(lost, self._stop)
                if lost.is_set():
                    log.warning("inbox LISTEN connection lost; listening again")
            finally:
                self.listening.clear()
                await conn.invalidate()  # closed: never back to the pool with a LISTEN on it

    async def aclose(self) -> None:
        """Stop listening (also done by setting ``stop``)."""
        self._stop.set()
        if self._task is not None:
            await self._task


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
