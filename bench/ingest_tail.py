"""When the slow answers of the single-event load come, and what happened just then.

    .venv/bin/python -m bench.ingest_tail                 # 60 s, as ingest_single_latency_p99
    .venv/bin/python -m bench.ingest_tail --seconds 30 --realtime

Applies the load of ``ingest_single_latency_p99`` (``POST /v1/events``, one event a
request, open loop at ``bench.ingest.RATE`` requests/s after its warm-up: until the
broker's JIT compilers are quiet)
to ``python -m ingest`` on a broker of its own, and records, second by second of the
timed part:

- the answers slower than ``SLOW_MS`` and the slowest one;
- ingest's garbage collections (``gc.callbacks`` inside the ingest process): how many,
  the longest, and how many of generation 2;
- the broker JVM's stop-the-world pauses (``-Xlog:safepoint``: its collections and the
  rest), total and longest;
- the CPU used (cores) by ingest, the broker, the load generator (this process) and the
  whole machine (``/proc``), and the CPU the hypervisor took from this virtual machine
  (steal time in ``/proc/stat``: other guests of a shared host).

It then counts the slow answers that were in flight during an ingest collection or a
broker pause longer than ``PAUSE_MS``, and those in seconds when the machine was
saturated (busier than ``SATURATED`` of its cores). Not part of ``make bench``, and not
a benchmark: the load is the same but the instruments cost a little.

``--realtime`` runs the broker, ingest and the load generator with the ``SCHED_RR``
real-time policy (root only), so that other processes on a shared machine cannot take
the cores from them: it shows what the three do on their own, not what a busy machine
does to them.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from bench import Context
from bench import ingest as bi
from bench.http1 import Http1Pool

SLOW_MS = 25.0  # the goal's p99
PAUSE_MS = 5.0  # a pause at least this long counts as a suspect
SATURATED = 0.95  # share of the machine's cores busy
STOLEN = 0.05  # cores taken by the hypervisor (steal time) that count as a suspect
REALTIME_PRIORITY = 10

SAFEPOINT = re.compile(r'^\[([^\]]+)\].*Safepoint "(\w+)".*Total: (\d+) ns')


# --- the child: python -m ingest with its collections recorded ----------------------------


def child(out: Path) -> None:
    """Run ``python -m ingest``; on exit, write its garbage collections (end time, generation,
    pause in ms) to ``out``."""
    from ingest.__main__ import main

    pauses: list[tuple[float, int, float]] = []
    started = [0.0]

    def observe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = (time.perf_counter() - started[0]) * 1000
            pauses.append((time.time(), info["generation"], pause))

    def terminate(_sig: int, _frame: object) -> None:
        raise SystemExit(0)

    gc.callbacks.append(observe)
    signal.signal(signal.SIGTERM, terminate)
    try:
        main()
    finally:
        out.write_bytes(orjson.dumps(pauses))


# --- the parent ---------------------------------------------------------------------------


@dataclass
class Second:
    slow: int = 0
    slowest: float = 0.0
    gcs: int = 0
    gc_max: float = 0.0
    gen2: int = 0
    jvm_ms: float = 0.0
    jvm_max: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)


def sample_cpu(
    pids: dict[str, int], stop: threading.Event, rows: list[tuple[float, dict[str, float]]]
) -> None:
    """Every second until ``stop``: (time, cores used over that second by each of ``pids``
    and by the machine)."""

    def now() -> dict[str, float]:
        used = {name: bi.cpu_seconds(pid) for name, pid in pids.items()}
        used["machine"] = bi.machine_busy_seconds()
        used["steal"] = stolen_seconds()
        return used

    last, last_t = now(), time.time()
    while not stop.wait(1.0):
        used, t = now(), time.time()
        rows.append((t, {k: (used[k] - last[k]) / (t - last_t) for k in used}))
        last, last_t = used, t


def stolen_seconds() -> float:
    """CPU seconds the hypervisor has given to others instead of this machine (steal)."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8]) / bi.CLK_TCK


def jvm_pauses(log: Path) -> list[tuple[float, str, float]]:
    """(end time, kind, ms) of every safepoint the broker's JVM logged."""
    pauses = []
    for line in log.read_text(errors="replace").splitlines():
        match = SAFEPOINT.match(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            pauses.append((at, match[2], int(match[3]) / 1e6))
    return pauses


async def load(
    ctx: Context, seconds: int, out: Path, logdir: Path
) -> tuple[float, bi.Latencies, list[tuple[float, float]], list[tuple[float, dict[str, float]]]]:
    """The latency benchmark's load; returns (start, latencies, (launch time, ms) per
    request, CPU per second)."""
    argv = [sys.executable, "-m", "bench.ingest_tail", "--child", str(out)]
    work = bi.Workload.recent(bi.RATE * (seconds + bi.WARMUP_S))
    async with bi.ingest_process(ctx, logdir, argv=argv) as ingest:
        host, port = ingest.url.removeprefix("http://").split(":")
        pool = Http1Pool(host, int(port), bi.HEADERS, max_connections=bi.MAX_CONNECTIONS)
        answers: list[tuple[float, float]] = []

        async def post(i: int) -> str | None:
            status = await pool.post("/v1/events", work.records.values[i])
            return None if status == 202 else str(status)

        async def timed_post(i: int) -> str | None:
            launched = time.time()
            try:
                return await post(i)
            finally:
                answers.append((launched, (time.time() - launched) * 1000))

        stop, rows = threading.Event(), []
        pids = {"ingest": ingest.proc.pid, "broker": ctx.broker_pid or 0, "bench": os.getpid()}
        try:
            warmed = await bi.warm_up(post, ctx.broker_pid, bi.Latencies())
            print(warmed, flush=True)
            latencies = bi.Latencies()
            bi.settle_garbage()
            sampler = threading.Thread(target=sample_cpu, args=(pids, stop, rows), daemon=True)
            sampler.start()
            start = time.time()
            with bi.CpuMeter([ingest.proc.pid], ctx.broker_pid) as cpu:
                await bi.open_loop(timed_post, bi.WARM, bi.RATE * seconds, latencies)
            stop.set()
            sampler.join()
        finally:
            stop.set()
            await pool.aclose()
        latencies.cpu = cpu.describe()
    return start, latencies, answers, rows


def in_pause(pauses: list[tuple[float, float]], launched: float, ms: float) -> bool:
    """Whether a request in flight from ``launched`` for ``ms`` overlapped one of ``pauses``
    ((end, ms), sorted by end)."""
    # pauses do not overlap one another: the first one ending after the launch is the only
    # candidate
    i = bisect.bisect_left(pauses, (launched, 0.0))
    if i == len(pauses):
        return False
    end, length = pauses[i]
    return end - length / 1000 <= launched + ms / 1000


def report(
    start: float,
    seconds: int,
    answers: list[tuple[float, float]],
    gcs: list[tuple[float, int, float]],
    jvm: list[tuple[float, str, float]],
    cpu: list[tuple[float, dict[str, float]]],
) -> None:
    table = [Second() for _ in range(seconds + 1)]

    def at(t: float) -> Second | None:
        i = int(t - start)
        return table[i] if 0 <= i <= seconds else None

    for launched, ms in answers:
        row = at(launched)
        if row is not None and ms > SLOW_MS:
            row.slow += 1
            row.slowest = max(row.slowest, ms)
    for end, gen, ms in gcs:
        row = at(end)
        if row is not None:
            row.gcs += 1
            row.gc_max = max(row.gc_max, ms)
            row.gen2 += gen == 2
    for end, _kind, ms in jvm:
        row = at(end)
        if row is not None:
            row.jvm_ms += ms
            row.jvm_max = max(row.jvm_max, ms)
    for t, cores in cpu:
        row = at(t - 0.5)
        if row is not None:
            row.cores = cores
    print(
        f"\nsecond  slow(>{SLOW_MS:.0f} ms) slowest | ingest GC: n  longest gen2 | broker pauses: "
        f"total longest (ms) | cores: ingest broker bench machine steal"
    )
    for i, row in enumerate(table):
        c = row.cores
        print(
            f"{i:6d}  {row.slow:13d} {row.slowest:7.0f} | {row.gcs:11d} {row.gc_max:8.1f} "
            f"{row.gen2:4d} | {row.jvm_ms:20.1f} {row.jvm_max:7.1f} | {c.get('ingest', 0):12.2f} "
            f"{c.get('broker', 0):6.2f} {c.get('bench', 0):5.2f} {c.get('machine', 0):7.2f} "
            f"{c.get('steal', 0):5.2f}"
        )
    slow = [(t, ms) for t, ms in answers if ms > SLOW_MS]
    ingest_pauses = sorted((end, ms) for end, _gen, ms in gcs if ms >= PAUSE_MS)
    broker_pauses = sorted((end, ms) for end, _kind, ms in jvm if ms >= PAUSE_MS)
    cpus = os.cpu_count() or 1
    busy = {i for i, row in enumerate(table) if row.cores.get("machine", 0) > SATURATED * cpus}
    stolen = {i for i, row in enumerate(table) if row.cores.get("steal", 0) >= STOLEN}
    during: Counter[str] = Counter()
    for launched, ms in slow:
        if in_pause(ingest_pauses, launched, ms):
            during["an ingest collection"] += 1
        if in_pause(broker_pauses, launched, ms):
            during["a broker JVM pause"] += 1
        if int(launched - start) in busy:
            during["a saturated second"] += 1
        if int(launched - start) in stolen:
            during["a second with steal"] += 1
    gen = Counter(g for end, g, _ms in gcs if start <= end <= start + seconds)
    longest = max((ms for end, _g, ms in gcs if start <= end <= start + seconds), default=0.0)
    print(
        f"\n{len(slow)} of {len(answers)} answers slower than {SLOW_MS:.0f} ms. In flight during "
        f"(a request may count in several): an ingest collection >= {PAUSE_MS:.0f} ms: "
        f"{during['an ingest collection']}; a broker JVM pause >= {PAUSE_MS:.0f} ms: "
        f"{during['a broker JVM pause']}; in a second with the machine > {SATURATED:.0%} busy: "
        f"{during['a saturated second']}; in a second with >= {STOLEN} core stolen by the "
        f"hypervisor: {during['a second with steal']} ({len(stolen)} such seconds)."
    )
    timed = [ms for end, ms in broker_pauses if start <= end <= start + seconds]
    print(
        f"while timed: ingest collections {dict(sorted(gen.items()))} by generation, longest "
        f"{longest:.1f} ms; broker pauses >= {PAUSE_MS:.0f} ms: {len(timed)}, longest "
        f"{max(timed, default=0.0):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_tail")
    parser.add_argument("--seconds", type=int, default=bi.DURATION_S)
    parser.add_argument("--realtime", action="store_true", help="SCHED_RR for all three")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    from bench.__main__ import _raise_on_sigterm, bench_broker

    _raise_on_sigterm()
    if args.realtime:  # inherited by the broker and ingest, started below
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))
    with tempfile.TemporaryDirectory(prefix="tenure-bench-tail-", dir="/tmp") as tmp:
        out, gclog = Path(tmp) / "gc.json", Path(tmp) / "jvm.log"
        with bench_broker(jvm_options=(f"-Xlog:safepoint:file={gclog}:utctime",)) as ctx:
            start, latencies, answers, cpu = asyncio.run(load(ctx, args.seconds, out, Path(tmp)))
        print(f"ingest  {latencies}")
        gcs = [(end, gen, ms) for end, gen, ms in orjson.loads(out.read_bytes())]
        report(start, args.seconds, answers, gcs, jvm_pauses(gclog), cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
