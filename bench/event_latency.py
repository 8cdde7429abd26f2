"""``event_to_notification_latency_p50`` and ``_p99``: from ingest's 202 to the email.

**Tenure.** The four services run as processes, as ``make run`` and the end-to-end tests
start them (``devstack.stack.Stack``, with this run's broker, an embedded PostgreSQL of
their own and a fresh topic prefix), on the real clock (``TENURE_TIME_SCALE=1``), every
setting at its default but the quiet hours (an empty window, as the end-to-end tests:
the run must not depend on the hour), the consumer groups (named after the prefix) and
the ingest rate limit (out of the way). Each measured customer is new: its profile
(email consent, plan, UTC) and a ``competitor_trial`` intent event are posted and
projected beforehand, outside the clock. Then, open loop at ``RATE`` a second, one
``alternative_search`` intent event per customer is posted to ``POST /v1/events``: with
the trial it raises the ``trial_and_search`` red flag (churn probability 0.90), whose
snapshot starts the retention offer, whose first step (after 0 days) sends the offer
email. Latency: from the 202 to the message's arrival at the SMTP sink, which is this
process (aiosmtpd in a thread, stamping ``time.monotonic()`` at the end of DATA).
Customers are drawn in the playbook's treatment arm (the holdout sends nothing).

The path: ingest → ``events.intent`` → scoring → ``scores`` → orchestrator (journey,
timer and outbox in PostgreSQL) → outbox relay → ``notifications`` → notifier → SMTP:
three Kafka hops, the first produced by ingest.

**The floor**, in the same run at the same rate: the same three hops with no rules
(``bench.hops``): a bare producer here (``send_and_wait``, acks=all) → topic → relay
process → topic → relay process → topic → mail process, which sends a pre-rendered offer
email of the notifier's templates with raw aiosmtplib to the same sink. Latency from the
produce's acknowledgement to the arrival. It is measured for half its time before
Tenure's measurement and half after, so that a slow stretch of the machine does not
fall on one side only.

Before each timed schedule: one record through the whole chain (processes up, groups
assigned), then ``WARMUP_S`` at the rate, not counted. A timed customer whose email has
not arrived ``DRAIN_S`` after the last send counts as lost; more than 1 % lost fails
the benchmark (the rate was not sustained, or messages were lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import Context, Result, wait_for_leaders
from bench.latency_probes import (
    Arrivals,
    HopStamps,
    Schedule,
    Send,
    run_schedule,
    smtp_sink,
    wait_arrivals,
)
from bench.pacing import percentile
from bench.scoring import cpu_seconds
from common.db import create_engine
from common.kafka import ensure_topics
from devstack.procs import free_port, spawn, stop
from devstack.stack import SERVICES, Ports, Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks

REPO = Path(__file__).resolve().parent.parent
RATE = 3.0  # trigger events a second, offered (see docs/BENCHMARKS.md for how it was found)
DURATION_S = 60  # Tenure's timed schedule
FLOOR_S = 30  # the floor's timed schedule, before Tenure's and again after it
WARMUP_S = 10  # at RATE before each timed schedule, not counted
FIRST_S = 120  # for the first record through a chain (start-up, group assignment)
IDLE_S = 5  # the services' CPU with no load, measured before Tenure's first trigger
DRAIN_S = 30  # after the last send, for the emails still on their way
PREP_BATCH = 500  # events per POST /v1/batch of the profiles and trials
MAX_LOST = 0.01
HOPS = 3  # Kafka topics between the POST and the notifier: events.intent, scores, notifications
PLAYBOOK = load_playbooks(SHIPPED)["retention_offer"]


def latencies(arrivals: Arrivals, schedule: Schedule, keys: list[str], what: str) -> list[float]:
    """Seconds from acknowledgement to arrival of ``keys``; RuntimeError past MAX_LOST lost."""
    lost = [k for k in keys if k not in schedule.acked or k not in arrivals.at]
    if len(lost) > MAX_LOST * len(keys):
        raise RuntimeError(
            f"{what}: {len(lost)} of {len(keys)} emails missing {DRAIN_S} s after the last "
            f"send ({schedule.refused} sends refused): the rate was not sustained"
        )
    return [arrivals.at[k] - schedule.acked[k] for k in keys if k not in lost]


def describe(label: str, lat: list[float], schedule: Schedule) -> str:
    third = max(2, len(lat) // 3)
    return (
        f"  {label:>12}: p50 {percentile(lat, 50) * 1e3:7.1f} ms  p99 "
        f"{percentile(lat, 99) * 1e3:7.1f} ms  max {max(lat) * 1e3:7.1f} ms  ({len(lat)} "
        f"emails; p50 of the first third {percentile(lat[:third], 50) * 1e3:.0f} ms, of the "
        f"last {percentile(lat[-third:], 50) * 1e3:.0f} ms; slowest acknowledgement "
        f"{schedule.slowest_ack_s * 1e3:.0f} ms; load {os.getloadavg()[0]:.1f})"
    )


# -- Tenure -----------------------------------------------------------------------------------


def new_customers(tag: str, count: int) -> list[str]:
    """Customer ids in the retention offer's treatment arm."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        customer = f"e2n-{tag}-{i}"
        if decisions.assign_arm(PLAYBOOK, customer) == decisions.TREATMENT:
            out.append(customer)
        i += 1
    return out


def _event(customer: str, kind: str, type_: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }


def prep_events(customer: str) -> list[dict[str, Any]]:
    """What a customer has before its trigger: a profile, then a competitor trial."""
    return [
        _event(
            customer,
            "profile",
            "identify",
            email=f"{customer}@example.com",
            first_name="Ana",
            plan="pro",
            time_zone="UTC",
            consent={"email_marketing": True, "in_app": True},
            owner_csm={"id": "csm-7", "email": "csm7@example.com"},
        ),
        _event(customer, "intent", "competitor_trial", source="g2"),
    ]


@contextlib.asynccontextmanager
async def tenure_stack(ctx: Context, root: Path, smtp_port: int) -> AsyncIterator[Stack]:
    prefix = ctx.fresh_name("e2n") + "."
    ports = replace(Ports.free(), kafka=int(ctx.bootstrap.rsplit(":", 1)[1]), smtp=smtp_port)
    stack = Stack(root=root, ports=ports, time_scale=1.0, topic_prefix=prefix)
    for folder in (root, stack.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
    try:
        await asyncio.to_thread(stack.start_postgres)
        settings = stack.common_settings()
        await ensure_topics(settings)
        await wait_for_leaders(ctx.bootstrap, [f"{prefix}events.intent"], stack.partitions)
        env = {
            "TENURE_ORCHESTRATOR_QUIET_START": "00:00",
            "TENURE_ORCHESTRATOR_QUIET_END": "00:00",  # an empty window: no quiet hours
            "TENURE_SCORING_APP_ID": f"{prefix}scoring",
            "TENURE_ORCHESTRATOR_GROUP_ID": f"{prefix}orchestrator",
            "TENURE_NOTIFIER_GROUP_ID": f"{prefix}notifier",
            "TENURE_INGEST_RATE_PER_KEY": "1e9",
            "TENURE_INGEST_BURST_PER_KEY": "1e9",
        }
        for name in SERVICES:
            stack.start_service(name, env)
        await asyncio.to_thread(stack.wait_ready, 120.0)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


async def _post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    for attempt in range(2):  # an idle keep-alive connection may have been closed by ingest
        try:
            return await client.post(path, json=body)
        except httpx.TransportError:
            if attempt:
                raise
    raise AssertionError("unreachable")


async def prepare(stack: Stack, client: httpx.AsyncClient, customers: list[str]) -> None:
    """Post every customer's profile and trial, and wait until the orchestrator holds them
    (their profiles and scores in its tables; the rest of its consumption: see
    :func:`wait_consumed`)."""
    events = [e for c in customers for e in prep_events(c)]
    for i in range(0, len(events), PREP_BATCH):
        for attempt in range(10):  # 503: Kafka did not take the batch in time (busy machine)
            response = await _post(client, "/v1/batch", {"events": events[i : i + PREP_BATCH]})
            if response.status_code != 503:
                break
            await asyncio.sleep(1 + attempt)
        if response.status_code != 202:
            raise RuntimeError(f"preparing: {response.status_code} {response.text[:300]}")
    engine = create_engine(stack.database_url or "", pool_size=1)
    prefix = customers[0].rsplit("-", 1)[0] + "-%"
    query = sa.text(
        "SELECT (SELECT count(*) FROM customers WHERE customer_id LIKE :p), "
        "(SELECT count(*) FROM scores WHERE customer_id LIKE :p "
        "AND (snapshot->>'events_counted')::int >= 2)"
    )
    deadline = time.monotonic() + FIRST_S
    try:
        while True:
            async with engine.connect() as conn:
                profiles, scored = (await conn.execute(query, {"p": prefix})).one()
            if profiles >= len(customers) and scored >= len(customers):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"preparing: {profiles} profiles, {scored} scores projected")
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


async def wait_consumed(bootstrap: str, group: str, topics: list[str], partitions: int) -> None:
    """Until ``group`` has committed everything of ``topics`` (a transactional partition's
    last commit marker left over: one offset a partition at rest)."""
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tenure-bench")
    ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await admin.start()
    await ends.start()
    deadline = time.monotonic() + FIRST_S
    try:
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            end = await ends.end_offsets(tps)
            behind = sum(
                max(0, end[tp] - (committed[tp].offset if tp in committed else 0) - 1) for tp in tps
            )
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"preparing: {group} is {behind} records behind")
            await asyncio.sleep(0.5)
    finally:
        await ends.stop()
        await admin.close()


def tenure_sender(client: httpx.AsyncClient) -> Send:
    async def send(customer: str, schedule: Schedule, due: float) -> None:
        event = _event(customer, "intent", "alternative_search", source="google")
        try:
            response = await _post(client, "/v1/events", event)
        except httpx.HTTPError:
            schedule.refused += 1
            return
        now = time.monotonic()
        if response.status_code != 202:
            schedule.refused += 1
            return
        schedule.acked[customer] = now
        schedule.slowest_ack_s = max(schedule.slowest_ack_s, now - due)

    return send


# -- the floor --------------------------------------------------------------------------------


def offer_email() -> bytes:
    """A retention offer email rendered by the notifier's code, as the notifier sends it."""
    from bench.notifier import Env, notifications
    from notifier.adapters.mailer import message_bytes
    from notifier.domain import messages
    from notifier.domain.render import Renderer
    from notifier.links import Links

    settings = Env(Context("127.0.0.1:9"), "", 25, 80, Path(), Path()).settings("floor.")
    n = notifications("email", 1, "floor")[0]
    link = Links(settings).for_notification(n)
    email = Renderer().email(n.template, messages.template_context(n, link))
    headers = messages.email_headers(n, link.unsubscribe_url)
    data: bytes = message_bytes(settings.mail_from, n.recipient or "", email, headers)
    return data


@contextlib.asynccontextmanager
async def floor_chain(ctx: Context, root: Path, smtp_port: int) -> AsyncIterator[str]:
    """The bare relays and mailer as processes; yields the first topic."""
    topics = [await ctx.fresh_topic("e2n-floor") for _ in range(HOPS)]
    message = root / "offer.eml"
    message.write_bytes(offer_email())
    base = [sys.executable, "-m", "bench.hops"]
    argvs = [
        [*base, "relay", "--source", source, "--target", target]
        for source, target in itertools.pairwise(topics)
    ]
    argvs.append(
        [
            *base,
            "mail",
            "--source",
            topics[-1],
            "--smtp-port",
            str(smtp_port),
            "--message",
            str(message),
        ]
    )
    procs = [
        spawn(
            [*argv, "--bootstrap", ctx.bootstrap, "--group", f"{topics[0]}.{i}"],
            cwd=REPO,
            log_path=root / f"hop-{i}.log",
        )
        for i, argv in enumerate(argvs)
    ]
    try:
        yield topics[0]
    finally:
        for proc in procs:
            stop(proc, timeout=10.0)


def floor_sender(producer: AIOKafkaProducer, topic: str, value: bytes) -> Send:
    async def send(key: str, schedule: Schedule, due: float) -> None:
        try:
            await producer.send_and_wait(topic, key=key.encode(), value=value)
        except Exception:  # a failed produce is counted, as a refused POST
            schedule.refused += 1
            return
        now = time.monotonic()
        schedule.acked[key] = now
        schedule.slowest_ack_s = max(schedule.slowest_ack_s, now - due)

    return send


async def idle_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds a second each process spends with no load (its polls and gauges), over
    ``IDLE_S``: the share of the CPU per trigger it would have spent anyway."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(IDLE_S)
    return {name: (cpu_seconds(pid) - before[name]) / IDLE_S for name, pid in pids.items()}


# -- the benchmark ----------------------------------------------------------------------------


async def measure(
    label: str,
    arrivals: Arrivals,
    send: Send,
    first: str,
    warm: list[str],
    timed: list[str],
    stamps: HopStamps | None = None,
) -> tuple[list[float], str]:
    """One chain: a first key through it, the warm-up keys, then the timed ones; the
    latencies in schedule order, and a note: the hop breakdown and whether it kept up."""
    await run_schedule([first], RATE, send)
    await wait_arrivals(arrivals, [first], FIRST_S)
    if first not in arrivals.at:
        raise TimeoutError(f"{label}: the first email did not arrive in {FIRST_S} s")
    await run_schedule(warm, RATE, send)
    schedule = await run_schedule(timed, RATE, send)
    await wait_arrivals(arrivals, timed, DRAIN_S)
    lat = latencies(arrivals, schedule, timed, label)
    print(describe(label, lat, schedule), flush=True)
    third = max(2, len(lat) // 3)
    drift = percentile(lat[-third:], 50) / percentile(lat[:third], 50)
    note = f"p50 of the last third of the schedule / of the first: {drift:.2f}"
    if stamps is not None:
        hops = stamps.breakdown(schedule, timed)
        print(f"    from the 202 to the first record on: {hops}", flush=True)
        note += f"; from the 202 to the record on {hops}"
    return lat, note


async def run(ctx: Context) -> list[Result]:
    tag = uuid.uuid4().hex[:6]
    warm_n, timed_n, floor_n = (int(s * RATE) for s in (WARMUP_S, DURATION_S, FLOOR_S))
    customers = new_customers(tag, 1 + warm_n + timed_n)
    floor_keys = [f"floor-{tag}-{i}" for i in range(2 + warm_n + 2 * floor_n)]
    trigger = orjson.dumps(_event("floor", "intent", "alternative_search", source="google"))
    smtp_port = free_port()
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="tenure-bench-e2n-", dir="/tmp") as tmp,
        smtp_sink(smtp_port) as arrivals,
    ):
        root = Path(tmp)
        (root / "floor").mkdir()
        async with (
            floor_chain(ctx, root / "floor", smtp_port) as first_topic,
            tenure_stack(ctx, root / "tenure", smtp_port) as stack,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{stack.ports.ingest}",
                headers={"x-api-key": stack.api_key},
                timeout=30,
            ) as client,
            AIOKafkaProducer(
                bootstrap_servers=ctx.bootstrap, acks="all", enable_idempotence=True
            ) as producer,
        ):
            started = time.monotonic()
            await prepare(stack, client, customers)
            prefix = stack.topic_prefix
            await wait_consumed(
                ctx.bootstrap,
                f"{prefix}orchestrator",
                [f"{prefix}{t}" for t in ("events.profile", "signals", "scores")],
                stack.partitions,
            )
            print(
                f"  prepared {len(customers)} customers in {time.monotonic() - started:.0f} s",
                flush=True,
            )
            floor = floor_sender(producer, first_topic, trigger)
            keys = iter(floor_keys)
            first, warm = next(keys), [next(keys) for _ in range(warm_n)]
            before = [next(keys) for _ in range(floor_n)]
            floor_lat, _ = await measure("floor before", arrivals, floor, first, warm, before)
            stamps = HopStamps(
                ctx.bootstrap, [f"{prefix}scores", f"{prefix}notifications"], stack.partitions
            )
            await stamps.start()
            pids = {name: stack.procs[name].pid for name in SERVICES}
            idle = await idle_cpu(pids)
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            began = time.monotonic()
            try:
                tenure_lat, note = await measure(
                    "Tenure",
                    arrivals,
                    tenure_sender(client),
                    customers[0],
                    customers[1 : 1 + warm_n],
                    customers[1 + warm_n :],
                    stamps,
                )
            finally:
                await stamps.stop()
            busy_s = time.monotonic() - began
            cpu = ", ".join(
                f"{name} {(cpu_seconds(pid) - cpu_before[name]) / len(customers) * 1e3:.0f} "
                f"({idle[name] * busy_s / len(customers) * 1e3:.0f} of it idle)"
                for name, pid in pids.items()
            )
            print(f"    CPU per trigger event, ms: {cpu}", flush=True)
            note += f"; CPU per trigger event, ms: {cpu}"
            after = list(keys)  # a first key again: the chain idled through Tenure's run
            floor_after, _ = await measure("floor after", arrivals, floor, after[0], [], after[1:])
            floor_lat += floor_after
    if arrivals.duplicates:
        raise RuntimeError(f"{arrivals.duplicates} emails arrived twice")
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    shape = (
        f"open loop at {RATE:g} trigger events/s for {DURATION_S} s ({len(tenure_lat)} emails, "
        f"after {WARMUP_S} s of warm-up), each a new customer's alternative_search after its "
        f"profile and a competitor_trial (retention offer, churn 0.90); {HOPS} Kafka hops "
        "(events.intent, scores, notifications) through `python -m` ingest, scoring, "
        f"orchestrator, notifier, default settings but no quiet hours; {note}; {load}"
    )
    base = (
        f"physical floor: the same {HOPS} Kafka hops with no rules (bare aiokafka producer, "
        "acks=all, then two consume-and-produce relay processes and a consumer process "
        "sending a pre-rendered offer email with raw aiosmtplib to the same sink), from the "
        f"produce's acknowledgement to the arrival, at the same rate, {FLOOR_S} s before and "
        f"{FLOOR_S} s after Tenure's schedule ({len(floor_lat)} emails), same broker, same run"
    )
    return [
        Result(
            name=f"event_to_notification_latency_p{p}",
            metric=f"p{p} from ingest's 202 for a trigger event to its email's arrival at the "
            f"SMTP sink: {shape}",
            value=percentile(tenure_lat, p) * 1e3,
            unit="ms",
            baseline=f"{base} (p{p})",
            baseline_value=percentile(floor_lat, p) * 1e3,
        )
        for p in (50, 99)
    ]
