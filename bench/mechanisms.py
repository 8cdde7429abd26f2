"""What a speed-only mechanism of ingest buys: configurations side by side, interleaved.

    .venv/bin/python -m bench.mechanisms latency --seconds 20 --rounds 3 \\
        new old gc_off spacing0 rest0 producers1
    .venv/bin/python -m bench.mechanisms batch --rounds 3 new producers1 spacing0 rest0

Each configuration is ``python -m ingest`` with some settings changed (or the code of
another commit, ``old``: ``PYTHONPATH`` at the ``git worktree`` given by ``--old``). One
broker for the run; every round measures every configuration once, the order rotated
from round to round, so that a busy stretch of the shared machine hits them alike.
Each round also measures the baseline of the headline ratio, in the same rotation:

- ``latency``: the load of ``ingest_single_latency_*`` (``POST /v1/events``, one event a
  request, open loop at ``bench.ingest.RATE``/s) for ``--seconds`` after
  ``--warmup`` seconds per process (the broker's JIT is warmed once, first, as
  ``bench.ingest`` does); baseline the bare producer's ``send_and_wait`` of the same
  records (the floor). Prints p50, p99, ingest's CPU per request and the ratios.
- ``batch``: the load of ``ingest_batch_throughput``; baseline the bare producer
  (the limit). Prints events/s, ingest's CPU per event and the ratio.

The load average is printed at each measurement; everything is also written as JSON to
``--out``. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from bench import Context
from bench import ingest as bi
from bench.__main__ import _raise_on_sigterm, bench_broker
from bench.http1 import Http1Pool

CONFIGS: dict[str, dict[str, str]] = {
    "new": {},
    "old": {},  # PYTHONPATH set from --old
    "fast": {},  # PYTHONPATH set from --fast
    "gc_off": {"TENURE_INGEST_GC_FREEZE": "false"},
    "spacing0": {"TENURE_INGEST_TRANSACTION_SPACING_MS": "0"},
    "rest0": {"TENURE_INGEST_TRANSACTION_REST_MS": "0"},  # a setting of c652ca1 and before
    "producers1": {"TENURE_INGEST_TRANSACTION_PRODUCERS": "1"},
    "per_record": {"TENURE_BENCH_PER_RECORD_SEND": "1"},  # a temporary variant's switch
}
BASELINE = "raw"
REALTIME_PRIORITY = 10


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Measured:
    config: str
    round: int
    load: str
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""


def env_of(config: str, trees: dict[str, Path | None]) -> dict[str, str]:
    env = dict(CONFIGS[config])
    tree = trees.get(config)
    if config in ("old", "fast") and tree is None:
        raise SystemExit(f"config {config!r} needs --{config} <worktree>")
    tree = tree or trees.get("tree")
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}/services:{tree}/libs"
    return env


def trees(args: argparse.Namespace) -> dict[str, Path | None]:
    return {"old": args.old, "fast": args.fast, "tree": args.tree}


# --- latency -------------------------------------------------------------------------------


async def _ingest_latency(
    ctx: Context, work: bi.Workload, logdir: Path, env: dict[str, str], warm: int, timed: int
) -> tuple[bi.Latencies, float]:
    values = work.records.values
    async with bi.ingest_process(ctx, logdir, env=env) as ingest:
        host, port = ingest.url.removeprefix("http://").split(":")
        pool = Http1Pool(host, int(port), bi.HEADERS, max_connections=bi.MAX_CONNECTIONS)

        async def post(i: int) -> str | None:
            status = await pool.post("/v1/events", values[i])
            return None if status == 202 else str(status)

        try:
            warmed = bi.Latencies()
            await bi.open_loop(post, 0, warm, warmed)
            result = bi.Latencies()
            bi.settle_garbage()
            with bi.CpuMeter(ingest.pids(), ctx.broker_pid) as cpu:
                await bi.open_loop(post, warm, timed, result)
            result.cpu = cpu.describe()
        finally:
            await pool.aclose()
    await bi.check_written(
        ctx, ingest.prefix, warmed.ok + result.ok, refused=warmed.failed + result.failed
    )
    return result, cpu.per_item(timed)["ingest"]


async def _raw_latency(
    ctx: Context, work: bi.Workload, warm: int, timed: int
) -> tuple[bi.Latencies, float]:
    prefix = ctx.fresh_name("raw-latency") + "."
    await bi.create_event_topics(ctx, prefix)
    topics = work.topics(prefix)
    records = work.records
    producer = bi.raw_producer(ctx)

    async def send(i: int) -> str | None:
        await producer.send_and_wait(
            topics[i], records.values[i], key=records.keys[i], headers=work.headers[work.kinds[i]]
        )
        return None

    await producer.start()
    try:
        await bi.open_loop(send, 0, warm, bi.Latencies())
        result = bi.Latencies()
        bi.settle_garbage()
        with bi.CpuMeter([], ctx.broker_pid) as cpu:
            await bi.open_loop(send, warm, timed, result)
        result.cpu = cpu.describe()
    finally:
        await producer.stop()
    return result, 0.0


async def run_latency(ctx: Context, args: argparse.Namespace) -> list[Measured]:
    warm, timed = bi.RATE * args.warmup, bi.RATE * args.seconds
    work = bi.Workload.recent(warm + timed)
    out: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="tenure-mech-", dir="/tmp") as tmp:
        logdir = Path(tmp)
        # The broker's JIT, once, under the first configuration's load (not counted).
        async with bi.ingest_process(ctx, logdir, env=env_of(args.configs[0], trees(args))) as ing:
            host, port = ing.url.removeprefix("http://").split(":")
            pool = Http1Pool(host, int(port), bi.HEADERS, max_connections=bi.MAX_CONNECTIONS)

            async def post(i: int) -> str | None:
                status = await pool.post("/v1/events", work.records.values[i % len(work)])
                return None if status == 202 else str(status)

            try:
                if args.broker_warmup:
                    warmed = await bi.warm_up(post, ctx.broker_pid, bi.Latencies())
                    print(f"  broker {warmed}", flush=True)
            finally:
                await pool.aclose()
        order = [BASELINE, *args.configs]
        for round_ in range(args.rounds):
            shift = round_ % len(order)
            for config in order[shift:] + order[:shift]:
                load = load_average()
                if config == BASELINE:
                    lat, cpu = await _raw_latency(ctx, work, warm, timed)
                else:
                    lat, cpu = await _ingest_latency(
                        ctx, work, logdir, env_of(config, trees(args)), warm, timed
                    )
                m = Measured(config, round_ + 1, load, note=f"{lat}")
                m.figures = {
                    "p50_ms": lat.quantile(0.5),
                    "p99_ms": lat.quantile(0.99),
                    "cpu_ms_per_request": cpu * 1000,
                    "errors": float(lat.failed),
                }
                out.append(m)
                print(f"  round {round_ + 1} {config:<11} load {load}  {lat}", flush=True)
    return out


# --- batch ---------------------------------------------------------------------------------


async def _ingest_batch(
    ctx: Context, work: bi.Workload, logdir: Path, env: dict[str, str]
) -> bi.Sample:
    bodies = work.batch_bodies(slice(None))
    warm, timed = bi.Answers(), bi.Answers()
    async with (
        bi.ingest_process(ctx, logdir, env=env) as ingest,
        bi.batch_client(ingest) as client,
    ):
        await bi.post_batches(client, work.batch_bodies(slice(0, bi.BATCH_WARMUP)), warm)
        gc.collect()
        with bi.CpuMeter(ingest.pids(), ctx.broker_pid) as cpu:
            await bi.post_batches(client, bodies, timed)
    refused = warm.refused + timed.refused
    await bi.check_written(ctx, ingest.prefix, warm.accepted + timed.accepted, refused=refused)
    return bi.Sample(
        timed.accepted / cpu.wall,
        cpu.describe(),
        refused=timed.refused,
        cpu_per_event=cpu.per_item(timed.accepted),
    )


async def run_batch(ctx: Context, args: argparse.Namespace) -> list[Measured]:
    work = bi.Workload.recent(bi.BATCH_RECORDS)
    out: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="tenure-mech-", dir="/tmp") as tmp:
        logdir = Path(tmp)
        print(f"  warm-up raw {await bi.raw(ctx, work, logdir)} (not counted)", flush=True)
        order = [BASELINE, *args.configs]
        for round_ in range(args.rounds):
            shift = round_ % len(order)
            for config in order[shift:] + order[:shift]:
                load = load_average()
                if config == BASELINE:
                    sample = await bi.raw(ctx, work, logdir)
                else:
                    sample = await _ingest_batch(ctx, work, logdir, env_of(config, trees(args)))
                m = Measured(config, round_ + 1, load, note=str(sample))
                m.figures = {
                    "events_per_s": sample.rate,
                    "cpu_us_per_event": sample.cpu_per_event.get("ingest", 0.0) * 1e6,
                    "refused": float(sample.refused),
                }
                out.append(m)
                print(f"  round {round_ + 1} {config:<11} load {load}  {sample}", flush=True)
    return out


# --- summary -------------------------------------------------------------------------------


def summarise(mode: str, rows: list[Measured]) -> str:
    """Per configuration: the figures of each round and their medians, with the ratios to
    the baseline of the same round."""
    key = "p99_ms" if mode == "latency" else "events_per_s"
    base = {m.round: m.figures[key] for m in rows if m.config == BASELINE}
    lines = []
    for config in dict.fromkeys(m.config for m in rows):
        mine = [m for m in rows if m.config == config]
        cells = []
        for name in mine[0].figures:
            values = [m.figures[name] for m in mine]
            each = " / ".join(f"{v:,.2f}" for v in values)
            cells.append(f"{name} {each} (median {median(values):,.2f})")
        ratios = [m.figures[key] / base[m.round] for m in mine if m.round in base]
        each = " / ".join(f"{r:.3f}" for r in ratios)
        cells.append(f"{key} ratio to {BASELINE} {each} (median {median(ratios):.3f})")
        loads = ", ".join(m.load.split()[0] for m in mine)
        lines.append(f"{config}: " + "; ".join(cells) + f"; load {loads}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mechanisms", description=__doc__)
    parser.add_argument("mode", choices=("latency", "batch"))
    parser.add_argument("configs", nargs="+", choices=[c for c in CONFIGS])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20, help="timed, per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="per ingest process (latency)")
    parser.add_argument(
        "--no-broker-warmup", dest="broker_warmup", action="store_false", help="(smoke tests)"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="SCHED_RR for the broker, ingest and the load generator (root; as "
        "bench.ingest_tail): other processes of a shared machine cannot take their cores",
    )
    parser.add_argument("--old", type=Path, help="a git worktree of the 'old' commit")
    parser.add_argument("--fast", type=Path, help="a git worktree of the 'fast' variant")
    parser.add_argument(
        "--tree", type=Path, help="a git worktree for the other configurations (default: this)"
    )
    parser.add_argument("--out", type=Path, default=Path(f"/tmp/mechanisms-{time.time():.0f}.json"))
    args = parser.parse_args(argv)
    runner: Callable[[Context, argparse.Namespace], Awaitable[list[Measured]]]
    runner = run_latency if args.mode == "latency" else run_batch
    _raise_on_sigterm()
    if args.realtime:  # inherited by the broker and ingest, started below
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    policy = "SCHED_RR" if args.realtime else "normal priority"
    print(f"{started}; load {load_average()}; {policy}; {' '.join(sys.argv)}", flush=True)
    with bench_broker() as ctx:
        rows = asyncio.run(runner(ctx, args))
    summary = summarise(args.mode, rows)
    print("\n" + summary)
    data: dict[str, Any] = {
        "started": started,
        "argv": sys.argv,
        "rows": [vars(m) for m in rows],
        "summary": summary,
    }
    args.out.write_text(json.dumps(data, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
