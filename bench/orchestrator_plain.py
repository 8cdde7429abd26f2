"""The timer worker's group write as plain statements, to measure what the CTE buys.

``adapters/step_store.py`` writes what a group of fired steps did with one statement of
data-modifying CTEs. :func:`write` writes the same rows with one plain statement per
kind of row (each skipped when there is none), in the same transaction; :func:`install`
makes ``SqlSteps.write`` use it, in a benchmark worker process (``tenure-plain``).

The steps woken are updated first: the CTEs all run on one snapshot, so the woken ones
are those waiting before the write (not the ones this group deferred).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

_WOKEN = """
UPDATE timers SET due_at = $2
WHERE id IN (SELECT t.id
             FROM unnest($1::text[]) AS c(id)
             JOIN journeys j ON j.customer_id = c.id
             JOIN timers t ON t.journey_id = j.journey_id
             WHERE j.ended_at IS NULL AND j.state = 'active' AND t.status = 'pending'
               AND t.waiting_since IS NOT NULL AND t.due_at > $2
             FOR UPDATE OF t SKIP LOCKED)
"""
_OUTBOX = """
INSERT INTO outbox (topic, key, payload, headers)
SELECT o.topic, o.key, o.payload, o.headers::jsonb
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY
     AS o(topic, key, payload, headers, n)
ORDER BY o.n
"""
_HISTORY = """
INSERT INTO journey_transitions (journey_id, from_state, to_state, event, at, detail)
SELECT x.journey_id, x.from_state, x.to_state, x.event, x.at, x.detail::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
     WITH ORDINALITY AS x(journey_id, from_state, to_state, event, at, detail, n)
ORDER BY x.n
"""
_FIRED = "UPDATE timers SET status = 'fired', fired_at = $2 WHERE id = ANY($1::bigint[])"
_CANCELLED = "UPDATE timers SET status = 'cancelled' WHERE id = ANY($1::bigint[])"
_DEFERRED = """
UPDATE timers t SET due_at = d.until, lease_owner = NULL, lease_until = NULL,
                    waiting_since = coalesce(t.waiting_since, d.since)
FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS d(id, until, since)
WHERE t.id = d.id
"""
_FINISHED = """
UPDATE journeys SET state = 'completed', ended_at = $2, exit_reason = 'completed'
WHERE journey_id = ANY($1::text[])
"""
_MESSAGES = """
INSERT INTO journey_messages (journey_id, step, customer_id, marketing, decided_at, counts_at)
SELECT s.journey_id, s.step, j.customer_id, s.marketing, s.at,
       CASE WHEN s.marketing THEN s.at END
FROM (SELECT x.journey_id, x.at, d.detail->>'step' AS step,
             (d.detail->>'marketing')::boolean AS marketing
      FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
           AS x(journey_id, event, at, detail)
      CROSS JOIN LATERAL (SELECT x.detail::jsonb AS detail) AS d
      WHERE x.event = 'step_sent' AND d.detail->>'channel' <> 'webhook') AS s
JOIN journeys j ON j.journey_id = s.journey_id
ON CONFLICT (journey_id, step) DO NOTHING
"""
_SCHEDULED = """
UPDATE timers t SET due_at = f.due
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS f(journey_id, step, due)
WHERE t.journey_id = f.journey_id AND t.step = f.step AND t.status = 'pending'
"""
_LIFTED = """
UPDATE held_triggers h SET blocked_by = NULL, due_at = $2
FROM unnest($1::text[]) AS c(id)
WHERE h.customer_id = c.id AND h.status = 'pending' AND h.blocked_by = 'retention first'
"""


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)]


async def write(self: Any, writes: Any, now: datetime) -> None:
    """``SqlSteps.write`` with one statement per kind of row."""
    if not writes:
        return
    run = self.conn.exec_driver_sql
    dumps = orjson.dumps
    if writes.woken:
        await run(_WOKEN, (sorted(writes.woken), now))
    if writes.outbox:
        rows = [(o.topic, o.key, o.payload, dumps(dict(o.headers)).decode()) for o in writes.outbox]
        await run(_OUTBOX, tuple(_columns(rows)))
    if writes.changes:
        history = [
            (
                c.journey_id,
                c.before.value if c.before else None,
                c.after.value,
                c.event.value,
                c.at,
                dumps(dict(c.detail)).decode(),
            )
            for c in writes.changes
        ]
        columns = _columns(history)
        await run(_HISTORY, tuple(columns))
        if any(c.event.value == "step_sent" for c in writes.changes):
            await run(_MESSAGES, (columns[0], columns[3], columns[4], columns[5]))
    if writes.fired:
        await run(_FIRED, (writes.fired, now))
    if writes.cancelled:
        await run(_CANCELLED, (writes.cancelled,))
    if writes.deferred:
        await run(_DEFERRED, tuple(_columns(writes.deferred)))
    if writes.finished:
        await run(_FINISHED, (writes.finished, now))
    if writes.scheduled:
        await run(_SCHEDULED, tuple(_columns(writes.scheduled)))
    if writes.lifted:
        await run(_LIFTED, (sorted(writes.lifted), now))


def install() -> None:
    """Make the SQL store write a group's rows with plain statements (this process only)."""
    from orchestrator.adapters.step_store import SqlSteps

    SqlSteps.write = write  # type: ignore[method-assign]
