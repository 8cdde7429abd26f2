"""Timer firing with 1,000,000 pending timers: the orchestrator against Procrastinate, and
against the physical limit of firing (a bare loop that only claims and marks rows).

One embedded PostgreSQL (pgserver, the same as ``make run``) holds both systems' tables:
the orchestrator's journeys and timers, and Procrastinate's job table, each with
``PENDING`` pending items due in a year. A measurement makes a block of ``BACKLOG``
timers (``PROCRASTINATE_BACKLOG`` jobs: Procrastinate is far slower here) due now and
times how fast the workers fire them (one process per worker, see
``bench.orchestrator_worker``):

- ``tenure1``: one orchestrator replica (claim under a lease, then the step decisions,
  state changes, history and outbox rows, a few statements per group of timers);
- ``bare``: the physical limit, a bare asyncpg loop claiming due timers with
  ``FOR UPDATE SKIP LOCKED`` and marking them fired, in batches of the replica's size
  (no journey, no decision, no history, no outbox): the orchestrator's rate is reported
  as a share of it (``orchestrator_timers_vs_bare_loop``, goal >= 0.5);
- ``procrastinate``: one Procrastinate worker running a no-op task (its defaults);
- ``tenure2``: two orchestrator replicas on the same timers;
- ``writes`` (only in the bare-loop comparison, printed, not published): what one fired
  ``retention_call`` step must write at least, by a bare asyncpg loop with everything
  computed beforehand: the bare loop's claim-and-mark, then the journey's end, its two
  history rows and the outbox row of the same size, one statement per kind of row, all in
  one transaction per batch (no lease, no read, no decision). Its rate over the bare
  loop's bounds ``orchestrator_timers_vs_bare_loop`` for any code that writes those rows;
- ``leased`` (the same): those writes behind the orchestrator's lease protocol (claim
  under a lease in a transaction of its own, then lock the still-leased timers again and
  fire them in a second one), still with no read and no decision.

``python -m bench orchestrator_timers_vs_bare_loop`` runs its own group (:func:`run_vs_bare`:
``tenure1``, ``bare``, ``writes`` and ``leased`` on a database without Procrastinate's table, no
lateness part; a few minutes); the other names run :func:`run` (``tenure1``, ``tenure2``,
``procrastinate`` and the lateness part). Both measure ``tenure1`` the same way.

Rounds are interleaved, their order rotated, and the median kept; both tables are
vacuumed (not timed) before each measurement, so that neither inherits the other's
dead rows. Each system is loaded with ``PENDING`` items plus the blocks the run will make
due, so that at least ``PENDING`` items are pending and not due throughout.

A throughput is the *steady* rate of a measurement: the timers committed between the
batch that reached ``STEADY[0]`` of the block and the one that reached ``STEADY[1]``,
over the time between those two commits, all replicas' batches merged. It leaves out the
start (first claims, cold caches) and the end (with two replicas, one idles while the
other commits its last claims), the same way for one and two replicas; the go-to-last-
commit rate is printed beside it. Procrastinate's rate is go to last job (its jobs run one
at a time, seconds apart). Each orchestrator round also prints the CPU seconds per timer
(user + system) of the replicas (``p``), of every PostgreSQL process (``q``: postmaster,
backends, background workers, exited ones included) and of this driver, the cores the
whole machine used meanwhile, and (sampled every ``SAMPLE_S``) what PostgreSQL's client
backends were doing; at the end the ratio bounds those CPU figures imply on this machine.

With ``TENURE_BENCH_LOCK=<file>`` each round and the lateness part run under an exclusive
``flock`` of that file (the one other benchmarks of a shared machine use), so that no
other locked benchmark overlaps a measurement; loading runs outside it.

Then lateness: items come due one after another at Procrastinate's measured
rate for ``LATENESS_S`` seconds, and each system's firing lateness (commit or start time
minus due time) is recorded; and once more for one replica alone, at ``FULL_SHARE`` of
its own measured throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import Context, Result
from common.db import async_url, create_engine, upgrade_async
from devstack.postgres import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
PENDING = 1_000_000  # pending items not due, in each system, throughout the run
BACKLOG = 36_000  # timers made due at once per orchestrator measurement (>= 10 s at 3,600/s)
PROCRASTINATE_BACKLOG = 250  # jobs per Procrastinate measurement (about 35 s at its rate)
ROUNDS = 5
LATENESS_S = 15.0
FULL_SHARE = 0.8  # lateness at full throughput: items come due at this share of tenure1's rate
FULL_MAX_RATE = 8_000  # timers/s the load leaves room for in the lateness-at-full part
STEADY = (0.1, 0.9)  # the steady part of a block: between the commits of these shares
SAMPLE_S = 0.05  # pg_stat_activity sampling period during the orchestrator's rounds
WARM_UP = 200  # items each kind fires once before the rounds, not counted
MEASURES = ("tenure1", "procrastinate", "tenure2")
BARE_MEASURES = ("tenure1", "bare", "writes", "leased")  # the bare-loop comparison
# measurement -> (worker kind of bench.orchestrator_worker, processes)
WORKERS = {
    "tenure1": ("tenure", 1),
    "tenure2": ("tenure", 2),
    "bare": ("bare", 1),
    "writes": ("writes", 1),
    "leased": ("leased", 1),
    "procrastinate": ("procrastinate", 1),
}


def extra(measures: tuple[str, ...] = MEASURES, lateness: bool = True) -> dict[str, int]:
    """Items each table needs besides ``PENDING``: every block the run makes due."""
    kinds = {WORKERS[name][0] for name in measures}
    timers = sum(name != "procrastinate" for name in measures)
    late = lateness and "procrastinate" in measures
    return {
        "timers": WARM_UP * len(kinds - {"procrastinate"})
        + ROUNDS * timers * BACKLOG
        + (int(LATENESS_S * (FULL_MAX_RATE + 100)) if lateness else 0),
        "procrastinate_jobs": WARM_UP + ROUNDS * PROCRASTINATE_BACKLOG + int(LATENESS_S * 100)
        if late
        else 0,
    }


class Blocks:
    """Hands out consecutive id ranges of each table's items, never twice, and never so
    many that fewer than ``PENDING`` would be left pending."""

    def __init__(self, measures: tuple[str, ...] = MEASURES, lateness: bool = True) -> None:
        self.next = {"timers": 1, "procrastinate_jobs": 1}
        self.total = {table: PENDING + n for table, n in extra(measures, lateness).items()}

    def take(self, table: str, n: int) -> tuple[int, int]:
        first = self.next[table]
        self.next[table] = first + n
        if self.total[table] - (first + n - 1) < PENDING:
            raise RuntimeError(f"{table}: a block of {n} would leave fewer than {PENDING:,}")
        return first, first + n - 1


@contextlib.asynccontextmanager
async def bench_lock() -> AsyncIterator[None]:
    """Hold ``flock(TENURE_BENCH_LOCK)`` (if set) while the block runs."""
    path = os.environ.get("TENURE_BENCH_LOCK")
    if not path:
        yield
        return
    with open(path, "a") as handle:
        began = time.monotonic()
        # A blocking flock queues like `flock(1)` does (polling would let every blocked
        # waiter go first), in a daemon thread that never holds up Ctrl-C or the exit.
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()

        def wait() -> None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            loop.call_soon_threadsafe(lambda: taken.done() or taken.set_result(None))

        threading.Thread(target=wait, daemon=True).start()
        await taken
        waited = time.monotonic() - began
        if waited > 1:
            print(f"  (waited {waited:.0f} s for {path})", flush=True)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def load(engine: AsyncEngine, url: str, blocks: Blocks) -> None:
    """Journeys with a timer each, and Procrastinate jobs (if ``blocks`` has any), all due
    in a year: ``PENDING`` of each plus what the run will make due (:func:`extra`).

    Generated inside PostgreSQL (``INSERT ... SELECT generate_series``), faster than COPY
    from the client. Procrastinate's triggers (a NOTIFY and an event row per inserted job)
    are disabled for the load only: they matter when jobs are deferred one by one, not
    for firing.
    """
    import procrastinate as pc

    jobs = blocks.total["procrastinate_jobs"] > PENDING
    if jobs:
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
    counts = [blocks.total["timers"]] * 2 + [0, blocks.total["procrastinate_jobs"], 0]
    if not jobs:
        statements, counts = statements[:2], counts[:2]
    for statement, n in zip(statements, counts, strict=True):
        began = time.monotonic()
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), {"n": n} if ":n" in statement else {})
        print(f"  {statement[:60]}... {time.monotonic() - began:.1f} s", flush=True)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("journeys", "timers", "procrastinate_jobs")[: 3 if jobs else 2]:
            await conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


async def make_due(engine: AsyncEngine, table: str, ids: tuple[int, int], at: str) -> None:
    """Make a block due, after a VACUUM of both tables (the previous block's dead rows)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for vacuumed in ("timers", "procrastinate_jobs"):
            if await conn.scalar(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": vacuumed}):
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
    """Items per second from the go to the last commit (or job) of any worker."""
    fired = sum(r["fired"] for r in results)
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return fired / elapsed


def steady_rate(results: list[dict[str, Any]]) -> float:
    """Timers per second between the batches (of any replica) that reached ``STEADY[0]``
    and ``STEADY[1]`` of the timers fired."""
    batches = sorted((t, n) for r in results for t, n in r["batches"])
    total = sum(n for _, n in batches)
    low, high = (share * total for share in STEADY)
    done = 0
    start: tuple[float, int] | None = None
    for t, n in batches:
        done += n
        if start is None and done >= low:
            start = (t, done)
        if done >= high:
            assert start is not None
            if t <= start[0]:
                break
            return (done - start[1]) / (t - start[0])
    return rate(results)  # too few batches for a steady part


def _cpu_ticks(pid: int | str) -> tuple[int, int]:
    """(CPU ticks of the process itself, ticks of its children it has reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server so far: the postmaster, its live children
    (backends, background workers) and the children it has reaped (exited backends)."""
    own, reaped = _cpu_ticks(postmaster)
    ticks = own + reaped
    for child in _children(postmaster):
        mine, theirs = _cpu_ticks(child)
        ticks += mine + theirs
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds every process of the machine has used so far (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


class Accounting:
    """CPU of PostgreSQL, of this driver and of the machine over a measurement, and what
    PostgreSQL's client backends were doing (sampled), started just before the go."""

    def __init__(self, engine: AsyncEngine, postmaster: int, sample: bool) -> None:
        self.engine = engine
        self.postmaster = postmaster
        self.sample = sample
        self.waits: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.start = (0.0, 0.0, 0.0, 0.0)
        self.used: dict[str, float] = {}

    def _now(self) -> tuple[float, float, float, float]:
        return (
            time.monotonic(),
            postgres_cpu(self.postmaster),
            time.process_time(),
            machine_cpu(),
        )

    async def begin(self) -> None:
        if self.sample:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        self.start = self._now()

    async def end(self) -> None:
        now = self._now()
        self._stop.set()
        if self._task is not None:
            await self._task
        took, pg, driver, machine = (b - a for a, b in zip(self.start, now, strict=True))
        self.used = {"elapsed": took, "postgres": pg, "driver": driver, "machine": machine}

    async def _watch(self) -> None:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self._stop.is_set():
                rows = await conn.exec_driver_sql(
                    "SELECT state, coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-')"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid() AND datname = current_database()"
                )
                for state, kind, what in rows:
                    self.waits[f"{state} / {kind} / {what}"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SAMPLE_S)


async def throughput(
    engine: AsyncEngine, url: str, name: str, blocks: Blocks, postmaster: int
) -> dict[str, Any]:
    """One measurement: its steady and whole rates and where the CPU went."""
    kind, replicas = WORKERS[name]
    table = "procrastinate_jobs" if kind == "procrastinate" else "timers"
    size = PROCRASTINATE_BACKLOG if kind == "procrastinate" else BACKLOG
    ids = blocks.take(table, size)
    await make_due(engine, table, ids, "now() - interval '1 second'")
    account = Accounting(engine, postmaster, sample=kind.startswith("tenure"))
    results = await workers(kind, url, replicas, None, before_go=account.begin)
    await account.end()
    fired = sum(r["fired"] for r in results)
    if fired != size:
        raise RuntimeError(f"{name}: fired {fired} of {size}")
    whole = rate(results)
    return {
        "rate": whole if kind == "procrastinate" else steady_rate(results),
        "whole": whole,
        "fired": fired,
        "replicas": [r["cpu"] for r in results],
        **account.used,
        "waits": account.waits,
    }


def show(name: str, round_: int, m: dict[str, Any]) -> None:
    """Print a measurement: rates, CPU per item (ms) and cores, top wait states."""
    per = 1000 / m["fired"]
    took = m["elapsed"]
    ours = sum(m["replicas"]) + m["postgres"] + m["driver"]
    print(
        f"  round {round_}  {name:<13} {m['rate']:,.0f} fired/s (go to last commit"
        f" {m['whole']:,.0f}/s)  CPU ms/item: workers {sum(m['replicas']) * per:.3f}"
        f" (p), postgres {m['postgres'] * per:.3f} (q), driver {m['driver'] * per:.3f};"
        f" cores: workers {'+'.join(f'{c / took:.2f}' for c in m['replicas'])},"
        f" postgres {m['postgres'] / took:.2f}, machine {m['machine'] / took:.2f}"
        f" (others {(m['machine'] - ours) / took:.2f}); load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    total = sum(m["waits"].values())
    if total:
        top = ", ".join(f"{what} {100 * n / total:.1f} %" for what, n in m["waits"].most_common(6))
        kinds = {
            kind: 100 * sum(n for what, n in m["waits"].items() if f"/ {kind} /" in what) / total
            for kind in ("Lock", "LWLock")
        }
        print(
            f"      backends ({total} samples): {top}; waiting for a lock {kinds['Lock']:.1f} %,"
            f" for an LWLock {kinds['LWLock']:.1f} %",
            flush=True,
        )


def bounds(rounds: dict[str, list[dict[str, Any]]], one: float) -> dict[str, float]:
    """Medians of p and q (CPU ms per timer) and the two-replica ratios they allow."""

    def per(name: str, key: str) -> float:
        return float(
            median(
                (sum(m[key]) if key == "replicas" else m[key]) * 1000 / m["fired"]
                for m in rounds[name]
            )
        )

    p1, q1 = per("tenure1", "replicas"), per("tenure1", "postgres")
    p2, q2, d2 = per("tenure2", "replicas"), per("tenure2", "postgres"), per("tenure2", "driver")
    core = float(median(sum(m["replicas"]) / m["elapsed"] for m in rounds["tenure1"]))
    system = float(
        median(
            (sum(m["replicas"]) + m["postgres"] + m["driver"]) / m["elapsed"]
            for m in rounds["tenure1"]
        )
    )
    return {
        "p1": p1,
        "q1": q1,
        "p2": p2,
        "q2": q2,
        "d2": d2,
        "core1": core,
        "system1": system,  # cores one replica and its PostgreSQL used together
        # the two cores over what one replica's system used, at equal CPU per timer:
        "system": 2 / system,
        # one replica bound by its own core (1/p per s), two by the machine (2/(p+q)):
        "own_core": 2 * p1 / (p1 + q1),
        # two cores spent at the two-replica CPU per timer, against the measured one replica:
        "machine": 2 / ((p2 + q2 + d2) / 1000) / one,
    }


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
    """One replica against Procrastinate, two replicas against one, and the lateness."""
    del ctx  # no Kafka here: firing writes the outbox; the relay is not measured
    return await _on_server(_run)


async def run_vs_bare(ctx: Context) -> list[Result]:
    """One replica against the bare claim-and-mark loop (and the writes floor, printed)."""
    del ctx
    return await _on_server(_run_vs_bare)


async def _on_server(body: Any) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="tenure-bench-orch-", dir="/tmp") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", database="bench_timers")
        url = pg.start()
        try:
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
            result: list[Result] = await body(url, postmaster)
            return result
        finally:
            pg.stop()


async def measure(
    engine: AsyncEngine, url: str, postmaster: int, blocks: Blocks, measures: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Warm each kind up once, then ``ROUNDS`` interleaved rounds of ``measures`` (their
    order rotated every round), each round under the bench lock; printed as they go."""
    for kind in dict.fromkeys(WORKERS[name][0] for name in measures):
        table = "procrastinate_jobs" if kind == "procrastinate" else "timers"
        ids = blocks.take(table, WARM_UP)
        await make_due(engine, table, ids, "now() - interval '1 second'")
        await workers(kind, url, 1, None)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    order = list(measures)
    for round_ in range(ROUNDS):
        async with bench_lock():
            for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
                measured = await throughput(engine, url, name, blocks, postmaster)
                rounds[name].append(measured)
                show(name, round_ + 1, measured)
    for name in measures:
        values = ", ".join(f"{m['rate']:,.0f}" for m in rounds[name])
        print(f"  {name:<13} rounds: {values}", flush=True)
    return rounds


def per_round(rounds: dict[str, list[dict[str, Any]]], top: str, bottom: str) -> list[float]:
    """``top`` / ``bottom`` round by round."""
    pairs = zip(rounds[top], rounds[bottom], strict=True)
    return [a["rate"] / b["rate"] for a, b in pairs]


async def _loaded(url: str, blocks: Blocks) -> AsyncEngine:
    await upgrade_async(url)
    engine: AsyncEngine = create_engine(url, pool_size=2)
    jobs = blocks.total["procrastinate_jobs"] if blocks.total["procrastinate_jobs"] > PENDING else 0
    print(
        f"loading {blocks.total['timers']:,} timers"
        + (f" and {jobs:,} Procrastinate jobs" if jobs else "")
        + f" ({PENDING:,} of each stay pending)",
        flush=True,
    )
    await load(engine, url, blocks)
    return engine


async def _run(url: str, postmaster: int) -> list[Result]:
    blocks = Blocks(MEASURES)
    engine = await _loaded(url, blocks)
    try:
        rounds = await measure(engine, url, postmaster, blocks, MEASURES)
        best = {name: float(median(m["rate"] for m in ms)) for name, ms in rounds.items()}
        two = ", ".join(f"{x:.2f}" for x in per_round(rounds, "tenure2", "tenure1"))
        print(f"  two / one replica per round: {two}", flush=True)
        cpu = bounds(rounds, best["tenure1"])
        print(
            f"  CPU ms per timer (medians): one replica p {cpu['p1']:.3f}, its PostgreSQL"
            f" q {cpu['q1']:.3f} (the replica used {cpu['core1']:.2f} core, with PostgreSQL"
            f" and this driver {cpu['system1']:.2f} cores); two replicas p {cpu['p2']:.3f},"
            f" q {cpu['q2']:.3f}, driver {cpu['d2']:.3f}\n"
            f"  bounds for two / one on 2 cores: 2p/(p+q) = {cpu['own_core']:.2f} (if one"
            f" replica were bound by its own core); 2 / {cpu['system1']:.2f} cores ="
            f" {cpu['system']:.2f} (same CPU per timer); 2 cores / (p+q+driver of two) /"
            f" one replica's rate = {cpu['machine']:.2f}",
            flush=True,
        )
        per_s = best["procrastinate"]
        full_s = FULL_SHARE * best["tenure1"]
        late = {}
        async with bench_lock():
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

    shape, ours = _shape(), _ours()
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
            metric=(
                f"due timers fired/s by two orchestrator replicas (processes) together; {shape}; "
                f"CPU ms per timer, one replica: replica p {cpu['p1']:.3f}, PostgreSQL q "
                f"{cpu['q1']:.3f}, together {cpu['system1']:.2f} cores; two replicas: p "
                f"{cpu['p2']:.3f}, q {cpu['q2']:.3f}; bounds on 2 cores: 2p/(p+q) "
                f"{cpu['own_core']:.2f}, 2 / one replica's cores {cpu['system']:.2f}, 2 cores at "
                f"the two-replica CPU per timer {cpu['machine']:.2f}x the one-replica rate"
            ),
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


def _shape(procrastinate: bool = True) -> str:
    jobs = f" and {PENDING:,} pending Procrastinate jobs" if procrastinate else ""
    also = f" ({PROCRASTINATE_BACKLOG:,} jobs)" if procrastinate else ""
    jobs_rate = " (jobs/s: go to last job)" if procrastinate else ""
    return (
        f"{PENDING:,} pending timers (one per journey, due in a year){jobs} in the same "
        f"embedded PostgreSQL 16; per measurement a block of {BACKLOG:,} timers{also} made due "
        f"at once; timers/s between the commits of {STEADY[0]:.0%} and {STEADY[1]:.0%} of the "
        f"block{jobs_rate}; median of {ROUNDS} interleaved rounds"
    )


def _ours() -> str:
    from orchestrator.settings import OrchestratorSettings

    settings = OrchestratorSettings()
    return (
        f"one orchestrator replica with its default settings (fire_batch: claim a batch of "
        f"{settings.timer_batch} under a lease, then fire it in {settings.timer_concurrency} "
        "transaction(s) at once split by customer, each reading every fact the step decisions "
        "need in one statement and writing the state changes, history rows and outbox rows "
        "with one statement per table)"
    )


async def _run_vs_bare(url: str, postmaster: int) -> list[Result]:
    """``BARE_MEASURES`` interleaved, no Procrastinate, no lateness."""
    from orchestrator.settings import OrchestratorSettings

    blocks = Blocks(BARE_MEASURES, lateness=False)
    engine = await _loaded(url, blocks)
    try:
        rounds = await measure(engine, url, postmaster, blocks, BARE_MEASURES)
    finally:
        await engine.dispose()
    best = {name: float(median(m["rate"] for m in ms)) for name, ms in rounds.items()}
    pairs = [("tenure1", "bare"), ("writes", "bare"), ("leased", "bare"), ("tenure1", "leased")]
    for top, bottom in pairs:
        ratios = ", ".join(f"{x:.3f}" for x in per_round(rounds, top, bottom))
        print(
            f"  {top} / {bottom} per round: {ratios}; medians {best[top] / best[bottom]:.3f}",
            flush=True,
        )
    batch = OrchestratorSettings().timer_batch
    bare = (
        f"peer: the physical limit, a bare asyncpg loop that claims due timers with FOR UPDATE "
        f"SKIP LOCKED and marks them fired, {batch} a statement (no journey, "
        "decision, history or outbox), same database, same run"
    )
    return [
        Result(
            name="orchestrator_timers_vs_bare_loop",
            metric=f"due timers fired/s by {_ours()}; {_shape(procrastinate=False)}; the "
            f"writes floor (those timers' rows written by a bare loop) {best['writes']:,.0f}/s, "
            f"behind the lease protocol {best['leased']:,.0f}/s",
            value=best["tenure1"],
            unit="timers/s",
            baseline=bare,
            baseline_value=best["bare"],
        )
    ]
