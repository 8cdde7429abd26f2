"""The ingest API under load: ``ingest_batch_throughput``, ``ingest_batch_two_workers``,
``ingest_single_latency_p50`` and ``ingest_single_latency_p99``.

Ingest runs as it is deployed: ``python -m ingest`` in a process of its own (uvicorn,
``TENURE_INGEST_WORKERS`` workers), publishing to the run's broker under a topic
prefix of its own, with a static API key and a rate limit too high to matter. The
load generator is this process, posting bodies serialised before any timing. Events
are those of ``bench.events``, stamped with the current time so that they pass
ingest's event-time window.

Throughput (``run_batch``): ``POST /v1/batch`` with 500-event batches from an
``httpx.AsyncClient``, ``IN_FLIGHT`` requests outstanding at any time, each on a new
connection: asyncio accepts every pending connection in one go, so keep-alive
connections opened together all land on the same uvicorn worker, and two workers
would serve from one. Three configurations, interleaved over ``ROUNDS`` rounds with
the order rotated, the median of each kept:

- ``raw``: the physical limit, a bare aiokafka producer (``acks=all``, idempotent,
  ``linger_ms=2``, the project's settings) writing the very records ingest writes
  (same topics, key, value and headers), pipelined as in ``bench.kafka_producer``;
- ``ingest1``: one ingest process, one worker;
- ``ingest2``: one ingest process, two workers.

Latency (``run_latency``): ``POST /v1/events``, one event a request, at a fixed
offered rate for ``DURATION_S`` seconds, open loop: each request starts at its
scheduled time whatever became of the previous ones, and its latency runs from that
scheduled time (no coordinated omission). The client is ``bench.http1`` (keep-alive,
a fraction of httpx's CPU per request). The baseline is the same schedule of
``send_and_wait`` calls of a bare producer with the same settings: the floor of one
acknowledged produce round trip.

Every ingest run ends by comparing the end offsets of its six ``events.*`` topics
with the number of events ingest answered "accepted": a run that lost (or
duplicated) acknowledged events fails instead of looking fast.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from subprocess import Popen

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import Context, Result, counting_warnings, wait_for_leaders
from bench.events import EventRecords, event_records, recent_start
from bench.http1 import Http1Pool
from bench.kafka_producer import CHUNK, LINGER_MS
from common.kafka import ensure_topics
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.procs import free_port, spawn, stop

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-ingest-key"
API_KEY_ID = "static"  # the id ingest gives the key of TENURE_INGEST_API_KEY
PARTITIONS = CommonSettings().topic_partitions  # what ensure_topics creates
HEADERS = {"x-api-key": API_KEY, "content-type": "application/json"}

# Throughput
BATCH = 500  # events per POST /v1/batch (ingest's maximum)
IN_FLIGHT = 6  # requests outstanding
BATCH_RECORDS = 40_000  # timed, per measurement
BATCH_WARMUP = 5_000  # per ingest process (or raw producer), before the timed records
ROUNDS = 3

# Latency
RATE = 500  # requests a second, offered
DURATION_S = 60  # timed
# Same rate, before the timed schedule, not counted: at least WARMUP_S, then WARMUP_MORE_S
# more at a time until the broker's JIT compiler threads used under JIT_QUIET_CORES in each
# of the last JIT_QUIET_ROUNDS of them (at most WARMUP_MAX_S in all). A broker compiles its
# transaction path for ~40 s of this load, in bursts; with 5 s, and again with 15 s, the
# slow answers of the timed run sat in its first seconds, while C2 compiler threads took up
# to 0.8 of a core.
WARMUP_S = 15
WARMUP_MORE_S = 5
WARMUP_MAX_S = 60
JIT_QUIET_CORES = 0.05
JIT_QUIET_ROUNDS = 2  # consecutive WARMUP_MORE_S stretches under JIT_QUIET_CORES
MAX_CONNECTIONS = 64  # the open loop opens more when requests pile up, up to this
GRACE_S = 10  # after the last scheduled send, before unanswered requests are given up

CLK_TCK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


# --- workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Event records plus what ingest would make of them: topic (by kind) and headers."""

    records: EventRecords
    kinds: list[str]
    headers: dict[str, list[tuple[str, bytes]]]  # by kind; ingested_at fixed at generation

    @classmethod
    def recent(cls, count: int) -> Workload:
        records = event_records(count, start=recent_start(count))
        kinds = [orjson.loads(v)["kind"] for v in records.values]
        ingested_at = datetime.now(UTC).isoformat().encode()
        headers = {
            kind: [
                ("kind", kind.encode()),
                ("schema_version", b"1"),
                ("ingested_at", ingested_at),
                ("api_key_id", API_KEY_ID.encode()),
            ]
            for kind in set(kinds)
        }
        return cls(records, kinds, headers)

    def __len__(self) -> int:
        return len(self.records)

    def topics(self, prefix: str) -> list[str]:
        names = {kind: f"{prefix}events.{kind}" for kind in self.headers}
        return [names[kind] for kind in self.kinds]

    def batch_bodies(self, part: slice) -> list[bytes]:
        values = self.records.values[part]
        return [
            b'{"events":[' + b",".join(values[i : i + BATCH]) + b"]}"
            for i in range(0, len(values), BATCH)
        ]


def event_topics(prefix: str) -> list[str]:
    return [topic_name(t, prefix) for t in Topic.events()]


async def create_event_topics(ctx: Context, prefix: str) -> None:
    """The six ``events.*`` topics under ``prefix`` (ingest does not create them)."""
    settings = CommonSettings(kafka_bootstrap=ctx.bootstrap, topic_prefix=prefix)
    await ensure_topics(settings, Topic.events(), with_dlq=False)
    await wait_for_leaders(ctx.bootstrap, event_topics(prefix), PARTITIONS)


async def written(ctx: Context, prefix: str) -> int:
    """Committed records in the six ``events.*`` topics of ``prefix``, read back.

    Ingest writes in transactions, whose commit markers take offsets too, so the
    records are counted by reading them (``read_committed``), not from end offsets.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=ctx.bootstrap,
        client_id="tenure-bench-check",
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in event_topics(prefix) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count, idle = 0, 0
        while idle < 3:  # a commit marker ends each partition: positions may stop short
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got = sum(len(records) for records in batches.values())
            count += got
            idle = 0 if got else idle + 1
        return count
    finally:
        await consumer.stop()


async def check_written(ctx: Context, prefix: str, accepted: int, *, refused: int) -> None:
    """The topics hold exactly the accepted events (more only if some answers were not 202)."""
    on_broker = await written(ctx, prefix)
    if on_broker < accepted or (on_broker > accepted and not refused):
        raise RuntimeError(
            f"{prefix}events.*: {on_broker:,} records on the broker, "
            f"{accepted:,} events answered accepted"
        )
    if on_broker > accepted:
        print(
            f"  note: {prefix}events.* holds {on_broker - accepted:,} events more than "
            f"were answered accepted ({refused} non-202 answers)",
            flush=True,
        )


# --- CPU accounting ----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 if gone."""
    fields = _stat(pid) if pid is not None else None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def jit_seconds(pid: int | None) -> float:
    """CPU seconds the JIT compiler threads (``C1/C2 CompilerThread``) of a JVM used so far."""
    total = 0.0
    if pid is None:
        return total
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if "CompilerThre" in text[: text.rindex(")")]:
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used (``/proc/stat``, all CPUs)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (ingest's uvicorn parent and its workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[2]) == pgid:
                pids.append(int(entry))
    return sorted(pids)


@dataclass
class CpuMeter:
    """CPU used during a section by ingest (per process), the broker, this process and
    everything else on the machine ("others": other people's test runs, on a shared box)."""

    ingest: list[int]
    broker: int | None
    _start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def _now(self) -> dict[str, float]:
        now = {f"ingest:{pid}": cpu_seconds(pid) for pid in self.ingest}
        now["broker"] = cpu_seconds(self.broker)
        now["bench"] = time.process_time()
        now["machine"] = machine_busy_seconds()
        now["wall"] = time.perf_counter()
        return now

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.wall = end.pop("wall") - self._start["wall"]
        self.used = {k: v - self._start[k] for k, v in end.items()}

    def cores(self, key: str) -> float:
        return self.used.get(key, 0.0) / self.wall if self.wall else 0.0

    def per_item(self, items: int) -> dict[str, float]:
        """CPU seconds per item during the section: ``ingest`` (all its processes),
        ``broker``, ``bench`` (the load generator) and ``others``."""
        ingest = sum(v for k, v in self.used.items() if k.startswith("ingest:"))
        ours = ingest + self.used.get("broker", 0.0) + self.used.get("bench", 0.0)
        used = {
            "ingest": ingest,
            "broker": self.used.get("broker", 0.0),
            "bench": self.used.get("bench", 0.0),
            "others": max(0.0, self.used.get("machine", 0.0) - ours),
        }
        return {k: v / items for k, v in used.items()} if items else dict.fromkeys(used, 0.0)

    def describe(self) -> str:
        ingest = [k for k in self.used if k.startswith("ingest:")]
        busy = [k for k in ingest if self.used[k] > 0.05 * self.wall]
        parts = [f"ingest {sum(self.cores(k) for k in ingest):.2f}"]
        if len(busy) > 1:
            parts[0] += " (" + " + ".join(f"{self.cores(k):.2f}" for k in busy) + ")"
        if self.broker is not None:
            parts.append(f"broker {self.cores('broker'):.2f}")
        parts.append(f"bench {self.cores('bench'):.2f}")
        ours = sum(self.cores(k) for k in self.used if k != "machine")
        parts.append(f"others {max(0.0, self.cores('machine') - ours):.2f}")
        return f"cores of {CPUS}: " + ", ".join(parts)


# --- the ingest process ------------------------------------------------------------------


@dataclass
class Ingest:
    proc: Popen[bytes]
    url: str
    prefix: str
    workers: int

    def pids(self) -> list[int]:
        """The processes serving requests: the workers, or the one process."""
        group = group_pids(self.proc.pid)
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in group if p != self.proc.pid and _is_worker(p)]


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline  # uvicorn's workers: multiprocessing spawn children


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@asynccontextmanager
async def ingest_process(
    ctx: Context,
    logdir: Path,
    *,
    workers: int = 1,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Ingest]:
    """``python -m ingest`` (or ``argv``) on a free port under a fresh topic prefix; stopped
    on exit. ``env``: more environment variables for it (settings, ``PYTHONPATH``)."""
    prefix = ctx.fresh_name(f"ingest{workers}w") + "."
    await create_event_topics(ctx, prefix)
    port = free_port()
    env = {
        "TENURE_KAFKA_BOOTSTRAP": ctx.bootstrap,
        "TENURE_TOPIC_PREFIX": prefix,
        "TENURE_TIME_SCALE": "1",
        "TENURE_CLOCK_EPOCH": "",
        "TENURE_INGEST_HOST": "127.0.0.1",
        "TENURE_INGEST_PORT": str(port),
        "TENURE_INGEST_WORKERS": str(workers),
        "TENURE_INGEST_API_KEY": API_KEY,
        "TENURE_INGEST_KEYS_FROM_DATABASE": "false",
        "TENURE_INGEST_RATE_PER_KEY": "1e9",
        "TENURE_INGEST_BURST_PER_KEY": "1e9",
        **(env or {}),
    }
    log = logdir / f"{prefix}log"
    argv = argv or [sys.executable, "-m", "ingest"]
    proc = spawn(argv, env=env, log_path=log, cwd=REPO)
    ingest = Ingest(proc, f"http://127.0.0.1:{port}", prefix, workers)
    try:
        try:
            await _wait_ready(ingest)
        except Exception:
            print(f"  ingest log ({log}):\n{_tail(log)}", file=sys.stderr, flush=True)
            raise
        yield ingest
    finally:
        code = stop(proc, timeout=15.0)
        if code not in (0, -15):
            print(f"  note: ingest exited with {code}; log tail:\n{_tail(log)}", flush=True)


async def _wait_ready(ingest: Ingest, timeout_s: float = 60.0) -> None:
    """Until /readyz answers 200 and, with several workers, every worker has started."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=ingest.url, timeout=2.0) as client:
        while True:
            if ingest.proc.poll() is not None:
                raise RuntimeError(f"ingest exited with {ingest.proc.returncode} before ready")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest not ready in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
    if ingest.workers == 1:
        return
    # A worker accepts connections only once its lifespan (producer start) is done, and
    # /readyz answered from the first one up: start the load only when every worker is
    # up, i.e. all exist and the whole group has gone quiet.
    quiet = 0
    last = -1.0
    while quiet < 3:
        pids = ingest.pids()
        used = sum(cpu_seconds(p) for p in group_pids(ingest.proc.pid))
        quiet = quiet + 1 if len(pids) == ingest.workers and used - last < 0.03 else 0
        last = used
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest workers not all up in {timeout_s:.0f} s")
        await asyncio.sleep(0.3)


def batch_client(ingest: Ingest) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=ingest.url,
        headers=HEADERS,
        timeout=60.0,
        limits=httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0),
    )


# --- throughput ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    rate: float  # accepted events/s over the timed section
    cpu: str  # cores used during it
    refused: int = 0  # non-202 answers (or transport errors) while timed
    retries: int = 0  # produce errors aiokafka retried while timed (raw only)
    cpu_per_event: dict[str, float] = field(default_factory=dict)  # s, by process (CpuMeter)

    def __str__(self) -> str:
        notes = [self.cpu]
        if self.refused:
            notes.append(f"{self.refused} non-202 answers")
        if self.retries:
            notes.append(f"{self.retries} retried produce errors")
        return f"{self.rate:>9,.0f} events/s  ({'; '.join(notes)})"


@dataclass
class Answers:
    accepted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def refused(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "202")


async def post_batches(
    client: httpx.AsyncClient, bodies: Sequence[bytes], answers: Answers
) -> None:
    """Post ``bodies`` to /v1/batch, ``IN_FLIGHT`` at a time; tally the answers."""
    todo = iter(bodies)

    async def sender() -> None:
        for body in todo:
            try:
                response = await client.post("/v1/batch", content=body)
            except httpx.HTTPError as exc:
                answers.statuses[type(exc).__name__] += 1
                continue
            answers.statuses[str(response.status_code)] += 1
            if response.status_code in (202, 503):  # a BatchResult either way
                answers.accepted += orjson.loads(response.content)["accepted"]

    await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))


async def ingest_batch(ctx: Context, work: Workload, logdir: Path, *, workers: int) -> Sample:
    bodies = work.batch_bodies(slice(None))
    warm, timed = Answers(), Answers()
    async with (
        ingest_process(ctx, logdir, workers=workers) as ingest,
        batch_client(ingest) as client,
    ):
        await post_batches(client, work.batch_bodies(slice(0, BATCH_WARMUP)), warm)
        gc.collect()
        with CpuMeter(ingest.pids(), ctx.broker_pid) as cpu:
            await post_batches(client, bodies, timed)
    refused = warm.refused + timed.refused
    await check_written(ctx, ingest.prefix, warm.accepted + timed.accepted, refused=refused)
    if refused:
        print(f"  non-202 answers: warm-up {dict(warm.statuses)}, timed {dict(timed.statuses)}")
    return Sample(
        timed.accepted / cpu.wall,
        cpu.describe(),
        refused=timed.refused,
        cpu_per_event=cpu.per_item(timed.accepted),
    )


async def ingest1(ctx: Context, work: Workload, logdir: Path) -> Sample:
    return await ingest_batch(ctx, work, logdir, workers=1)


async def ingest2(ctx: Context, work: Workload, logdir: Path) -> Sample:
    return await ingest_batch(ctx, work, logdir, workers=2)


async def _send_pipelined(
    producer: AIOKafkaProducer, work: Workload, topics: list[str], part: slice
) -> None:
    records = work.records
    for chunk in range(part.start or 0, part.stop or len(work), CHUNK):
        end = min(chunk + CHUNK, part.stop or len(work))
        futures = [
            await producer.send(
                topics[i],
                records.values[i],
                key=records.keys[i],
                headers=work.headers[work.kinds[i]],
            )
            for i in range(chunk, end)
        ]
        await asyncio.gather(*futures)


def raw_producer(ctx: Context) -> AIOKafkaProducer:
    """The producer ingest's publisher builds: acks=all, idempotent, linger_ms=2."""
    return AIOKafkaProducer(
        bootstrap_servers=ctx.bootstrap,
        client_id="tenure-bench-raw",
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
    )


async def raw(ctx: Context, work: Workload, _logdir: Path) -> Sample:
    prefix = ctx.fresh_name("raw") + "."
    await create_event_topics(ctx, prefix)
    topics = work.topics(prefix)
    producer = raw_producer(ctx)
    await producer.start()
    try:
        await _send_pipelined(producer, work, topics, slice(0, BATCH_WARMUP))
        gc.collect()
        with counting_warnings() as warnings, CpuMeter([], ctx.broker_pid) as cpu:
            await _send_pipelined(producer, work, topics, slice(0, len(work)))
    finally:
        await producer.stop()
    await check_written(ctx, prefix, BATCH_WARMUP + len(work), refused=0)
    return Sample(len(work) / cpu.wall, cpu.describe(), retries=warnings.count)


Measure = Callable[[Context, Workload, Path], Awaitable[Sample]]
MEASURES: dict[str, Measure] = {"raw": raw, "ingest1": ingest1, "ingest2": ingest2}


async def run_batch(ctx: Context) -> list[Result]:
    work = Workload.recent(BATCH_RECORDS)
    print(
        f"records: {work.records.describe()}; batches of {BATCH}, {IN_FLIGHT} in flight; "
        f"{ROUNDS} rounds",
        flush=True,
    )
    samples: dict[str, list[Sample]] = {name: [] for name in MEASURES}
    with tempfile.TemporaryDirectory(prefix="tenure-bench-ingest-", dir="/tmp") as tmp:
        logdir = Path(tmp)
        # The broker's JVM (cold if this runs alone) and the page cache: not counted.
        print(f"  warm-up  raw      {await raw(ctx, work, logdir)} (not counted)", flush=True)
        order = list(MEASURES)
        for round_ in range(ROUNDS):
            for name in order[round_:] + order[:round_]:
                sample = await MEASURES[name](ctx, work, logdir)
                samples[name].append(sample)
                print(f"  round {round_ + 1}  {name:<8} {sample}", flush=True)
    best = {name: float(median(s.rate for s in values)) for name, values in samples.items()}
    refused = {name: sum(s.refused for s in values) for name, values in samples.items()}
    accounting, scaling_bound = cpu_bound(samples["ingest1"], samples["ingest2"], best["ingest1"])
    print(accounting, flush=True)
    load = (
        f"{len(work):,} events (mean {work.records.mean_value_bytes:.0f} B, six kinds, "
        f"occurred_at within the last {len(work) * 7 / 86400:.0f} days) in {BATCH}-event "
        f"POST /v1/batch requests, {IN_FLIGHT} in flight (httpx, one connection per request, "
        f"from the bench process), after {BATCH_WARMUP:,} warm-up events per process; acks=all"
    )
    return [
        Result(
            name="ingest_batch_throughput",
            metric=f"accepted events/s through `python -m ingest`, 1 worker: {load}; "
            f"median of {ROUNDS}; non-202 answers: {refused['ingest1']}",
            value=best["ingest1"],
            unit="events/s",
            baseline="physical limit: bare aiokafka producer (acks=all, idempotent, "
            f"linger_ms={LINGER_MS}) writing the same records ingest writes (six topics, "
            f"key, value, headers), pipelined in chunks of {CHUNK:,}, same broker, same run",
            baseline_value=best["raw"],
        ),
        Result(
            name="ingest_batch_two_workers",
            metric=f"accepted events/s through `python -m ingest`, TENURE_INGEST_WORKERS=2: "
            f"{load}; median of {ROUNDS}; non-202 answers: {refused['ingest2']}; "
            f"{CPUS} cores shared with the broker and the load generator: at the CPU per "
            f"event measured, they allow at most {scaling_bound:.2f}x",
            value=best["ingest2"],
            unit="events/s",
            baseline="peer: the same load against 1 worker (ingest_batch_throughput value), "
            "same run",
            baseline_value=best["ingest1"],
        ),
    ]


def cpu_bound(
    one: Sequence[Sample], two: Sequence[Sample], measured_one: float
) -> tuple[str, float]:
    """What the CPU accounting of the rounds allows on this machine's cores.

    One worker can use at most one core, and the three processes (ingest, broker, load
    generator) together at most ``CPUS``; two workers can use up to ``CPUS`` cores
    between them, so their events/s is at most ``CPUS`` / (CPU seconds per event of
    all three). Divided by the measured 1-worker rate, that is the largest scaling the
    machine permits, whatever ingest does (as long as its CPU per event stays).
    Returns the printable lines and that bound.
    """

    def med(samples: Sequence[Sample], key: str) -> float:
        return float(median(s.cpu_per_event.get(key, 0.0) for s in samples))

    lines = ["CPU per event, median of the rounds (µs: ingest + broker + load generator):"]
    bounds = {}
    for label, samples, workers in (("1 worker", one, 1), ("2 workers", two, 2)):
        ingest, broker, gen = (med(samples, k) for k in ("ingest", "broker", "bench"))
        total = ingest + broker + gen
        if not total:
            return "CPU per event: not measured", float("nan")
        bound = min(min(workers, CPUS) / ingest, CPUS / total)
        bounds[workers] = CPUS / total
        lines.append(
            f"  {label:<9} {ingest * 1e6:6.1f} + {broker * 1e6:5.1f} + {gen * 1e6:5.1f} = "
            f"{total * 1e6:6.1f} µs (others {med(samples, 'others') * 1e6:5.1f}); bound "
            f"{bound:,.0f} events/s (min of {min(workers, CPUS)} core(s) / ingest, "
            f"{CPUS} cores / total)"
        )
    lines.append(
        f"  two workers can reach at most {bounds[2]:,.0f} events/s on {CPUS} cores at their "
        f"measured CPU per event ({bounds[1]:,.0f} at one worker's): scaling bound "
        f"{bounds[2] / measured_one:.2f}x ({bounds[1] / measured_one:.2f}x) of the measured "
        f"1-worker {measured_one:,.0f} events/s"
    )
    return "\n".join(lines), bounds[2] / measured_one


# --- latency -------------------------------------------------------------------------------


@dataclass
class Latencies:
    """One latency per scheduled request: to its answer, whatever the answer was, or, for a
    request still unanswered ``GRACE_S`` after the schedule ended, to when it was given up
    (a lower bound)."""

    ms: list[float] = field(default_factory=list)
    ok: int = 0  # answered 202 (raw: acknowledged)
    errors: Counter[str] = field(default_factory=Counter)  # status, exception, "unanswered"
    lag_ms: float = 0.0  # worst lateness of a launch against its schedule
    cpu: str = ""

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile of the latencies."""
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def __str__(self) -> str:
        errors = f"{self.failed} errors {dict(self.errors)}" if self.failed else "0 errors"
        return (
            f"p50 {self.quantile(0.5):7.2f} ms  p99 {self.quantile(0.99):8.2f} ms  "
            f"max {max(self.ms):8.1f} ms  ({self.ok:,} ok, {errors}; "
            f"launch lag max {self.lag_ms:.1f} ms; {self.cpu})"
        )


def settle_garbage() -> None:
    """Collect, then freeze what is left (the workload's tens of thousands of records),
    so that the load generator's own garbage collections do not walk it and stall the
    schedule in the middle of a timed run (a stall is counted as latency)."""
    gc.collect()
    gc.freeze()


async def open_loop(
    send: Callable[[int], Awaitable[str | None]], first: int, count: int, result: Latencies
) -> None:
    """Call ``send(i)`` for i in [first, first + count) at ``RATE`` a second, open loop.

    ``send`` returns None on success, else the error's name. Latency is measured from
    the scheduled start, so a request launched late (or queued behind a slow one)
    counts its wait. Requests not done ``GRACE_S`` after the last launch are cancelled
    and counted as unanswered, so an overloaded server cannot make the run last for
    ever (or hide its backlog).
    """
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Task[None], float] = {}

    async def one(i: int, at: float) -> None:
        try:
            error = await send(i)
        except Exception as exc:
            error = type(exc).__name__
        result.ms.append((loop.time() - at) * 1000)
        if error is None:
            result.ok += 1
        else:
            result.errors[error] += 1

    start = loop.time() + 0.05
    for n in range(count):
        at = start + n / RATE
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.lag_ms = max(result.lag_ms, (loop.time() - at) * 1000)
        task = asyncio.create_task(one(first + n, at))
        pending[task] = at
        task.add_done_callback(pending.pop)
    if pending:
        await asyncio.wait(list(pending), timeout=GRACE_S)
    late = dict(pending)
    for task in late:
        task.cancel()
    now = loop.time()
    for at in late.values():
        result.ms.append((now - at) * 1000)
    if late:
        result.errors[f"unanswered {GRACE_S} s after the last send"] += len(late)
        await asyncio.gather(*late, return_exceptions=True)


WARM = RATE * WARMUP_S
TIMED = RATE * DURATION_S


async def warm_up(
    send: Callable[[int], Awaitable[str | None]], broker_pid: int | None, result: Latencies
) -> str:
    """``WARMUP_S`` of the open loop, then ``WARMUP_MORE_S`` more at a time (the same
    records again) until the broker's JIT compilers are quiet; says how long it took."""
    await open_loop(send, 0, WARM, result)
    warmed, jit, quiet = WARMUP_S, 0.0, 0
    while warmed < WARMUP_MAX_S:
        before, started = jit_seconds(broker_pid), time.perf_counter()
        await open_loop(send, 0, RATE * WARMUP_MORE_S, result)
        jit = (jit_seconds(broker_pid) - before) / (time.perf_counter() - started)
        warmed += WARMUP_MORE_S
        # the compiler works in bursts with lulls between them: quiet twice in a row
        quiet = quiet + 1 if jit < JIT_QUIET_CORES else 0
        if quiet == JIT_QUIET_ROUNDS:
            return (
                f"warm-up {warmed} s (broker JIT under {JIT_QUIET_CORES} core in each of its "
                f"last {JIT_QUIET_ROUNDS} x {WARMUP_MORE_S} s)"
            )
    return f"warm-up {warmed} s, the limit (broker JIT {jit:.2f} core at the end)"


async def ingest_latency(ctx: Context, work: Workload, logdir: Path) -> Latencies:
    values = work.records.values
    async with ingest_process(ctx, logdir) as ingest:
        host, port = ingest.url.removeprefix("http://").split(":")
        pool = Http1Pool(host, int(port), HEADERS, max_connections=MAX_CONNECTIONS)

        async def post(i: int) -> str | None:
            status = await pool.post("/v1/events", values[i])
            return None if status == 202 else str(status)

        try:
            warm = Latencies()
            warmed = await warm_up(post, ctx.broker_pid, warm)
            timed = Latencies()
            settle_garbage()
            with CpuMeter(ingest.pids(), ctx.broker_pid) as cpu:
                await open_loop(post, WARM, TIMED, timed)
            timed.cpu = f"{warmed}; {cpu.describe()}; {pool.connections} connections"
        finally:
            await pool.aclose()
    refused = warm.failed + timed.failed
    await check_written(ctx, ingest.prefix, warm.ok + timed.ok, refused=refused)
    if warm.failed:
        print(f"  warm-up: {warm}", flush=True)
    return timed


async def raw_latency(ctx: Context, work: Workload, _logdir: Path) -> Latencies:
    prefix = ctx.fresh_name("raw-latency") + "."
    await create_event_topics(ctx, prefix)
    topics = work.topics(prefix)
    records = work.records
    producer = raw_producer(ctx)

    async def send(i: int) -> str | None:
        await producer.send_and_wait(
            topics[i], records.values[i], key=records.keys[i], headers=work.headers[work.kinds[i]]
        )
        return None

    await producer.start()
    try:
        warm = Latencies()
        warmed = await warm_up(send, ctx.broker_pid, warm)
        timed = Latencies()
        settle_garbage()
        with counting_warnings() as warnings, CpuMeter([], ctx.broker_pid) as cpu:
            await open_loop(send, WARM, TIMED, timed)
        timed.cpu = f"{warmed}; {cpu.describe()}"
        if warnings.count:
            timed.cpu += f"; {warnings.count} retried produce errors"
    finally:
        await producer.stop()
    await check_written(ctx, prefix, warm.ok + timed.ok, refused=warm.failed + timed.failed)
    return timed


async def run_latency(ctx: Context) -> list[Result]:
    work = Workload.recent(WARM + TIMED)
    print(
        f"records: {work.records.describe()}; {RATE} requests/s open loop, "
        f"{WARMUP_S}-{WARMUP_MAX_S} s warm-up (until the broker's JIT is quiet) + "
        f"{DURATION_S} s timed, one event a request",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="tenure-bench-ingest-", dir="/tmp") as tmp:
        logdir = Path(tmp)
        floor = await raw_latency(ctx, work, logdir)
        print(f"  raw     {floor}", flush=True)
        ingest = await ingest_latency(ctx, work, logdir)
        print(f"  ingest  {ingest}", flush=True)
    if ingest.failed:
        print(f"  ERRORS: {ingest.failed} requests not answered 202: {dict(ingest.errors)}")
    load = (
        f"POST /v1/events, one event (mean {work.records.mean_value_bytes:.0f} B) a request, "
        f"open loop at {RATE} requests/s for {DURATION_S} s ({TIMED:,} requests, after "
        f"{WARMUP_S}-{WARMUP_MAX_S} s warm-up until the broker's JIT compilers were quiet), "
        "latency from the scheduled send time to the answer "
        f"(202 = acks=all); `python -m ingest`, 1 worker; keep-alive HTTP/1.1 client "
        f"(bench.http1, up to {MAX_CONNECTIONS} connections) in the bench process"
    )
    non_202 = f"non-202 answers or errors: {ingest.failed}" + (
        f" {dict(ingest.errors)}" if ingest.failed else ""
    )
    baseline = (
        f"physical floor: bare aiokafka producer (acks=all, idempotent, linger_ms={LINGER_MS}) "
        f"send_and_wait of the same records (topic, key, value, headers) on the same open-loop "
        f"schedule, same broker, same run"
    )
    return [
        Result(
            name=f"ingest_single_latency_{label}",
            metric=f"{label} latency: {load}; {non_202}",
            value=ingest.quantile(q),
            unit="ms",
            baseline=f"{baseline} ({label})",
            baseline_value=floor.quantile(q),
        )
        for label, q in (("p50", 0.5), ("p99", 0.99))
    ]
