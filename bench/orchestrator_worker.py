"""One timer-firing process of the orchestrator benchmark (started by ``bench.orchestrator``).

``python -m bench.orchestrator_worker KIND DATABASE_URL [--until N]`` (KIND: tenure, bare,
writes, leased or procrastinate)

The process connects, warms up, prints ``ready`` and waits for a line ``go`` on stdin,
so that imports and connections are not timed. Then:

- ``tenure``: one orchestrator replica's timer worker (``fire_batch`` with the project's
  settings: batch, lease, poll interval), each due timer fired with its state change,
  history row and outbox row in one transaction;
- ``bare``: the physical limit, a bare asyncpg loop that claims due timers with
  ``FOR UPDATE SKIP LOCKED`` and marks them fired, in batches of the orchestrator's
  size, one statement (and transaction) per batch: no journey, decision or outbox;
- ``writes``: the floor of what firing the benchmark's timers must write, a bare asyncpg
  loop doing the bare loop's claim-and-mark and then the rows one orchestrator replica
  writes for each of those timers (the last step of its journey, a CSM task): the
  journey's end, its ``step_sent`` and ``finish`` history rows, an outbox row of the same
  size, one statement per kind of row, in one transaction per batch; everything computed
  beforehand (no lease, no read, no decision);
- ``leased``: the same writes behind the orchestrator's lease protocol: the timers claimed
  under a lease in a statement (and transaction) of their own, as ``timer_store.claim``
  does, then locked again while still leased and fired in a second transaction;
- ``procrastinate``: a Procrastinate worker with its defaults (all queues, concurrency 1,
  polling interval, ``delete_jobs="never"``) executing a no-op task. (Naming its queue
  made each fetch scan the 1,000,000 pending jobs of that queue: about 3 jobs/s.)

Without ``--until`` it stops once no due item is left (a backlog); with it, once it has
fired N items (items coming due over time). It prints one JSON line: how many it fired,
when it began and ended (``time.time()``), each item's lateness in seconds (commit or
start time minus due time), the CPU seconds (user + system) the process spent from the
go to its last item, and (``tenure``, ``bare``) each batch as ``[time it was done,
timers]``, from which the benchmark takes the steady part of a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa


def _ready() -> None:
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go', got {line!r}")


async def _drain(
    fire: Callable[[], Awaitable[list[datetime]]],
    due: Callable[[], Awaitable[bool]],
    *,
    until: int | None,
    poll_s: float,
) -> dict[str, Any]:
    """Fire until ``until`` timers have fired, or (``until`` None) until none is due: each
    call of ``fire`` fires a batch and returns when each of its timers was due; an empty batch
    waits ``poll_s`` (0.02 s when draining a backlog) unless nothing is ``due`` any more.
    The figures every firing loop of the benchmark reports, timed from here."""
    _ready()
    began = time.time()
    cpu = time.process_time()
    lateness: list[float] = []
    batches: list[tuple[float, int]] = []
    ended = began
    while until is None or len(lateness) < until:
        due_at = await fire()
        if due_at:
            ended = time.time()
            lateness += [ended - at.timestamp() for at in due_at]
            batches.append((ended, len(due_at)))
            continue  # as run_timers: claim again at once while claims find timers
        if until is None and not await due():
            break  # the backlog is gone (another replica may hold the rest)
        await asyncio.sleep(poll_s if until is not None else 0.02)
    return {
        "fired": len(lateness),
        "began": began,
        "ended": ended,
        "lateness": lateness,
        "cpu": time.process_time() - cpu,
        "batches": batches,
    }


def _firing(deps: Any, settings: Any) -> Any:
    """``fire(lease)``: one claim-and-fire of the timer worker, as the code under test has it
    (``fire_batch`` moved to the service layer in issue 14; older commits are measured
    side by side through ``PYTHONPATH``)."""
    try:
        from orchestrator.service_layer.steps import fire_batch
    except ImportError:
        from orchestrator.entrypoints.timers import fire_batch as before

        return lambda lease: before(
            deps, limit=settings.timer_batch, lease=lease, concurrency=settings.timer_concurrency
        )
    return lambda lease: fire_batch(
        stores=deps.stores,
        context=deps.context,
        lease=lease,
        limit=settings.timer_batch,
        concurrency=settings.timer_concurrency,
    )


async def tenure(url: str, until: int | None) -> dict[str, Any]:
    from common.clock import ScaledClock
    from common.db import create_engine
    from orchestrator.adapters import timer_store
    from orchestrator.domain.playbook import SHIPPED, load_playbooks
    from orchestrator.entrypoints.deps import Deps
    from orchestrator.entrypoints.timers import lease_from_settings
    from orchestrator.settings import OrchestratorSettings

    settings = OrchestratorSettings()
    engine = create_engine(url)
    clock = ScaledClock(scale=1.0)
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=clock,
        topic_prefix="bench.",
        rules=settings.rules(),
    )
    lease = lease_from_settings(settings)
    fire = _firing(deps, settings)
    async with engine.connect() as conn:  # connect and load the catalog before timing
        await timer_store.pending_due(conn, clock.now())

    async def due() -> bool:
        async with engine.connect() as conn:
            return bool(await timer_store.pending_due(conn, clock.now()))

    async def fire_once() -> list[datetime]:
        return [row.due_at for row in await fire(lease)]

    figures = await _drain(fire_once, due, until=until, poll_s=settings.timer_poll_s)
    await engine.dispose()
    return figures


# The physical limit of firing: claim due rows and mark them fired, nothing else.
_BARE_FIRE = """
UPDATE timers SET status = 'fired', fired_at = now()
WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due_at <= now()
             ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING due_at
"""
_BARE_DUE = "SELECT count(*) FROM timers WHERE status = 'pending' AND due_at <= now()"


async def bare(url: str, until: int | None) -> dict[str, Any]:
    import asyncpg

    from common.db import async_url
    from orchestrator.settings import OrchestratorSettings

    settings = OrchestratorSettings()
    dsn = sa.make_url(async_url(url)).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn)
    fire = await conn.prepare(_BARE_FIRE)
    await conn.fetchval(_BARE_DUE)

    async def due() -> bool:
        return bool(await conn.fetchval(_BARE_DUE))

    async def fire_once() -> list[datetime]:  # one statement a batch: its own transaction
        return [row["due_at"] for row in await fire.fetch(settings.timer_batch)]

    figures = await _drain(fire_once, due, until=until, poll_s=settings.timer_poll_s)
    await conn.close()
    return figures


# The writes floor: the rows an orchestrator replica writes per fired timer of the
# benchmark (a journey's last step: its end, two history rows, an outbox row).
_WRITES_CLAIM = """
UPDATE timers SET status = 'fired', fired_at = now()
WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due_at <= now()
             ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING journey_id, due_at
"""
_WRITES_END = """
UPDATE journeys SET state = 'completed', ended_at = now(), exit_reason = 'completed'
WHERE journey_id = ANY($1::text[])
RETURNING journey_id, customer_id
"""
_WRITES_HISTORY = """
INSERT INTO journey_transitions (journey_id, from_state, to_state, event, at, detail)
SELECT x.journey_id, 'active', x.to_state, x.event, now(), x.detail::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     AS x(journey_id, to_state, event, detail)
"""
_WRITES_OUTBOX = """
INSERT INTO outbox (topic, key, payload, headers)
SELECT 'bench.notifications', o.key, o.payload, o.headers::jsonb
FROM unnest($1::text[], $2::bytea[], $3::text[]) AS o(key, payload, headers)
"""
# The lease protocol of timer_store: claim under a lease (autocommit), re-take while leased.
_LEASED_CLAIM = """
UPDATE timers SET lease_owner = $2, lease_until = clock_timestamp() + interval '30 seconds',
                  attempts = attempts + 1
WHERE id IN (SELECT t.id FROM timers t JOIN journeys j ON j.journey_id = t.journey_id
             WHERE t.status = 'pending' AND t.due_at <= now() AND j.state = 'active'
               AND (t.lease_until IS NULL OR t.lease_until < clock_timestamp())
             ORDER BY t.due_at LIMIT $1 FOR UPDATE OF t SKIP LOCKED)
RETURNING id
"""
_LEASED_TAKE = """
SELECT id, journey_id, due_at FROM timers
WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'pending'
FOR UPDATE
"""
_LEASED_FIRE = "UPDATE timers SET status = 'fired', fired_at = now() WHERE id = ANY($1::bigint[])"
# The size of a retention_call notification of the benchmark (its JSON, about 660 bytes).
_PAYLOAD = b"x" * 660
_SENT = (
    '{"step": "retention_call", "channel": "webhook", "marketing": false, "notification_id": "%s"}'
)


async def writes(url: str, until: int | None, leased: bool = False) -> dict[str, Any]:
    import asyncpg

    from common.db import async_url
    from orchestrator.settings import OrchestratorSettings

    settings = OrchestratorSettings()
    dsn = sa.make_url(async_url(url)).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn)
    claim, end = await conn.prepare(_WRITES_CLAIM), await conn.prepare(_WRITES_END)
    history, outbox = await conn.prepare(_WRITES_HISTORY), await conn.prepare(_WRITES_OUTBOX)
    lease, take = await conn.prepare(_LEASED_CLAIM), await conn.prepare(_LEASED_TAKE)
    mark = await conn.prepare(_LEASED_FIRE)
    owner = f"leased-{os.getpid()}"
    await conn.fetchval(_BARE_DUE)

    async def fire() -> list[datetime]:
        ids = [r["id"] for r in await lease.fetch(settings.timer_batch, owner)] if leased else []
        async with conn.transaction():
            if leased:
                rows = await take.fetch(ids, owner) if ids else []
                await mark.fetch([r["id"] for r in rows])
            else:
                rows = await claim.fetch(settings.timer_batch)
            if rows:
                ids = [r["journey_id"] for r in rows]
                ended_rows = await end.fetch(ids)
                n = len(ids)
                await history.fetch(
                    ids + ids,
                    ["active"] * n + ["completed"] * n,
                    ["step_sent"] * n + ["finish"] * n,
                    [_SENT % j for j in ids] + ['{"reason": "last step"}'] * n,
                )
                keys = [r["customer_id"] for r in ended_rows]
                headers = [f'{{"notification_id": "{r["journey_id"]}"}}' for r in ended_rows]
                await outbox.fetch(keys, [_PAYLOAD] * len(keys), headers)
        return [row["due_at"] for row in rows]

    async def due() -> bool:
        return bool(await conn.fetchval(_BARE_DUE))

    figures = await _drain(fire, due, until=until, poll_s=settings.timer_poll_s)
    await conn.close()
    return figures


async def procrastinate(url: str, until: int | None) -> dict[str, Any]:
    import procrastinate as pc

    from common.db import async_url

    dsn = sa.make_url(async_url(url)).set(drivername="postgresql").render_as_string(False)
    app = pc.App(connector=pc.PsycopgConnector(conninfo=dsn))
    lateness: list[float] = []
    done = asyncio.Event()
    ended = [0.0]

    @app.task(name="noop", queue="bench", pass_context=True)
    async def noop(context: pc.JobContext) -> None:
        now = time.time()
        scheduled = context.job.scheduled_at
        lateness.append(now - scheduled.timestamp() if scheduled is not None else 0.0)
        ended[0] = now
        if until is not None and len(lateness) >= until:
            done.set()

    async with app.open_async():
        await app.check_connection_async()
        _ready()
        began = time.time()
        cpu = time.process_time()
        if until is None:
            await app.run_worker_async(wait=False, install_signal_handlers=False)
        else:
            worker = asyncio.create_task(app.run_worker_async(install_signal_handlers=False))
            await done.wait()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    return {
        "fired": len(lateness),
        "began": began,
        "ended": ended[0],
        "lateness": lateness,
        "cpu": time.process_time() - cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator_worker")
    parser.add_argument("kind", choices=["tenure", "bare", "writes", "leased", "procrastinate"])
    parser.add_argument("url")
    parser.add_argument("--until", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.kind == "tenure":
        work = tenure(args.url, args.until)
    elif args.kind == "bare":
        work = bare(args.url, args.until)
    elif args.kind in ("writes", "leased"):
        work = writes(args.url, args.until, leased=args.kind == "leased")
    else:
        work = procrastinate(args.url, args.until)
    result = asyncio.run(work)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
