"""Where the timer worker's time goes (not part of ``make bench``).

    .venv/bin/python -m bench.orchestrator_profile statements        # statements per timer
    .venv/bin/python -m bench.orchestrator_profile waits [N] [R]      # N timers, R replicas
    .venv/bin/python -m bench.orchestrator_profile versus TREE [N] [R] # side by side

``statements``: fires 1,000 due ``retention_call`` timers in this process with the
default settings and counts, with SQLAlchemy's engine events, the statements, the
transactions and the pool checkouts per timer.

``waits``: loads N + 1,000 timers into a fresh embedded PostgreSQL, makes N due, and
lets R replicas (``bench.orchestrator_worker`` processes) fire them, reporting timers
per second, the CPU of each replica and of PostgreSQL (cores, from ``/proc``), and what
PostgreSQL's client backends were doing (``pg_stat_activity`` every 20 ms: running,
waiting for the client, for a lock, for WAL...). With ``SPY=1`` py-spy records each
replica into ``/tmp/orch-prof-<i>.txt`` (raw format).

``versus``: one replica of the code in ``TREE`` (a folder holding ``libs`` and
``services`` of another commit, e.g. from ``git archive <commit> libs services | tar -x``),
one of this tree and the bare loop, on the blocks and steady window of
``bench.orchestrator`` (1,000,000 pending), blocks of N timers (12,000), R interleaved
rounds (4); prints the rates, the ratios per round and the CPU per timer (medians). With
``TENURE_BENCH_LOCK`` each round holds the lock.

To compare two commits otherwise, run either with ``PYTHONPATH=<worktree>:<worktree>/services:
<worktree>/libs`` pointing at a ``git worktree`` of the other one (``bench.orchestrator``
must have ``load`` and ``make_due``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event

import bench.orchestrator as b
from common.clock import ScaledClock
from common.db import async_url, create_engine, upgrade_async
from devstack.postgres import EmbeddedPostgres


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-u", "pgserver"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


async def _fresh(n: int, tmp: str) -> tuple[EmbeddedPostgres, str]:
    pg = EmbeddedPostgres(Path(tmp) / "pg", database="profile")
    url = pg.start()
    await upgrade_async(url)
    engine = create_engine(url, pool_size=2)
    b.PENDING = n + 1_000
    await b.load(engine, url, b.Blocks())
    await b.make_due(engine, "timers", (1, n), "now() - interval '1 second'")
    await engine.dispose()
    return pg, url


async def statements() -> None:
    from orchestrator.domain.playbook import SHIPPED, load_playbooks
    from orchestrator.entrypoints.deps import Deps
    from orchestrator.entrypoints.timers import lease_from_settings
    from orchestrator.service_layer.steps import fire_batch
    from orchestrator.settings import OrchestratorSettings

    with tempfile.TemporaryDirectory(prefix="orch-count-", dir="/tmp") as tmp:
        pg, url = await _fresh(1_000, tmp)
        try:
            settings = OrchestratorSettings()
            engine = create_engine(url)
            counts: Counter[str] = Counter()
            sync = engine.sync_engine
            event.listen(sync, "before_cursor_execute", lambda *a, **k: counts.update(["stmt"]))
            event.listen(sync, "begin", lambda *a: counts.update(["begin"]))
            event.listen(sync.pool, "checkout", lambda *a: counts.update(["checkout"]))
            deps = Deps(
                engine=engine,
                playbooks=load_playbooks(SHIPPED),
                clock=ScaledClock(scale=1.0),
                topic_prefix="profile.",
                rules=settings.rules(),
            )
            lease = lease_from_settings(settings)
            fired = 0
            while rows := await fire_batch(
                stores=deps.stores,
                context=deps.context,
                limit=settings.timer_batch,
                lease=lease,
                concurrency=settings.timer_concurrency,
            ):
                fired += len(rows)
            await engine.dispose()
            print(
                f"fired {fired} (batch {settings.timer_batch}): statements per timer "
                f"{counts['stmt'] / fired:.2f}, transactions {counts['begin']}, "
                f"pool checkouts per timer {counts['checkout'] / fired:.3f}"
            )
        finally:
            pg.stop()


async def waits(n: int, replicas: int) -> None:
    with tempfile.TemporaryDirectory(prefix="orch-waits-", dir="/tmp") as tmp:
        pg, url = await _fresh(n, tmp)
        try:
            argv = [sys.executable, "-m", "bench.orchestrator_worker", "tenure", url]
            procs = [
                subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(replicas)
            ]
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            spy = str(Path(sys.executable).with_name("py-spy"))
            spies = [
                subprocess.Popen(
                    [spy, "record", "-f", "raw", "-r", "200", "--pid", str(proc.pid), "-o", out],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for proc, out in zip(
                    procs, [f"/tmp/orch-prof-{i}.txt" for i in range(replicas)], strict=True
                )
                if os.environ.get("SPY")
            ]
            time.sleep(1)
            done = threading.Event()
            first = {pid: _cpu(pid) for pid in _postgres_pids()}
            last = dict(first)

            def sample_cpu() -> None:  # backends come and go: keep each one's last reading
                while not done.is_set():
                    for pid in _postgres_pids():
                        first.setdefault(pid, 0.0)
                        last[pid] = _cpu(pid) or last.get(pid, 0.0)
                    time.sleep(0.1)

            states: Counter[tuple[str, str, str]] = Counter()

            async def sample_waits() -> None:
                dsn = sa.make_url(async_url(url)).set(drivername="postgresql")
                conn = await asyncpg.connect(dsn.render_as_string(False))
                while not done.is_set():
                    for row in await conn.fetch(
                        "SELECT state, coalesce(wait_event_type, 'running') AS t,"
                        " coalesce(wait_event, '-') AS e FROM pg_stat_activity"
                        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    ):
                        states[(row["state"], row["t"], row["e"])] += 1
                    await asyncio.sleep(0.02)
                await conn.close()

            sampler = threading.Thread(target=sample_cpu)
            sampler.start()
            watcher = asyncio.get_running_loop().create_task(sample_waits())
            before = [_cpu(p.pid) for p in procs]
            began = time.time()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            lines = await asyncio.get_running_loop().run_in_executor(
                None, lambda: [p.stdout.read().strip().splitlines()[-1] for p in procs if p.stdout]
            )
            elapsed = time.time() - began
            after = [_cpu(p.pid) for p in procs]
            done.set()
            sampler.join()
            await watcher
            for proc in procs + spies:
                proc.wait()
            fired = sum(json.loads(line)["fired"] for line in lines)
            replica_cores = [
                round((a - z) / elapsed, 2) for a, z in zip(after, before, strict=True)
            ]
            pg_cores = sum(last[p] - first[p] for p in last) / elapsed
            print(
                f"fired {fired} in {elapsed:.1f} s = {fired / elapsed:,.0f}/s; replica cores "
                f"{replica_cores}; postgres cores {pg_cores:.2f}; load {os.getloadavg()[0]:.1f}"
            )
            total = sum(states.values())
            for (state, kind, what), count in states.most_common(8):
                print(f"  {100 * count / total:5.1f} %  {state} / {kind} / {what}")
        finally:
            pg.stop()


async def versus(tree: str, n: int, rounds: int) -> None:
    other = f"{Path(tree).resolve() / 'libs'}:{Path(tree).resolve() / 'services'}"
    b.BACKLOG, b.ROUNDS = n, rounds
    b.WORKERS.update({"other": ("tenure", 1), "this": ("tenure", 1)})
    measures = ("other", "this", "bare")
    measured = b.throughput

    async def throughput(
        engine: Any, url: str, name: str, blocks: b.Blocks, postmaster: int
    ) -> dict[str, Any]:
        if name == "other":  # its replica imports the other tree's code first
            os.environ["PYTHONPATH"] = other
        try:
            return await measured(engine, url, name, blocks, postmaster)
        finally:
            os.environ.pop("PYTHONPATH", None)

    b.throughput = throughput

    async def body(url: str, postmaster: int) -> list[Any]:
        blocks = b.Blocks(measures, lateness=False)
        engine = await b._loaded(url, blocks)
        try:
            found = await b.measure(engine, url, postmaster, blocks, measures)
        finally:
            await engine.dispose()
        for top, bottom in (("this", "other"), ("other", "bare"), ("this", "bare")):
            ratios = ", ".join(f"{x:.3f}" for x in b.per_round(found, top, bottom))
            print(f"{top} / {bottom} per round: {ratios}")
        for name in measures:
            ms = found[name]
            p = median(sum(m["replicas"]) * 1000 / m["fired"] for m in ms)
            q = median(m["postgres"] * 1000 / m["fired"] for m in ms)
            rate = median(m["rate"] for m in ms)
            print(
                f"{name}: median {rate:,.0f}/s; CPU ms per timer: worker {p:.3f}, postgres {q:.3f}"
            )
        return []

    await b._on_server(body)


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "statements"
    if what == "statements":
        asyncio.run(statements())
    elif what == "versus":
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 12_000
        asyncio.run(versus(sys.argv[2], n, int(sys.argv[4]) if len(sys.argv) > 4 else 4))
    else:
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
        asyncio.run(waits(n, int(sys.argv[3]) if len(sys.argv) > 3 else 1))


if __name__ == "__main__":
    main()
