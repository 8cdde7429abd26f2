"""Where the scorer's CPU goes: py-spy on one scorer over the throughput benchmark's backlog.

    .venv/bin/python -m bench.scoring_profile worker --seconds 20 --out /tmp/worker.raw
    .venv/bin/python -m bench.scoring_profile loop --seconds 8 --out /tmp/loop.raw

Starts a broker of its own, fills a fresh prefix with the ``scoring_throughput``
backlog (30,000 events, 3,000 customers), starts the worker (or the bare loop) and,
once it counts its first event, samples it with ``py-spy record --rate 200 --format raw``
(every thread, no idle frames filtered by py-spy). It prints the rate and CPU per event
over the sampled window and the share of the busy samples (those whose innermost frame
is not a wait in a selector, a lock or a condition) that fall in each row of
:data:`ROWS` (a sample counts in every row whose pattern matches a frame of its stack).
Not a benchmark (py-spy slows the process it samples): shares, not rates. Needs root
or ptrace rights.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.__main__ import bench_broker
from bench.events import event_records, recent_start
from bench.scoring import CUSTOMERS, RECORDS, _backlog, counted, cpu_seconds, new_prefix, scorer

ROWS: list[tuple[str, str]] = [
    ("the rules (score)", r"score \(scoring/domain/rules\.py"),
    ("states written (table write, changelog record)", r"put \(scoring/adapters/faust_app\.py"),
    ("produce requests written (aiokafka's sender)", r"_sender_routine|_send_produce_req"),
    (
        "signals, snapshots and deltas handed to the producer",
        r"^(?!.*put \(scoring/adapters/faust_app).*send \(aiokafka/producer/producer\.py",
    ),
    ("faust's fetcher (records to the conductor)", r"_drain_messages \("),
    (
        "  of it: faust's conductor (record to stream queue)",
        r"on_message \(faust/transport/conductor\.py",
    ),
    ("  of it: mode's wait_first (tasks per record)", r"wait_first \(mode/services\.py"),
    ("faust's stream iterator", r"_py_aiter \(|_c_aiter|streams\.pyx"),
    ("faust's take_events (batches, acks)", r"take_events \(faust/streams\.py"),
    ("offset commit", r"commit \(faust/transport/consumer\.py"),
    ("parse_event", r"parse_event \("),
    ("table read (RocksDB get, decode)", r"get \(scoring/adapters/faust_app\.py"),
    ("the /metrics server (the bench's polls)", r"prometheus_client|socketserver\.py"),
    (
        "faust's consumer thread (aiokafka fetches)",
        r"run_in_thread|_getmany \(faust/transport/drivers",
    ),
]
IDLE = re.compile(r"(select|poll|wait|_wait_for_tstate_lock|acquire) \((selectors|threading)\.py")


def shares(raw: Path) -> tuple[int, int, Counter[str]]:
    """(all samples, busy samples, busy samples per row) of a py-spy raw (collapsed) file."""
    total = busy = 0
    rows: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        n = int(count)
        total += n
        if IDLE.search(stack.rsplit(";", 1)[-1]):
            continue
        busy += n
        for name, pattern in ROWS:
            if re.search(pattern, stack):
                rows[name] += n
    return total, busy, rows


async def profile(kind: str, seconds: int, out: Path) -> None:
    logdir = Path(tempfile.mkdtemp(prefix="tenure-bench-scoring-logs-", dir="/tmp"))
    with bench_broker() as ctx:
        records = event_records(RECORDS, customers=CUSTOMERS, start=recent_start(RECORDS))
        prefix = await new_prefix(ctx, f"scoring-profile-{kind}")
        await _backlog(ctx, prefix, records.keys, records.values)
        async with scorer(kind, ctx, prefix, logdir) as (port, pid), httpx.AsyncClient() as client:
            while await counted(client, port) == 0:
                await asyncio.sleep(0.1)
            n0, t0, c0 = await counted(client, port), time.monotonic(), cpu_seconds(pid)
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "200",
                "--format", "raw", "--duration", str(seconds), "--pid", str(pid),
                "--output", str(out), "--threads",
            )  # fmt: skip
            await spy.wait()
            n1, t1, c1 = await counted(client, port), time.monotonic(), cpu_seconds(pid)
    events = max(1, n1 - n0)
    print(
        f"{kind}: {events / (t1 - t0):,.0f} events/s under py-spy, "
        f"{(c1 - c0) / events * 1e6:,.0f} µs CPU/event, {(c1 - c0) / (t1 - t0):.2f} core"
    )
    total, busy, rows = shares(out)
    print(f"{total:,} samples, {busy:,} busy ({busy / max(1, total):.0%})")
    for name, _ in ROWS:
        print(f"{rows[name] / max(1, busy) * 100:6.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_profile")
    parser.add_argument("kind", choices=["worker", "loop"])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tenure-scoring-profile.raw"))
    parser.add_argument("--shares-only", action="store_true", help="only read --out again")
    args = parser.parse_args()
    if args.shares_only:
        total, busy, rows = shares(args.out)
        print(f"{total:,} samples, {busy:,} busy ({busy / max(1, total):.0%})")
        for name, _ in ROWS:
            print(f"{rows[name] / max(1, busy) * 100:6.1f} %  {name}")
        return
    asyncio.run(profile(args.kind, args.seconds, args.out))


if __name__ == "__main__":
    main()
