"""A customer's data rights over PostgreSQL: export everything kept, and erase it.

Every service's tables live in the one database, and the orchestrator's operator API is
where a customer is looked at whole (the customer 360 already reads the notifier's
delivery log), so the export and the erasure of the PostgreSQL part run here, over the
orchestrator's and the notifier's tables, in one transaction each. Scoring keeps its
state in its own store: the erasure reaches it through the ``erasures`` topic (an outbox
row written in the erasing transaction), see :func:`erase`.

What an erasure leaves (docs/decisions.md, "Data protection"):

- removed: the profile, learned state, score, held triggers, the outbox rows (the
  notifications as written, with their context), the outcomes projected from
  ``deliveries``, the messages the frequency cap counts, the in-app inbox, the payment
  events the MRR record is derived from;
- anonymised, so that playbook results and the portfolio's figures stay true: journeys,
  their history and timers, attributed conversions, MRR movements and subscription
  states keep their figures under a pseudonym (``erased-`` and 16 random hex digits)
  that nothing links back to the customer; live journeys are cancelled first (reason
  ``erased``) and their pending timers with them;
- the delivery log keeps one row per notification, status ``erased``, with no payload,
  address or detail: a notification still in flight on Kafka then finds its id taken and
  is never sent;
- suppressions keep only the hash of the address (as every suppression does), without
  the customer or notification; the unsubscribe still holds;
- ``erasures`` records the erasure: the SHA-256 of the customer id, the pseudonym, who
  asked, when, and how many rows each table lost.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.messages import Erasure


def customer_hash(customer_id: str) -> str:
    """What ``erasures`` keeps of a customer id: its hex SHA-256."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


def pseudonym() -> str:
    """A fresh pseudonym for an erased customer's anonymised journeys (random, unlinkable)."""
    return f"erased-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class ErasureRecord:
    """One erasure, as recorded: who asked, when, and how many rows each table lost."""

    erasure_id: str
    erased_at: datetime
    requested_by: str
    pseudonym: str
    removed: dict[str, int]
    scoring_erased_at: datetime | None = None


# --- export --------------------------------------------------------------------------------

_ROWS = {
    "profile": "SELECT * FROM customers WHERE customer_id = :c",
    "learned": "SELECT * FROM customer_state WHERE customer_id = :c",
    "score": "SELECT * FROM scores WHERE customer_id = :c",
    "held_triggers": "SELECT * FROM held_triggers WHERE customer_id = :c ORDER BY id",
    "journeys": "SELECT * FROM journeys WHERE customer_id = :c ORDER BY started_at, journey_id",
    "journey_history": """
        SELECT t.* FROM journey_transitions t JOIN journeys j USING (journey_id)
        WHERE j.customer_id = :c ORDER BY t.id""",
    "timers": """
        SELECT t.id, t.journey_id, t.step, t.due_at, t.status, t.fired_at
        FROM timers t JOIN journeys j USING (journey_id)
        WHERE j.customer_id = :c ORDER BY t.id""",
    "notifications": """
        SELECT id, topic, payload, headers, created_at, published_at FROM outbox
        WHERE key = :c AND headers ? 'notification_id' ORDER BY id""",
    "deliveries": """
        SELECT notification_id, channel, status, attempts, created_at, updated_at, detail,
               first_attempt_at, next_attempt_at, reported_at
        FROM deliveries WHERE customer_id = :c ORDER BY created_at, notification_id""",
    "journey_messages": """
        SELECT journey_id, step, marketing, decided_at, outcome, outcome_at, counts_at
        FROM journey_messages WHERE customer_id = :c ORDER BY decided_at, journey_id, step""",
    "delivery_outcomes": """
        SELECT * FROM message_outcomes WHERE customer_id = :c
        ORDER BY occurred_at, notification_id, status""",
    "inbox": "SELECT * FROM inbox_messages WHERE customer_id = :c ORDER BY id",
    "attributions": "SELECT * FROM attributions WHERE customer_id = :c ORDER BY converted_at",
    "mrr_movements": """
        SELECT * FROM mrr_movements WHERE customer_id = :c ORDER BY occurred_at, event_id""",
    "subscription_states": """
        SELECT * FROM subscription_states WHERE customer_id = :c
        ORDER BY occurred_at, event_id""",
    "subscription_events": """
        SELECT * FROM subscription_events WHERE customer_id = :c
        ORDER BY occurred_at, event_id""",
}


def _plain(row: sa.RowMapping) -> dict[str, Any]:
    """A row as JSON-ready values (bytes payloads decoded: they are JSON notifications)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, bytes | memoryview):
            value = orjson.loads(bytes(value))
        out[name] = value
    return out


async def export(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    """Everything PostgreSQL keeps about ``customer_id``, one list (or row) per kind; None
    when nothing is kept. Reads only."""
    found: dict[str, Any] = {}
    for kind, query in _ROWS.items():
        rows = [
            _plain(r) for r in (await conn.execute(sa.text(query), {"c": customer_id})).mappings()
        ]
        found[kind] = rows[0] if kind in ("profile", "learned", "score") and rows else rows
        if kind in ("profile", "learned", "score") and not rows:
            found[kind] = None
    if not any(found.values()):
        return None
    email = (found["profile"] or {}).get("email")
    found["email_suppressed"] = (
        await suppression_reason(conn, email) if isinstance(email, str) else None
    )
    found["earlier_erasures"] = [
        {"erasure_id": e.erasure_id, "erased_at": e.erased_at}
        for e in await erasures(conn, customer_id)
    ]
    return found


async def suppression_reason(conn: AsyncConnection, address: str) -> str | None:
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()
    query = sa.text("SELECT reason FROM suppressions WHERE address_hash = :h")
    value = (await conn.execute(query, {"h": digest})).scalar()
    return None if value is None else str(value)


async def erasures(conn: AsyncConnection, customer_id: str) -> list[ErasureRecord]:
    """The erasures recorded for ``customer_id``, oldest first."""
    rows = await conn.execute(
        sa.text(
            "SELECT erasure_id, erased_at, requested_by, pseudonym, removed, scoring_erased_at "
            "FROM erasures WHERE customer_hash = :h ORDER BY erased_at, erasure_id"
        ),
        {"h": customer_hash(customer_id)},
    )
    return [ErasureRecord(**dict(r)) for r in rows.mappings()]


async def erased_since(conn: AsyncConnection, customer_id: str) -> datetime | None:
    """When ``customer_id`` was last erased (None: never): records older than that are
    what was erased, not new data."""
    query = sa.text("SELECT max(erased_at) FROM erasures WHERE customer_hash = :h")
    value = (await conn.execute(query, {"h": customer_hash(customer_id)})).scalar()
    return value if isinstance(value, datetime) else None


# --- erasure -------------------------------------------------------------------------------

# Run in this order inside one transaction; each counts the rows it touched. ``:c`` is the
# customer id, ``:p`` the pseudonym.
_ERASE: tuple[tuple[str, str], ...] = (
    ("profile", "DELETE FROM customers WHERE customer_id = :c"),
    ("learned", "DELETE FROM customer_state WHERE customer_id = :c"),
    ("score", "DELETE FROM scores WHERE customer_id = :c"),
    ("held_triggers", "DELETE FROM held_triggers WHERE customer_id = :c"),
    ("notifications", "DELETE FROM outbox WHERE key = :c AND topic <> :erasures_topic"),
    ("delivery_outcomes", "DELETE FROM message_outcomes WHERE customer_id = :c"),
    ("journey_messages", "DELETE FROM journey_messages WHERE customer_id = :c"),
    ("inbox", "DELETE FROM inbox_messages WHERE customer_id = :c"),
    ("subscription_events", "DELETE FROM subscription_events WHERE customer_id = :c"),
    (
        # The ids stay taken (a notification still on Kafka is never sent); nothing else.
        "deliveries",
        """UPDATE deliveries SET customer_id = :p, status = 'erased', payload = NULL,
                  detail = NULL, next_attempt_at = NULL, updated_at = now()
           WHERE customer_id = :c""",
    ),
    (
        "suppressions",
        """UPDATE suppressions SET customer_id = NULL, notification_id = NULL
           WHERE customer_id = :c""",
    ),
    ("attributions", "UPDATE attributions SET customer_id = :p WHERE customer_id = :c"),
    ("mrr_movements", "UPDATE mrr_movements SET customer_id = :p WHERE customer_id = :c"),
    (
        "subscription_states",
        "UPDATE subscription_states SET customer_id = :p WHERE customer_id = :c",
    ),
    ("journeys", "UPDATE journeys SET customer_id = :p WHERE customer_id = :c"),
)


async def erase(
    conn: AsyncConnection,
    customer_id: str,
    *,
    now: datetime,
    requested_by: str,
    erasures_topic: str,
) -> ErasureRecord:
    """Erase ``customer_id`` from PostgreSQL inside ``conn``'s transaction, record it, and
    queue an :class:`~common.messages.Erasure` for scoring on ``erasures_topic`` (outbox).
    The caller has cancelled the customer's live journeys first (reason ``erased``).

    Idempotent in effect: erasing again finds nothing more to remove and records another
    erasure. Blocks on the row locks of a timer being fired for the customer (the erasure
    then sees what that firing committed).
    """
    name = pseudonym()
    removed: dict[str, int] = {}
    params = {"c": customer_id, "p": name, "erasures_topic": erasures_topic}
    for kind, statement in _ERASE:
        result = await conn.execute(sa.text(statement), params)
        removed[kind] = int(result.rowcount or 0)
    record = ErasureRecord(str(uuid.uuid4()), now, requested_by, name, removed)
    await conn.execute(
        sa.text(
            "INSERT INTO erasures (erasure_id, customer_hash, pseudonym, requested_by, "
            "erased_at, removed) VALUES (:id, :h, :p, :by, :at, CAST(:removed AS jsonb))"
        ),
        {
            "id": record.erasure_id,
            "h": customer_hash(customer_id),
            "p": name,
            "by": requested_by,
            "at": now,
            "removed": orjson.dumps(removed).decode(),
        },
    )
    message = Erasure(erasure_id=record.erasure_id, customer_id=customer_id, erased_at=now)
    await conn.execute(
        sa.text(
            "INSERT INTO outbox (topic, key, payload, headers) "
            "VALUES (:t, :c, :payload, CAST(:headers AS jsonb))"
        ),
        {
            "t": erasures_topic,
            "c": customer_id,
            "payload": message.model_dump_json().encode(),
            "headers": orjson.dumps({"erasure_id": record.erasure_id}).decode(),
        },
    )
    return record


async def confirm_scoring(conn: AsyncConnection, customer_id: str, *, now: datetime) -> str | None:
    """Scoring confirmed an erasure of ``customer_id`` (its tombstone on ``scores``): mark
    the erasures awaiting it complete; the pseudonym of the latest, or None (and nothing
    done) when none awaited it."""
    pending = await conn.execute(
        sa.text(
            "UPDATE erasures SET scoring_erased_at = :now "
            "WHERE customer_hash = :h AND scoring_erased_at IS NULL RETURNING pseudonym"
        ),
        {"now": now, "h": customer_hash(customer_id)},
    )
    names = [row[0] for row in pending]
    return names[-1] if names else None


async def erase_again(
    conn: AsyncConnection, customer_id: str, *, pseudonym: str, erasures_topic: str
) -> None:
    """Once scoring confirmed: erase again what records in flight during the erasure may
    have written since (the caller cancelled the live journeys first), and remove the
    erasure's own outbox row (it named the customer)."""
    params = {"c": customer_id, "p": pseudonym, "erasures_topic": erasures_topic}
    for _, statement in _ERASE:
        await conn.execute(sa.text(statement), params)
    await conn.execute(
        sa.text("DELETE FROM outbox WHERE key = :c AND topic = :t AND published_at IS NOT NULL"),
        {"c": customer_id, "t": erasures_topic},
    )
