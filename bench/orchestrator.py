"""Timer firing with 1,000,000 pending timers: the orchestrator against Procrastinate.

One embedded PostgreSQL (pgserver, the same as ``make run``) holds both systems' tables:
the orchestrator's journeys and timers, and Procrastinate's job table, each with
``PENDING`` pending items due in a year. A measurement makes a block of ``BACKLOG``
timers (``PROCRASTINATE_BACKLOG`` jobs: Procrastinate is far slower here) due now and
times how fast the workers fire them (one process per worker, see
``bench.orchestrator_worker``):

- ``tenure1``: one orchestrator replica (claim under a lease, then the step decisions,
  state changes, history and outbox rows, a few statements per group of timers);
- ``procrastinate``: one Procrastinate worker running a no-op task (its defaults);
- ``tenure2``: two orchestrator replicas on the same timers.

Rounds are interleaved, their order rotated, and the median kept; both tables are
vacuumed (not timed) before each measurement, so that neither inherits the other's
dead rows. Then lateness: items come due one after another at Procrastinate's measured
rate for ``LATENESS_S`` seconds, and each system's firing lateness (commit or start time
minus due time) is recorded; and once more for one replica alone, at ``FULL_SHARE`` of
its own measured throughput.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import Context, Result
from common.db import async_url, create_engine, upgrade_async
from devstack.postgres import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
PENDING = 1_000_000
BACKLOG = 5_000  # timers made due at once per orchestrator measurement (several seconds)
PROCRASTINATE_BACKLOG = 1_000  # jobs per Procrastinate measurement (minutes at its rate)
ROUNDS = 3
LATENESS_S = 15.0
FULL_SHARE = 0.8  # lateness at full throughput: items come due at this share of tenure1's rate
MEASURES = ("tenure1", "procrastinate", "tenure2")


class Blocks:
    """Hands out consecutive id ranges of each table's pending items, never twice."""

    def __init__(self) -> None:
        self.next = {"timers": 1, "procrastinate_jobs": 1}

    def take(self, table: str, n: int) -> tuple[int, int]:
        first = self.next[table]
        self.next[table] = first + n
        if first + n - 1 > PENDING:
            raise RuntimeError(f"{table}: fewer than {n} pending items left")
        return first, first + n - 1


async def load(engine: AsyncEngine, url: str) -> None:
    """PENDING journeys with a timer each, and PENDING Procrastinate jobs, all due in a year.

    Generated inside PostgreSQL (``INSERT ... SELECT generate_series``), faster than COPY
    from the client. Procrastinate's triggers (a NOTIFY and an event row per inserted job)
    are disabled for the load only: they matter when jobs are deferred one by one, not
    for firing.
    """
    import procrastinate as pc

    dsn = sa.make_url(async_url(url)).set(drivername="postgresql").render_as_string(False)
    app = pc.App(connector=pc.PsycopgConnector(conninfo=dsn))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    statements = [
        "INSERT INTO journeys (journey_id, customer_id, playbook, state, variant, started_at,"
        " arm) SELECT 'j' || i, 'c' || i, 'retention_offer', 'active', 'discount_30_3_months',"
        " now(), 'treatment' FROM generate_series(1, :n) i",
        "INSERT INTO timers (journey_id, step, due_at, status) SELECT 'j' || i,"
        " 'retention_call', now() + interval '365 days', 'pending'"
        " FROM generate_series(1, :n) i ORDER BY i",
        "ALTER TABLE procrastinate_jobs DISABLE TRIGGER USER",
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)"
        " SELECT 'bench', 'noop', '{}'::jsonb, 'todo', now() + interval '365 days'"
        " FROM generate_series(1, :n) i ORDER BY i",
        "ALTER TABLE procrastinate_jobs ENABLE TRIGGER USER",
    ]
    for statement in statements:
        began = time.monotonic()
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), {"n": PENDING} if ":n" in statement else {})
        print(f"  {statement[:60]}... {time.monotonic() - began:.1f} s", flush=True)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("journeys", "timers", "procrastinate_jobs"):
            await conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


async def make_due(engine: AsyncEngine, table: str, ids: tuple[int, int], at: str) -> None:
    """Make a block due, after a VACUUM of both tables (the previous block's dead rows)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for vacuumed in ("timers", "procrastinate_jobs"):
            await conn.execute(sa.text(f"VACUUM {vacuumed}"))
    column = "due_at" if table == "timers" else "scheduled_at"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(f"UPDATE {table} SET {column} = {at} WHERE id BETWEEN :a AND :b"),
            {"a": ids[0], "b": ids[1]},
        )


async def workers(
    kind: str, url: str, n: int, until: int | None, before_go: Any = None
) -> list[dict[str, Any]]:
    """Start ``n`` worker processes, wait until ready, run ``before_go``, then let them go."""
    argv = [sys.executable, "-m", "bench.orchestrator_worker", kind, url]
    if until is not None:
        argv += ["--until", str(until)]
    procs = [
        await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,  # the result line lists every item's lateness
        )
        for _ in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"{kind} worker: expected 'ready', got {line!r}")
        if before_go is not None:
            await before_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            results.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 900)))
        return results
    finally:
        for proc in procs:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def rate(results: list[dict[str, Any]]) -> float:
    fired = sum(r["fired"] for r in results)
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return fired / elapsed


async def throughput(engine: AsyncEngine, url: str, name: str, blocks: Blocks) -> tuple[float, int]:
    table = "procrastinate_jobs" if name == "procrastinate" else "timers"
    size = PROCRASTINATE_BACKLOG if name == "procrastinate" else BACKLOG
    ids = blocks.take(table, size)
    kind = "procrastinate" if name == "procrastinate" else "tenure"
    replicas = 2 if name == "tenure2" else 1
    await make_due(engine, table, ids, "now() - interval '1 second'")
    results = await workers(kind, url, replicas, None)
    fired = sum(r["fired"] for r in results)
    if fired != size:
        raise RuntimeError(f"{name}: fired {fired} of {size}")
    return rate(results), fired


def pct(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1]


async def lateness(
    engine: AsyncEngine, url: str, kind: str, per_s: float, blocks: Blocks
) -> list[float]:
    """Lateness of LATENESS_S seconds' worth of items coming due at ``per_s``."""
    table = "procrastinate_jobs" if kind == "procrastinate" else "timers"
    count = int(per_s * LATENESS_S)
    ids = blocks.take(table, count)

    async def schedule() -> None:
        start = time.time() + 1.0
        await make_due(engine, table, ids, f"to_timestamp({start!r} + (id - {ids[0]}) / {per_s!r})")

    [result] = await workers(kind, url, 1, count, before_go=schedule)
    return [max(0.0, x) for x in result["lateness"]]


async def run(ctx: Context) -> list[Result]:
    del ctx  # no Kafka here: firing writes the outbox; the relay is not measured
    with tempfile.TemporaryDirectory(prefix="tenure-bench-orch-", dir="/tmp") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", database="bench_timers")
        url = pg.start()
        try:
            return await _run(url)
        finally:
            pg.stop()


async def _run(url: str) -> list[Result]:
    await upgrade_async(url)
    engine = create_engine(url, pool_size=2)
    blocks = Blocks()
    try:
        print(f"loading {PENDING:,} pending timers and {PENDING:,} Procrastinate jobs", flush=True)
        await load(engine, url)
        # Warm-up (not counted): each kind once on a small block, caches and JIT-less paths.
        for name in ("tenure1", "procrastinate"):
            table = "procrastinate_jobs" if name == "procrastinate" else "timers"
            ids = blocks.take(table, 200)
            await make_due(engine, table, ids, "now() - interval '1 second'")
            await workers("procrastinate" if name == "procrastinate" else "tenure", url, 1, None)
        samples: dict[str, list[float]] = {name: [] for name in MEASURES}
        order = list(MEASURES)
        for round_ in range(ROUNDS):
            for name in order[round_:] + order[:round_]:
                value, _ = await throughput(engine, url, name, blocks)
                samples[name].append(value)
                print(f"  round {round_ + 1}  {name:<13} {value:,.0f} fired/s", flush=True)
        best = {name: float(median(values)) for name, values in samples.items()}
        per_s = best["procrastinate"]
        full_s = FULL_SHARE * best["tenure1"]
        late = {}
        for key, kind, rate_s in (
            ("tenure", "tenure", per_s),
            ("procrastinate", "procrastinate", per_s),
            ("tenure_full", "tenure", full_s),
        ):
            late[key] = await lateness(engine, url, kind, rate_s, blocks)
            print(
                f"  lateness {key:<13} at {rate_s:,.0f}/s: p50 {pct(late[key], 50):.3f} s,"
                f" p99 {pct(late[key], 99):.3f} s ({len(late[key]):,} items)",
                flush=True,
            )
    finally:
        await engine.dispose()

    shape = (
        f"{PENDING:,} pending timers (one per journey, due in a year) and {PENDING:,} pending "
        f"Procrastinate jobs in the same embedded PostgreSQL 16; per measurement a block of "
        f"{BACKLOG:,} timers ({PROCRASTINATE_BACKLOG:,} jobs) made due at once; median of "
        f"{ROUNDS} interleaved rounds"
    )
    ours = (
        "one orchestrator replica with its default settings (fire_batch: claim a batch of 400 "
        "under a lease, then fire it in 4 concurrent transactions split by customer, each "
        "reading every fact the step decisions need in one statement and writing the state "
        "changes, history rows and outbox rows with one statement per table)"
    )
    peer = (
        "one Procrastinate 3.10 worker (defaults: concurrency 1, delete_jobs=never) running a "
        "no-op async task"
    )
    late_shape = (
        f"items coming due one after another at {per_s:,.0f}/s (Procrastinate's measured "
        f"throughput) for {LATENESS_S:.0f} s, {PENDING:,} pending besides; lateness = commit "
        "time (ours) or task start (Procrastinate) minus due time"
    )
    full_shape = (
        f"items coming due one after another at {full_s:,.0f}/s ({FULL_SHARE:.0%} of the "
        f"one-replica throughput of the same run) for {LATENESS_S:.0f} s, {PENDING:,} pending "
        "besides; lateness = commit time minus due time"
    )
    light = f"peer: the same replica at Procrastinate's rate ({per_s:,.0f}/s), same run"
    return [
        Result(
            name="orchestrator_timers_one_replica",
            metric=f"due timers fired/s by {ours}; {shape}",
            value=best["tenure1"],
            unit="timers/s",
            baseline=f"peer: {peer}, same database, same run",
            baseline_value=best["procrastinate"],
        ),
        Result(
            name="orchestrator_timers_two_replicas",
            metric=f"due timers fired/s by two orchestrator replicas (processes) together; {shape}",
            value=best["tenure2"],
            unit="timers/s",
            baseline="peer: one replica (orchestrator_timers_one_replica) in the same run",
            baseline_value=best["tenure1"],
        ),
        Result(
            name="orchestrator_timer_lateness_p50",
            metric=f"firing lateness p50 of one orchestrator replica (poll 0.25 s); {late_shape}",
            value=pct(late["tenure"], 50),
            unit="s",
            baseline=f"peer: {peer} (polling interval 5 s), same load",
            baseline_value=pct(late["procrastinate"], 50),
        ),
        Result(
            name="orchestrator_timer_lateness_p99",
            metric=f"firing lateness p99 of one orchestrator replica (poll 0.25 s); {late_shape}",
            value=pct(late["tenure"], 99),
            unit="s",
            baseline=f"peer: {peer} (polling interval 5 s), same load",
            baseline_value=pct(late["procrastinate"], 99),
        ),
        Result(
            name="orchestrator_timer_lateness_full_p50",
            metric=f"firing lateness p50 of one orchestrator replica (poll 0.25 s); {full_shape}",
            value=pct(late["tenure_full"], 50),
            unit="s",
            baseline=light,
            baseline_value=pct(late["tenure"], 50),
        ),
        Result(
            name="orchestrator_timer_lateness_full_p99",
            metric=f"firing lateness p99 of one orchestrator replica (poll 0.25 s); {full_shape}",
            value=pct(late["tenure_full"], 99),
            unit="s",
            baseline=light,
            baseline_value=pct(late["tenure"], 99),
        ),
    ]
