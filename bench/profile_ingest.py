"""Where ingest's CPU goes under the benchmark loads: a CPU-time sampling profile.

    .venv/bin/python -m bench.profile_ingest batch    # POST /v1/batch, as ingest_batch_*
    .venv/bin/python -m bench.profile_ingest single   # POST /v1/events at 500/s, 20 s

Starts a broker of its own, runs ``python -m ingest`` (one worker) under a sampler,
applies the load and prints the profile. Not part of ``make bench``.

The sampler is ``setitimer(ITIMER_PROF)``: the kernel signals the process every
``INTERVAL_S`` of CPU time it used, and the handler records the Python stack. Time
waiting (epoll with nothing to do) is not sampled, so the shares are shares of CPU,
and the overhead is a few percent, where pyinstrument and cProfile slowed this
workload down two to three times (they hook every call). Time in a C function
(pydantic-core, orjson, a syscall) shows under the Python function that called it.
Sampling runs only while the timed load runs (the parent signals SIGUSR1 and SIGUSR2).

The "groups" are a reading aid: each sample goes to the library of its innermost frame
that belongs to one (``GROUPS``, by file path), so that time in the standard library
(asyncio's socket writes, say) counts for the library that called it; what matches none
is the event loop's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pickle
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import Context
from bench import ingest as bi
from bench.http1 import Http1Pool

INTERVAL_S = 0.002
BATCH_EVENTS = 60_000
SINGLE_SECONDS = 20

Frame = tuple[str, int, str]  # file, first line, function
Stack = tuple[Frame, ...]  # innermost first


# --- the child: python -m ingest under the sampler ---------------------------------------


def child(out: Path) -> None:
    from ingest.__main__ import main  # imported before sampling starts

    samples: collections.Counter[Stack] = collections.Counter()
    active = False

    def sample(_sig: int, frame: FrameType | None) -> None:
        if not active:
            return
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, code.co_firstlineno, code.co_name))
            frame = frame.f_back
        samples[tuple(stack)] += 1

    def switch(sig: int, _frame: FrameType | None) -> None:
        nonlocal active
        active = sig == signal.SIGUSR1

    def terminate(_sig: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # uvicorn re-raises the SIGTERM it caught once it has shut down

    signal.signal(signal.SIGUSR1, switch)
    signal.signal(signal.SIGUSR2, switch)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL_S, INTERVAL_S)
    try:
        main()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        out.write_bytes(pickle.dumps(dict(samples)))


# --- the parent: broker, load, report ----------------------------------------------------


async def profile(ctx: Context, load: str, out: Path, logdir: Path) -> None:
    argv = [sys.executable, "-m", "bench.profile_ingest", "--child", str(out)]
    if load == "batch":
        work = bi.Workload.recent(BATCH_EVENTS)
    else:
        work = bi.Workload.recent(bi.RATE * (SINGLE_SECONDS + bi.WARMUP_S))
    async with bi.ingest_process(ctx, logdir, argv=argv) as ingest:
        pid = ingest.proc.pid
        if load == "batch":
            async with bi.batch_client(ingest) as client:
                warm = slice(0, bi.BATCH_WARMUP)
                await bi.post_batches(client, work.batch_bodies(warm), bi.Answers())
                answers = bi.Answers()
                os.kill(pid, signal.SIGUSR1)
                with bi.CpuMeter([pid], ctx.broker_pid) as cpu:
                    await bi.post_batches(client, work.batch_bodies(slice(None)), answers)
                os.kill(pid, signal.SIGUSR2)
            print(f"{answers.accepted / cpu.wall:,.0f} events/s; {cpu.describe()}")
        else:
            host, port = ingest.url.removeprefix("http://").split(":")
            pool = Http1Pool(host, int(port), bi.HEADERS, max_connections=bi.MAX_CONNECTIONS)

            async def post(i: int) -> str | None:
                status = await pool.post("/v1/events", work.records.values[i])
                return None if status == 202 else str(status)

            try:
                await bi.open_loop(post, 0, bi.WARM, bi.Latencies())
                latencies = bi.Latencies()
                os.kill(pid, signal.SIGUSR1)
                with bi.CpuMeter([pid], ctx.broker_pid) as cpu:
                    await bi.open_loop(post, bi.WARM, bi.RATE * SINGLE_SECONDS, latencies)
                os.kill(pid, signal.SIGUSR2)
            finally:
                await pool.aclose()
            latencies.cpu = cpu.describe()
            print(latencies)


# Each sample goes to the group of its innermost frame that belongs to one (by file path):
# time in the standard library (asyncio's stream writes, the loop) counts for the library
# that called it. Samples with no such frame are the event loop's own work.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("aiokafka (requests to the broker, their encoding, the sender task)", ("aiokafka/",)),
    ("the transactional publisher (common/kafka.py)", ("common/kafka.py",)),
    ("validation (pydantic, common/events.py)", ("pydantic/", "common/events.py")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    (
        "ingest's own code (endpoints, keys, admission)",
        ("ingest/", "common/apikeys.py", "common/http.py", "common/clock.py"),
    ),
    ("HTTP: uvicorn (httptools protocol, writing answers)", ("uvicorn/",)),
    ("HTTP: starlette, fastapi (routing, middlewares)", ("starlette/", "fastapi/", "anyio/")),
]


def _group(stack: Stack) -> str:
    for file, _line, _name in stack:  # innermost first
        for label, markers in GROUPS:
            if any(marker in file for marker in markers):
                return label
    return "event loop, other"


def _where(frame: Frame) -> str:
    file, line, name = frame
    for marker in ("site-packages/", "lib/python3.11/", f"{bi.REPO}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file}:{line})"


def report(samples: dict[Stack, int], top: int) -> None:
    total = sum(samples.values())
    if not total:
        print("no samples")
        return
    groups: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, n in samples.items():
        groups[_group(stack)] += n
        own[_where(stack[0])] += n
        for where in {_where(frame) for frame in stack}:
            inclusive[where] += n
    print(f"\n{total:,} samples, one per {INTERVAL_S * 1000:.0f} ms of CPU (or per kernel tick)")
    for title, counter, limit in (
        ("groups", groups, len(groups)),
        ("own time (innermost Python frame)", own, top),
        ("inclusive time (below the event loop)", inclusive, top),
    ):
        print(f"\n{title}:")
        shown = [(w, n) for w, n in counter.most_common() if n < 0.95 * total or counter is own]
        for where, n in shown[:limit]:
            print(f"  {100 * n / total:5.1f}%  {where}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest")
    parser.add_argument("load", nargs="?", choices=("batch", "single"), default="batch")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", type=Path, help="keep the samples (pickle) here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    from bench.__main__ import _raise_on_sigterm, bench_broker

    _raise_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="tenure-bench-profile-", dir="/tmp") as tmp:
        out = args.save or Path(tmp) / "samples.pickle"
        with bench_broker() as ctx:
            asyncio.run(profile(ctx, args.load, out, Path(tmp)))
        report(pickle.loads(out.read_bytes()), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
