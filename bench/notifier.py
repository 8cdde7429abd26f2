"""``notifier_email_throughput`` and ``notifier_webhook_throughput``: the notifier's delivery path.

Each measures notifications per second **from the notifications topic to the local sink**,
through the real notifier code (``Deliverer`` and the shared consumer runner): decode, claim in the
delivery log (PostgreSQL), render the templates, send (SMTP with the RFC 8058 headers; or a
Standard-Webhooks-signed POST after the SSRF check), mark the log, publish the outcome on
``deliveries`` and mark it reported. The clock stops when the last outcome is acknowledged
by Kafka. Its peer, measured side by side in the same run against the same sink:

- email: raw ``aiosmtplib`` ``sendmail`` of the same number of **pre-rendered** messages
  (bytes) over as many persistent connections as the notifier's SMTP pool
  (``smtp_pool_size``), one sender per connection;
- webhooks: bare ``httpx`` POSTs of pre-serialised JSON bodies to the same receiver path,
  from one client with as many connections (and senders) as the notifier's client
  (``webhook_max_connections``): no signing, no SSRF check, no log, no Kafka.

The environment is the run's Kafka broker, an embedded PostgreSQL (pgserver, migrated) and
the project's sinks (``python -m devstack sinks``: aiosmtpd and a uvicorn receiver that store
every message as a file) in their own process. Each configuration is first measured
``WARMUP_ROUNDS`` times uncounted; every measurement sends ``WARMUP`` uncounted
notifications first (connections, template cache, warm paths), then ``COUNT`` timed ones;
the configurations are interleaved over ``ROUNDS`` rounds with the order rotated and the
median kept. The sink's files are counted afterwards, so a measurement that lost
messages fails instead of looking fast.

Each measurement also reads, from ``/proc``, the CPU every process of the path used in
its timed section, per notification: this process (the notifier, or the raw client), the
sink, the broker, PostgreSQL, and ``others`` (the rest of the machine: other people's
work). Two cores are shared by all of them, so these say what bounds each side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import aiosmtplib
import httpx
import orjson
from pydantic import BaseModel

from bench import Context, Result
from bench.ingest import cpu_seconds
from bench.orchestrator import machine_cpu, postgres_cpu
from common.clock import ScaledClock
from common.db import create_engine, upgrade
from common.kafka import (
    DeadLetters,
    Headers,
    KafkaPublisher,
    ensure_topics,
    make_consumer,
)
from common.messages import Notification
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.postgres import EmbeddedPostgres
from devstack.procs import free_port, spawn, stop, wait_for_port
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox
from notifier.adapters.mailer import SmtpMailer, message_bytes
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain import messages
from notifier.domain.render import Renderer
from notifier.entrypoints.deliver import Deliverer, consume
from notifier.links import Links
from notifier.settings import NotifierSettings

COUNT = 1_500  # timed notifications per measurement
WARMUP = 150  # per measurement, before the timed ones
ROUNDS = 5
# Whole measurements of each configuration before the counted rounds: the first one was
# the lowest of every run for both sides (fresh PostgreSQL tables and indexes, a fresh
# broker's first topics and consumer groups, the sink's first files), more than the
# per-measurement warm-up covers.
WARMUP_ROUNDS = 1
SECRET = "whsec_" + base64.b64encode(b"bench-webhook-key-0123456789abcdef").decode()
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Env:
    ctx: Context
    database_url: str
    smtp_port: int
    webhook_port: int
    mail_dir: Path
    webhook_dir: Path
    postmaster: int = 0
    sink_pid: int | None = None

    def settings(self, prefix: str) -> NotifierSettings:
        common = CommonSettings(
            kafka_bootstrap=self.ctx.bootstrap,
            topic_prefix=prefix,
            database_url=self.database_url,
        )
        hooks = f"http://127.0.0.1:{self.webhook_port}"
        return NotifierSettings(
            common=common,
            smtp_port=self.smtp_port,
            public_url="https://notifier.bench.example",
            link_secret="bench-link-secret",
            webhook_secret=SECRET,
            webhook_csm_url=f"{hooks}/bench-csm",
            webhook_escalation_url=f"{hooks}/bench-escalation",
            webhook_allow_hosts=(f"127.0.0.1:{self.webhook_port}",),
        )


CPU_PARTS = ("bench", "sink", "broker", "postgres", "others")


def cpu_now(env: Env) -> dict[str, float]:
    """CPU seconds used so far by each process of the path, and by the whole machine."""
    return {
        "bench": cpu_seconds(os.getpid()),
        "sink": cpu_seconds(env.sink_pid),
        "broker": cpu_seconds(env.ctx.broker_pid),
        "postgres": postgres_cpu(env.postmaster),
        "machine": machine_cpu(),
    }


def cpu_per_item(start: dict[str, float], end: dict[str, float], n: int) -> dict[str, float]:
    """Milliseconds of CPU per item of each part between two :func:`cpu_now` readings;
    ``others`` is the machine's minus the path's."""
    used = {part: end[part] - start[part] for part in start}
    ours = sum(v for part, v in used.items() if part != "machine")
    used["others"] = used.pop("machine") - ours
    return {part: 1000 * used[part] / n for part in CPU_PARTS}


@dataclass
class Sample:
    rate: float  # notifications per second
    cpu_ms: dict[str, float]  # CPU per notification, by part (CPU_PARTS)

    def describe(self) -> str:
        parts = ", ".join(f"{part} {ms:.2f}" for part, ms in self.cpu_ms.items())
        return f"CPU ms each: {parts}"


@contextlib.asynccontextmanager
async def environment(ctx: Context) -> AsyncIterator[Env]:
    with tempfile.TemporaryDirectory(prefix="tenure-bench-notifier-", dir="/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
        pg = EmbeddedPostgres(root / "pg", delete_on_stop=True)
        url = await asyncio.to_thread(pg.start)
        await asyncio.to_thread(upgrade, url)
        smtp_port, webhook_port = free_port(), free_port()
        env = Env(ctx, url, smtp_port, webhook_port, root / "mail", root / "webhooks")
        sinks = spawn(
            [
                str(REPO / ".venv" / "bin" / "python"),
                "-m",
                "devstack",
                "sinks",
                "--mail-dir",
                str(env.mail_dir),
                "--smtp-port",
                str(smtp_port),
                "--webhook-dir",
                str(env.webhook_dir),
                "--webhook-port",
                str(webhook_port),
            ],
            cwd=REPO,
            log_path=root / "sinks.log",
        )
        env.postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        env.sink_pid = sinks.pid
        try:
            wait_for_port(smtp_port, timeout=20, proc=sinks, what="SMTP sink")
            wait_for_port(webhook_port, timeout=20, proc=sinks, what="webhook receiver")
            yield env
        finally:
            stop(sinks)
            await asyncio.to_thread(pg.stop)


class CountingPublisher:
    """Wraps the real publisher; notes when the n-th outcome was acknowledged."""

    def __init__(
        self, inner: KafkaPublisher, marks: Sequence[int], cpu: Callable[[], dict[str, float]]
    ) -> None:
        self.inner = inner
        self.cpu = cpu
        self.count = 0
        self.reached: dict[int, float] = {}
        self.cpu_at: dict[int, dict[str, float]] = {}
        self.marks = set(marks)
        self.done = asyncio.Event()
        self.last = max(marks)

    async def publish(
        self,
        topic: Topic | str,
        key: str,
        value: BaseModel | dict[str, Any] | bytes,
        headers: Headers | None = None,
    ) -> None:
        await self.inner.publish(topic, key, value, headers)
        if topic == Topic.DELIVERIES:
            self.count += 1
            if self.count in self.marks:
                self.reached[self.count] = time.perf_counter()
                self.cpu_at[self.count] = self.cpu()
            if self.count >= self.last:
                self.done.set()

    async def publish_each(self, records: Any, *, timeout_s: float) -> Any:
        return await self.inner.publish_each(records, timeout_s=timeout_s)

    async def ready(self, timeout_s: float) -> str | None:
        return await self.inner.ready(timeout_s)


def notifications(channel: str, n: int, label: str) -> list[Notification]:
    out = []
    for i in range(n):
        nid = f"{label}-{i}-{uuid.uuid4().hex[:8]}"
        customer = f"bench-{label}-{i}"
        email = channel == "email"
        out.append(
            Notification(
                notification_id=nid,
                customer_id=customer,
                journey_id=f"j-{nid}",
                playbook="retention_offer",
                step="offer" if email else "retention_call",
                channel="email" if email else "webhook",
                template="retention_offer/offer" if email else "retention_offer/retention_call",
                variant="discount_30_3_months",
                priority="normal" if email else "high",
                recipient=f"{customer}@example.com" if email else "csm",
                created_at=datetime(2026, 1, 5, tzinfo=UTC),
                context={
                    "first_name": "Ana",
                    "email": f"{customer}@example.com",
                    "plan": "pro",
                    "owner_csm": "csm@example.com",
                    "score": {
                        "churn_probability": 0.91,
                        "tier": "high",
                        "signals": [
                            {"name": "competitor_trial", "value": 1, "threshold": 1},
                            {"name": "alternative_search", "value": 1, "threshold": 1},
                        ],
                        "red_flags": [{"name": "trial_and_search"}],
                    },
                },
            )
        )
    return out


async def pipeline(env: Env, channel: str) -> Sample:
    """Notifications per second through the notifier, from Kafka to the sink."""
    prefix = env.ctx.fresh_name(f"notifier-{channel}") + "."
    settings = env.settings(prefix)
    common = settings.common
    await ensure_topics(common, [Topic.NOTIFICATIONS, Topic.DELIVERIES])
    batch = notifications(channel, WARMUP + COUNT, prefix.split(".")[-2])
    engine = create_engine(common.database_url)
    publisher = KafkaPublisher(
        common, client_id="bench-notifier", linger_ms=settings.producer_linger_ms
    )  # as bootstrap builds it
    async with publisher as producer:
        topic = topic_name(Topic.NOTIFICATIONS, prefix)
        # The warm-up records first, acknowledged before the timed ones are written.
        await producer.publish_many((topic, n.customer_id, n, ()) for n in batch[:WARMUP])
        await producer.publish_many((topic, n.customer_id, n, ()) for n in batch[WARMUP:])
        counting = CountingPublisher(producer, [WARMUP, WARMUP + COUNT], lambda: cpu_now(env))
        consumer = make_consumer(common, [Topic.NOTIFICATIONS], group_id=f"{prefix}notifier")
        mailer = SmtpMailer(settings)
        http = vetted_client(
            allow=settings.webhook_allow_hosts,
            timeout_s=settings.webhook_timeout_s,
            max_connections=settings.webhook_max_connections,
        )
        async with http:
            deliverer = Deliverer(
                settings=settings,
                log=DeliveryLog(engine),
                mailer=mailer,
                webhooks=WebhookSender(http, SECRET, allow=settings.webhook_allow_hosts),
                renderer=Renderer(),
                publisher=counting,
                clock=ScaledClock(),
                suppressions=Suppressions(engine),
                inbox=Inbox(engine),
                dead_letters=DeadLetters(counting, consumer_name="bench"),
            )
            await consumer.start()
            stopping = asyncio.Event()
            loop = asyncio.create_task(consume(consumer, deliverer, stop=stopping))
            try:
                await asyncio.wait_for(counting.done.wait(), timeout=300)
            finally:
                stopping.set()
                await loop
                await consumer.stop()
                await deliverer.log.aclose()
                await mailer.aclose()
    await engine.dispose()
    if counting.count != WARMUP + COUNT:
        raise RuntimeError(f"{counting.count} outcomes for {WARMUP + COUNT} notifications")
    return Sample(
        COUNT / (counting.reached[WARMUP + COUNT] - counting.reached[WARMUP]),
        cpu_per_item(counting.cpu_at[WARMUP], counting.cpu_at[WARMUP + COUNT], COUNT),
    )


async def _concurrently(n: int, workers: int, one: Callable[[int], Awaitable[None]]) -> None:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def raw_smtp(env: Env, _channel: str) -> Sample:
    """Pre-rendered messages per second with bare aiosmtplib, same concurrency."""
    settings = env.settings("bench-raw.")
    renderer = Renderer()
    links = Links(settings)
    batch = notifications("email", WARMUP + COUNT, f"raw-{uuid.uuid4().hex[:6]}")
    rendered = []
    for n in batch:
        link = links.for_notification(n)
        email = renderer.email(n.template, messages.template_context(n, link))
        data = message_bytes(
            settings.mail_from,
            n.recipient or "",
            email,
            messages.email_headers(n, link.unsubscribe_url),
        )
        rendered.append((n.recipient or "", data))

    workers = settings.smtp_pool_size  # as many connections as the notifier's pool
    clients = [
        aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=env.smtp_port,
            timeout=settings.smtp_timeout_s,
            local_hostname=settings.smtp_local_hostname,
        )
        for _ in range(workers)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    free = list(clients)

    async def send(i: int) -> None:
        to, data = rendered[i]
        client = free.pop()
        try:
            await client.sendmail("success@tenure.example", [to], data)
        finally:
            free.append(client)

    try:
        await _concurrently(WARMUP, workers, send)
        cpu, started = cpu_now(env), time.perf_counter()
        await _concurrently(COUNT, workers, lambda i: send(WARMUP + i))
        took = time.perf_counter() - started
        return Sample(COUNT / took, cpu_per_item(cpu, cpu_now(env), COUNT))
    finally:
        await asyncio.gather(*(c.quit() for c in clients), return_exceptions=True)


async def raw_httpx(env: Env, _channel: str) -> Sample:
    """Pre-serialised JSON bodies per second with bare httpx, same concurrency."""
    settings = env.settings("bench-raw.")
    batch = notifications("webhook", WARMUP + COUNT, f"raw-{uuid.uuid4().hex[:6]}")
    bodies = [orjson.dumps(messages.csm_task_body(n, "Retention call", "standard")) for n in batch]
    url = settings.webhook_csm_url
    workers = settings.webhook_max_connections  # as many connections as the notifier's client
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(timeout=settings.webhook_timeout_s, limits=limits) as client:

        async def post(i: int) -> None:
            response = await client.post(
                url, content=bodies[i], headers={"content-type": "application/json"}
            )
            response.raise_for_status()

        await _concurrently(WARMUP, workers, post)
        cpu, started = cpu_now(env), time.perf_counter()
        await _concurrently(COUNT, workers, lambda i: post(WARMUP + i))
        took = time.perf_counter() - started
        return Sample(COUNT / took, cpu_per_item(cpu, cpu_now(env), COUNT))


Measure = Callable[[Env, str], Awaitable[Sample]]


@dataclass
class Compared:
    """Medians over the rounds, by configuration: the rate and the CPU per notification."""

    rates: dict[str, float]
    cpu_ms: dict[str, dict[str, float]]
    load: tuple[float, float]  # 1-minute load average at the start and at the end

    def describe(self) -> str:
        """The CPU medians, for a result's metric text."""
        sides = "; ".join(
            f"{name} " + ", ".join(f"{part} {ms:.2f}" for part, ms in parts.items())
            for name, parts in self.cpu_ms.items()
        )
        start, end = self.load
        return f"CPU ms per notification (medians): {sides}; load {start:.1f}-{end:.1f}"


async def _compare(ctx: Context, channel: str, configs: dict[str, Measure]) -> Compared:
    samples: dict[str, list[Sample]] = {name: [] for name in configs}
    load = os.getloadavg()[0]
    async with environment(ctx) as env:
        names = list(configs)
        for name in names:  # a whole round each first, not counted (see WARMUP_ROUNDS)
            for _ in range(WARMUP_ROUNDS):
                s = await configs[name](env, channel)
                print(
                    f"  warm-up {name:>10}: {s.rate:>8,.0f} {channel}s/s (not counted)", flush=True
                )
        for r in range(ROUNDS):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                s = await configs[name](env, channel)
                samples[name].append(s)
                print(
                    f"  round {r + 1} {name:>10}: {s.rate:>8,.0f} {channel}s/s; {s.describe()}; "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        sent = _count_sink(env, channel)
    expected = (WARMUP_ROUNDS + ROUNDS) * len(configs) * (WARMUP + COUNT)
    if sent != expected:
        raise RuntimeError(f"the sink holds {sent} {channel}s, expected {expected}")
    return Compared(
        rates={name: median(s.rate for s in values) for name, values in samples.items()},
        cpu_ms={
            name: {part: median(s.cpu_ms[part] for s in values) for part in CPU_PARTS}
            for name, values in samples.items()
        },
        load=(load, os.getloadavg()[0]),
    )


def _count_sink(env: Env, channel: str) -> int:
    if channel == "email":
        return sum(1 for _ in env.mail_dir.glob("*.eml"))
    hits = 0
    for path in env.webhook_dir.glob("*.json"):
        if json.loads(path.read_text())["path"] == "/bench-csm":
            hits += 1
    return hits


async def run_email(ctx: Context) -> list[Result]:
    compared = await _compare(ctx, "email", {"notifier": pipeline, "aiosmtplib": raw_smtp})
    rates = compared.rates
    return [
        Result(
            name="notifier_email_throughput",
            metric=f"emails/s from the notifications topic to the local SMTP sink through the "
            f"notifier (render, RFC 8058 headers, delivery log, outcome on Kafka); "
            f"{COUNT} per round, median of {ROUNDS}. {compared.describe()}",
            value=rates["notifier"],
            unit="emails/s",
            baseline="raw aiosmtplib sendmail of the same messages pre-rendered, over as many "
            "persistent connections as the notifier's pool, same sink, same run",
            baseline_value=rates["aiosmtplib"],
        )
    ]


async def run_webhook(ctx: Context) -> list[Result]:
    compared = await _compare(ctx, "webhook", {"notifier": pipeline, "httpx": raw_httpx})
    rates = compared.rates
    return [
        Result(
            name="notifier_webhook_throughput",
            metric=f"CSM webhooks/s from the notifications topic to the local receiver through "
            f"the notifier (render, SSRF check, Standard Webhooks signature, delivery log, "
            f"outcome on Kafka); {COUNT} per round, median of {ROUNDS}. {compared.describe()}",
            value=rates["notifier"],
            unit="webhooks/s",
            baseline="bare httpx POSTs of pre-serialised bodies over as many connections as "
            "the notifier's client, same receiver, same run",
            baseline_value=rates["httpx"],
        )
    ]
