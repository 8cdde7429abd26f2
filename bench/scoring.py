"""Scoring benchmarks: throughput, latency and state size of the faust worker.

- ``scoring_throughput``: events/s of one ``python -m scoring`` worker (RocksDB table
  with its changelog, read_committed, signals and scores out) over a backlog of
  ``RECORDS`` realistic events, divided by the rate of the **limit**: the same pure
  rules in a bare aiokafka consume-and-produce loop (``bench.scoring_loop``: state in
  a dict, no changelog) on the same broker and data, in the same run. Both are
  processes; both count events in ``tenure_scoring_events_total``, polled from their
  metrics port every ``POLL_S``; the rate runs from the first poll that counts an event
  to the last poll before the ``RECORDS``-th (start-up, rebalancing and the idle tail
  excluded, so the poll interval adds no error). ``ROUNDS`` rounds, interleaved, order
  rotated; medians.
- ``scoring_cpu_per_event``: over the same rounds, the CPU time (user + system, all
  threads, from ``/proc/<pid>/stat``) each process spent per event in the same timed
  section. On a shared machine the rate depends on the share of the cores a process
  got; its CPU per event does not, so this ratio (worker / loop) is the stable one.
- ``scoring_latency_p50`` / ``_p99``: event acknowledged by ingest (``POST /v1/batch``
  answered 202) → its customer's snapshot read from ``scores``, at ``RATE`` events/s
  for ``DURATION_S``; every event is a new customer's first, so each one makes a
  snapshot. Baseline: the same through the bare loop instead of the worker.
- ``scoring_state_bytes_1m`` / ``scoring_state_rss_1m``: a RocksDB table of
  100,000 and of 1,000,000 customers, loaded directly (pushing a million events
  through the broker does not fit in a run on two cores): realistic states made by
  the rules from a few events each, written the way faust writes the table (raw key,
  JSON value, the worker's RocksDB options), then fully read once (what the clock
  sweep does). Bytes on disk per customer and the loader's peak memory, each at 1M
  against 100k (ratio per customer for bytes, so 1.0 is linear growth).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import Context, Result, wait_for_leaders
from bench.events import event_records, recent_start
from common.kafka import ensure_topics
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.procs import free_port, spawn, stop

REPO = Path(__file__).resolve().parent.parent
RECORDS = 30_000
CUSTOMERS = 3_000
ROUNDS = 2
POLL_S = 0.5  # between two reads of a scorer's count (each costs it an exposition)
RATE = 1_000  # events/s offered to ingest in the latency benchmark (the figure)
LOW_RATE = 250  # and a rate one worker sustains on this machine
DURATION_S = 20
WARMUP_S = 4
SETTLE_S = 10  # after the first warm-up snapshot, before the timed schedule
DRAIN_S = 120  # after the last send, for a saturated scorer's backlog to come out
LATENCY_BATCH = 10  # events per POST /v1/batch: a request every 10 ms at 1,000/s
STATE_SIZES = (100_000, 1_000_000)
API_KEY = "bench-scoring-key"


# -- processes --------------------------------------------------------------------------------


def _worker_argv(
    kind: str, ctx: Context, prefix: str, port: int
) -> tuple[list[str], dict[str, str]]:
    group = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    env = {
        "TENURE_KAFKA_BOOTSTRAP": ctx.bootstrap,
        "TENURE_TOPIC_PREFIX": prefix,
        "TENURE_TIME_SCALE": "1",
        "TENURE_CLOCK_EPOCH": "",
        "TENURE_LOG_LEVEL": "WARNING",
        "TENURE_LOG_FORMAT": "text",
    }
    if kind == "worker":
        data = Path(tempfile.mkdtemp(prefix="tenure-bench-scoring-", dir="/tmp"))
        env |= {
            "TENURE_SCORING_APP_ID": group,
            "TENURE_SCORING_DATA_DIR": str(data),
            "TENURE_SCORING_METRICS_PORT": str(port),
        }
        return [sys.executable, "-m", "scoring"], env
    argv = [
        sys.executable, "-m", "bench.scoring_loop", "--bootstrap", ctx.bootstrap,
        "--prefix", prefix, "--group", group, "--metrics-port", str(port),
    ]  # fmt: skip
    return argv, env


@contextlib.asynccontextmanager
async def scorer(
    kind: str, ctx: Context, prefix: str, logdir: Path
) -> AsyncIterator[tuple[int, int]]:
    """Run the worker (``kind="worker"``) or the bare loop; yields its metrics port and pid."""
    port = free_port()
    argv, env = _worker_argv(kind, ctx, prefix, port)
    proc = spawn(argv, env=env, log_path=logdir / f"{kind}-{prefix}log", cwd=REPO)
    try:
        yield port, proc.pid
    finally:
        stop(proc, timeout=20.0)
        data = env.get("TENURE_SCORING_DATA_DIR")
        if data:
            shutil.rmtree(data, ignore_errors=True)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, all its threads (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15


async def counted(client: httpx.AsyncClient, port: int) -> int:
    """Events the scorer counted so far (any outcome), from its metrics endpoint."""
    try:
        # identity: a gzip of the exposition at 10 Hz cost the polled process ~1 % of its
        # samples (more for the worker, whose exposition is longer), none of it scoring
        response = await client.get(
            f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "identity"}
        )
    except httpx.HTTPError:
        return 0
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("tenure_scoring_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def new_prefix(ctx: Context, label: str) -> str:
    prefix = ctx.fresh_name(label) + "."
    settings = CommonSettings(kafka_bootstrap=ctx.bootstrap, topic_prefix=prefix)
    await ensure_topics(settings)
    await wait_for_leaders(
        ctx.bootstrap, [topic_name(t, prefix) for t in Topic], settings.topic_partitions
    )
    return prefix


# -- throughput -------------------------------------------------------------------------------


async def _backlog(ctx: Context, prefix: str, keys: list[bytes], values: list[bytes]) -> None:
    kinds = [orjson.loads(v)["kind"] for v in values]
    producer = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(f"{prefix}events.{kind}", key=k, value=v)
            for k, v, kind in zip(keys, values, kinds, strict=True)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _rate(kind: str, ctx: Context, logdir: Path) -> tuple[float, float]:
    """(events/s, CPU seconds per event) of one scorer over a fresh backlog.

    Both run from the first counted event to the RECORDS-th. The CPU time is the
    process's own (user + system, every thread), so unlike the rate it does not depend
    on how much of the two cores the other loads on the machine left to the process.
    """
    records = event_records(RECORDS, customers=CUSTOMERS, start=recent_start(RECORDS))
    prefix = await new_prefix(ctx, f"scoring-{kind}")
    await _backlog(ctx, prefix, records.keys, records.values)
    async with scorer(kind, ctx, prefix, logdir) as (port, pid), httpx.AsyncClient() as client:
        deadline = time.monotonic() + 600
        first: tuple[float, int, float] | None = None
        last: tuple[float, int, float] | None = None  # the latest poll while still busy
        while time.monotonic() < deadline:
            n = await counted(client, port)
            sample = (time.monotonic(), n, cpu_seconds(pid))
            if first is None and n > 0:
                first = sample
            if n >= RECORDS and first is not None:
                # the scorer finished somewhere since the previous poll: end at that poll
                # (both counts read while it was busy), so the interval adds no error
                end = last if last is not None and last[1] > first[1] else sample
                events = end[1] - first[1]
                return events / (end[0] - first[0]), (end[2] - first[2]) / events
            if first is not None:
                last = sample
            await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{kind}: did not count {RECORDS} events in time")


async def run_throughput(ctx: Context) -> list[Result]:
    logdir = Path(tempfile.mkdtemp(prefix="tenure-bench-scoring-logs-", dir="/tmp"))
    rates: dict[str, list[float]] = {"worker": [], "loop": []}
    cpus: dict[str, list[float]] = {"worker": [], "loop": []}
    for i in range(ROUNDS):
        for kind in ("worker", "loop") if i % 2 == 0 else ("loop", "worker"):
            rate, cpu = await _rate(kind, ctx, logdir)
            rates[kind].append(rate)
            cpus[kind].append(cpu)
            print(
                f"  round {i + 1} {kind:>6}: {rate:>8,.0f} events/s"
                f"  {cpu * 1e6:>6,.0f} µs CPU/event  (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    worker, loop = statistics.median(rates["worker"]), statistics.median(rates["loop"])
    worker_cpu, loop_cpu = statistics.median(cpus["worker"]), statistics.median(cpus["loop"])
    return [
        Result(
            name="scoring_throughput",
            metric=f"events/s of one faust worker over a backlog of {RECORDS:,} events "
            f"({CUSTOMERS:,} customers, RocksDB + changelog, read_committed), median of {ROUNDS}",
            value=worker,
            unit="events/s",
            baseline="the same rules in a bare aiokafka consume-and-produce loop (dict state), "
            "same broker and data, same run",
            baseline_value=loop,
        ),
        Result(
            name="scoring_cpu_per_event",
            metric="CPU time (user + system, all threads) of the worker process per event over "
            f"the same backlogs, median of {ROUNDS}: how much more work it does per event than "
            "the loop (less sensitive than the rate to the share of the machine the process got)",
            value=worker_cpu * 1e6,
            unit="µs/event",
            baseline="the same of the bare aiokafka loop process, same rounds",
            baseline_value=loop_cpu * 1e6,
        ),
    ]


# -- latency ----------------------------------------------------------------------------------


def _first_events(count: int, tag: str, rate: int = RATE) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        orjson.dumps(
            {
                "event_id": f"lat-{tag}-{i}",
                "customer_id": f"lat-{tag}-{i}",
                "occurred_at": (now + timedelta(seconds=i / rate)).isoformat(),
                "kind": "profile",
                "type": "identify",
                "plan": "pro",
                "mrr": 99.0,
            }
        )
        for i in range(count)
    ]


async def _latencies(kind: str, ctx: Context, logdir: Path, rate: int) -> list[float]:
    prefix = await new_prefix(ctx, f"scoring-lat-{kind}")
    port = free_port()
    env = {
        "TENURE_KAFKA_BOOTSTRAP": ctx.bootstrap,
        "TENURE_TOPIC_PREFIX": prefix,
        "TENURE_TIME_SCALE": "1",
        "TENURE_CLOCK_EPOCH": "",
        "TENURE_LOG_LEVEL": "WARNING",
        "TENURE_INGEST_HOST": "127.0.0.1",
        "TENURE_INGEST_PORT": str(port),
        "TENURE_INGEST_API_KEY": API_KEY,
        "TENURE_INGEST_KEYS_FROM_DATABASE": "false",
        "TENURE_INGEST_RATE_PER_KEY": "1e9",
        "TENURE_INGEST_BURST_PER_KEY": "1e9",
    }
    ingest = spawn(
        [sys.executable, "-m", "ingest"], env=env, log_path=logdir / f"ingest-{prefix}log", cwd=REPO
    )
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    tag = uuid.uuid4().hex[:6]
    total = (WARMUP_S + DURATION_S) * rate
    events = _first_events(total, tag, rate)
    consumer = AIOKafkaConsumer(
        topic_name(Topic.SCORES, prefix),
        bootstrap_servers=ctx.bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        group_id=f"bench-lat-{tag}",
    )
    try:
        async with (
            scorer(kind, ctx, prefix, logdir) as (metrics_port, _pid),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"x-api-key": API_KEY, "content-type": "application/json"},
                timeout=30,
            ) as client,
        ):
            await _ready(client, metrics_port)
            await consumer.start()
            await consumer.seek_to_end()

            async def read() -> None:
                while True:
                    batch = await consumer.getmany(timeout_ms=100)
                    now = time.monotonic()
                    for records in batch.values():
                        for r in records:
                            seen.setdefault(r.key.decode(), now)

            reader = asyncio.create_task(read())
            # warm the scorer up with one customer until its snapshot comes back, then let
            # the group settle (faust pauses its streams for a while after each rebalance)
            for attempt in ("w", "x"):
                await _send(client, [_first_events(1, f"{tag}{attempt}")[0]], acked)
                warm_deadline = time.monotonic() + 120
                while not any(k.startswith(f"lat-{tag}{attempt}") for k in seen):
                    if time.monotonic() > warm_deadline:
                        raise TimeoutError(f"{kind}: no snapshot for the warm-up event")
                    await asyncio.sleep(0.05)
                if attempt == "w":
                    await asyncio.sleep(SETTLE_S)
            started = time.monotonic()
            tasks = []
            for i in range(0, total, LATENCY_BATCH):
                due = started + i / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(
                    asyncio.create_task(_send(client, events[i : i + LATENCY_BATCH], acked))
                )
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and len(seen) < total:
                await asyncio.sleep(0.1)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await consumer.stop()
        stop(ingest, timeout=15.0)
    timed = [f"lat-{tag}-{i}" for i in range(WARMUP_S * rate, total)]
    missing = [c for c in timed if c not in seen or c not in acked]
    if len(missing) > len(timed) // 100:
        raise RuntimeError(f"{kind}: {len(missing)} of {len(timed)} snapshots never seen")
    return sorted(seen[c] - acked[c] for c in timed if c in seen and c in acked)


async def _ready(client: httpx.AsyncClient, metrics_port: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                async with httpx.AsyncClient() as probe:
                    with contextlib.suppress(httpx.HTTPError):
                        await probe.get(f"http://127.0.0.1:{metrics_port}/metrics")
                        return
        await asyncio.sleep(0.2)
    raise TimeoutError("ingest or scorer not ready")


async def _send(client: httpx.AsyncClient, bodies: list[bytes], acked: dict[str, float]) -> None:
    body = b'{"events":[' + b",".join(bodies) + b"]}"
    for attempt in range(2):  # an idle keep-alive connection may have been closed by ingest
        try:
            response = await client.post("/v1/batch", content=body)
            break
        except httpx.TransportError:
            if attempt:
                return
    now = time.monotonic()
    if response.status_code != 202:
        return
    for raw in bodies:
        acked[orjson.loads(raw)["customer_id"]] = now


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def run_latency(ctx: Context) -> list[Result]:
    logdir = Path(tempfile.mkdtemp(prefix="tenure-bench-scoring-logs-", dir="/tmp"))
    results: list[Result] = []
    for rate, suffix in ((RATE, ""), (LOW_RATE, f"_at_{LOW_RATE}")):
        worker = await _latencies("worker", ctx, logdir, rate)
        loop = await _latencies("loop", ctx, logdir, rate)
        for name, lat in (("worker", worker), ("loop", loop)):
            print(
                f"  {rate:>5}/s {name:>6}: p50 {_pct(lat, 0.5):.1f} ms"
                f"  p99 {_pct(lat, 0.99):.1f} ms  ({len(lat):,} events)",
                flush=True,
            )
        shape = f"at {rate:,} events/s for {DURATION_S} s, each event a new customer's first"
        base = "the same through the bare aiokafka loop of the same rules, same run"
        results += [
            Result(
                name=f"scoring_latency_p{p}{suffix}",
                metric=f"p{p} from ingest's 202 to the snapshot read on scores, {shape}",
                value=_pct(worker, q),
                unit="ms",
                baseline=base,
                baseline_value=_pct(loop, q),
            )
            for p, q in ((50, 0.5), (99, 0.99))
        ]
    return results


# -- state size --------------------------------------------------------------------------------


def _load_states(customers: int, folder: str) -> tuple[int, int]:
    """Write ``customers`` states the way faust's RocksDB store does; (bytes, peak RSS)."""
    from faust.stores.rocksdb import RocksDBOptions

    from common.events import parse_event
    from scoring.domain.model import DEFAULT_MODEL_PATH, load_model
    from scoring.domain.rules import score
    from scoring.domain.state import CustomerState

    model = load_model(DEFAULT_MODEL_PATH)
    values = event_records(2_000, customers=200, start=recent_start(2_000))
    templates: dict[str, CustomerState] = {}
    for raw in values.values:
        event = parse_event(raw)
        state = templates.get(event.customer_id) or CustomerState(event.customer_id)
        templates[event.customer_id] = score(state, event, model).state
    shapes = [s.to_dict() for s in templates.values()]
    # the worker's own options (faust's RocksDB store, the block cache of ScoringSettings)
    db = RocksDBOptions(block_cache_size=64 * 2**20).open(Path(folder))
    rng = random.Random(7)
    for i in range(customers):
        cid = f"cust-{i:07d}"
        shape = dict(rng.choice(shapes))
        shape["customer_id"] = cid
        shape["seen"] = [f"evt-{cid}-{j}" for j in range(len(shape["seen"]))]
        db[cid.encode()] = orjson.dumps(shape)
    db.flush()
    scanned = sum(1 for _ in db.values())  # what the clock sweep reads
    assert scanned == customers
    db.close()
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure_state(customers: int) -> tuple[int, int]:
    """Run :func:`_load_states` in a fresh process, so that peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="tenure-bench-state-", dir="/tmp") as folder:
        code = (
            "import sys, json; from bench.scoring import _load_states; "
            f"print(json.dumps(_load_states({customers}, {folder + '/db'!r})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": f"{REPO}/libs:{REPO}/services:{REPO}"},
        )  # fmt: skip
        size, rss = orjson.loads(out.stdout.strip().splitlines()[-1])
        return int(size), int(rss)


async def run_state(ctx: Context) -> list[Result]:
    measured: dict[int, tuple[int, int]] = {}
    for n in STATE_SIZES:
        measured[n] = await asyncio.to_thread(_measure_state, n)
        size, rss = measured[n]
        print(
            f"  {n:>9,} customers: {size / 2**20:,.1f} MiB on disk ({size / n:,.0f} B each), "
            f"peak RSS {rss / 2**20:,.0f} MiB",
            flush=True,
        )
    small, big = STATE_SIZES
    return [
        Result(
            name="scoring_state_bytes_1m",
            metric=f"RocksDB bytes per customer with {big:,} customers (direct table load)",
            value=measured[big][0] / big,
            unit="bytes/customer",
            baseline=f"the same with {small:,} customers",
            baseline_value=measured[small][0] / small,
        ),
        Result(
            name="scoring_state_rss_1m",
            metric=f"peak memory of the process that loads and scans {big:,} customers",
            value=measured[big][1] / 2**20,
            unit="MiB",
            baseline=f"the same with {small:,} customers",
            baseline_value=measured[small][1] / 2**20,
        ),
    ]


Benchmark = Callable[[Context], Any]
