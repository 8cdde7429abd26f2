"""What the latency benchmarks observe with: an SMTP sink stamping arrivals, an open-loop
schedule of sends, and a reader stamping records on topics (``bench.event_latency``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiosmtpd.controller import Controller

from bench.pacing import paced, percentile

# -- the sink ---------------------------------------------------------------------------------


class Arrivals:
    """aiosmtpd handler: accepts every message, notes when each recipient's first arrived."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}  # local part of the recipient -> time.monotonic()
        self.duplicates = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        for rcpt in envelope.rcpt_tos:
            local = rcpt.split("@", 1)[0]
            if local in self.at:
                self.duplicates += 1
            else:
                self.at[local] = now
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_sink(port: int) -> Iterator[Arrivals]:
    """The sink on 127.0.0.1:``port``, in a thread of this process, for the block."""
    arrivals = Arrivals()
    controller = Controller(arrivals, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield arrivals
    finally:
        controller.stop()


# -- one timed schedule -----------------------------------------------------------------------


@dataclass
class Schedule:
    """Latencies of one open-loop schedule: key -> acknowledged at, and what failed."""

    acked: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    slowest_ack_s: float = 0.0  # the longest scheduled time -> acknowledgement


Send = Callable[[str, Schedule, float], Coroutine[Any, Any, None]]


async def run_schedule(keys: list[str], rate: float, send: Send) -> Schedule:
    """Send each of ``keys`` at its time in the schedule (``send(key, schedule, due)``)."""
    schedule = Schedule()
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(send(keys[i], schedule, due)) async for i, due in paced(len(keys), rate)
    ]
    await asyncio.gather(*tasks)
    return schedule


async def wait_arrivals(arrivals: Arrivals, keys: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(k not in arrivals.at for k in keys):
        await asyncio.sleep(0.1)


# -- where Tenure's time goes ----------------------------------------------------------------


class HopStamps:
    """When each key's records appeared on some topics, read committed by a consumer of
    this process without a group (every partition, from the end at start): a breakdown
    of Tenure's latency by hop, printed beside the result."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int) -> None:
        self.topics = topics
        self.partitions = partitions
        self.seen: dict[tuple[str, str], list[float]] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for tp, records in batch.items():
                for r in records:
                    self.seen.setdefault((tp.topic, (r.key or b"").decode()), []).append(now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def breakdown(self, schedule: Schedule, keys: list[str]) -> str:
        """p50 and p99 of acknowledgement -> first record on each topic after it."""
        parts = []
        for topic in self.topics:
            lat = [
                min((t for t in self.seen.get((topic, k), ()) if t >= schedule.acked[k]), default=0)
                - schedule.acked[k]
                for k in keys
                if k in schedule.acked
            ]
            lat = [x for x in lat if x > 0]
            if len(lat) >= 2:
                parts.append(
                    f"{topic.rsplit('.', 1)[-1]} p50 {percentile(lat, 50) * 1e3:.0f} ms, "
                    f"p99 {percentile(lat, 99) * 1e3:.0f} ms"
                )
        return "; ".join(parts)
