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

The "groups" are a reading aid: each sample goes to the first group, in the order
listed, one of whose functions is on its stack. They name today's functions of
ingest, starlette, fastapi and aiokafka; what matches none is event-loop work.
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
from collections.abc import Callable
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


def _has(*, file: str = "", names: tuple[str, ...] = ()) -> Callable[[Frame], bool]:
    return lambda f: file in f[0] and (not names or f[2] in names)


GROUPS: list[tuple[str, list[Callable[[Frame], bool]]]] = [
    (
        "auth dependency `def require_writer`, run in the threadpool",
        [_has(file="starlette/concurrency.py"), _has(file="anyio/to_thread.py")],
    ),
    ("validation: EmailStr fields (email_validator)", [_has(file="email_validator/")]),
    (
        "validation: the rest of event_adapter.validate_json/validate_python",
        [_has(names=("validate_json", "validate_python"))],
    ),
    ("metrics: prometheus_client", [_has(file="prometheus_client/")]),
    ("ingest record(): model_dump_json + headers", [_has(file="ingest/app.py", names=("record",))]),
    (
        "ingest admit_time/admit_rate",
        [_has(file="ingest/app.py", names=("admit_time", "admit_rate"))],
    ),
    (
        "aiokafka producer.send(), one Task per record (asyncio.wait_for)",
        [_has(file="aiokafka/producer/producer.py", names=("send",))],
    ),
    (
        "publish_each own lines: asyncio.wait_for per record, asyncio.wait",
        [_has(file="common/kafka.py", names=("publish_each",))],
    ),
    (
        "aiokafka sender + connection (produce requests, responses, futures)",
        [_has(file="aiokafka/")],
    ),
    (
        "post_batch own lines (orjson.loads, EventResult, BatchResult, JSONResponse)",
        [_has(file="ingest/app.py", names=("post_batch",))],
    ),
    ("read_body (request.stream)", [_has(file="ingest/app.py", names=("read_body",))]),
    (
        "response serialisation (fastapi serialize_response, render)",
        [_has(names=("serialize_response", "render"))],
    ),
    ("fastapi solve_dependencies", [_has(names=("solve_dependencies",))]),
    ("uvicorn/h11: writing the response", [_has(file="h11_impl.py", names=("send",))]),
    (
        "uvicorn/h11: reading the request",
        [_has(file="h11_impl.py", names=("data_received", "handle_events")), _has(file="h11/")],
    ),
    (
        "BaseHTTPMiddleware (@app.middleware('http')): anyio task group, streams",
        [_has(file="starlette/middleware/base.py"), _has(file="anyio/")],
    ),
    (
        "starlette/fastapi (routing, exception middlewares)",
        [_has(file="starlette/"), _has(file="fastapi/")],
    ),
]


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
        for label, tests in GROUPS:
            if any(test(frame) for frame in stack for test in tests):
                groups[label] += n
                break
        else:
            idle = stack[0][2] in ("select", "poll")
            groups["event loop: epoll" if idle else "event loop: asyncio (the rest)"] += n
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
