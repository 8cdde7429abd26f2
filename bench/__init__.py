"""Tenure's benchmarks: ``make bench`` (or ``python -m bench [NAME ...]``).

Each benchmark reports a figure next to a baseline measured side by side in the
same run, on the same broker: a physical limit (what raw Kafka can do here) or a
peer configuration. The ratio is the result; on a shared, noisy machine the
absolute numbers mean little. See ``docs/BENCHMARKS.md``.

A benchmark is an ``async def (ctx: Context) -> list[Result]``, registered in
``bench.__main__.BENCHMARKS``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.settings import CommonSettings

RESULT_KEYS = ("name", "metric", "value", "unit", "baseline", "baseline_value", "ratio", "command")


@dataclass(frozen=True)
class Result:
    """One line of ``bench/results.json``; ``ratio`` = ``value`` / ``baseline_value``."""

    name: str
    metric: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    command: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": round(self.value, 1),
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": round(self.baseline_value, 1),
            "ratio": round(self.ratio, 3),
            "command": self.command,
        }


@dataclass
class Context:
    """What a benchmark gets from the runner: the run's own Kafka broker."""

    bootstrap: str
    broker_pid: int | None = None  # to account for the broker's CPU time, where useful
    run_id: str = field(default_factory=lambda: f"{int(time.time())}")
    _topics: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def settings(self, **overrides: Any) -> CommonSettings:
        """Common settings pointing at the benchmark broker."""
        return CommonSettings(kafka_bootstrap=self.bootstrap, **overrides)

    def fresh_name(self, label: str) -> str:
        """A name no other topic (or topic prefix) of this run has: ``bench.<run>.<label>.<n>``."""
        return f"bench.{self.run_id}.{label}.{next(self._topics)}"

    async def fresh_topic(self, label: str, *, partitions: int = 3, timeout_s: float = 60.0) -> str:
        """Create a new, empty topic ``bench.<run>.<label>.<n>``, retried while Kafka starts."""
        name = self.fresh_name(label)
        deadline = time.monotonic() + timeout_s
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="tenure-bench")
            try:
                await admin.start()
                response = await admin.create_topics([NewTopic(name, partitions, 1)])
                for _topic, code, *_ in response.topic_errors:
                    if code and errors.for_code(code) is not errors.TopicAlreadyExistsError:
                        raise errors.for_code(code)(f"creating {name}")
                while not await _has_leaders(admin, name, partitions):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name}: no leader for every partition")
                    await asyncio.sleep(0.1)
                return name
            except errors.KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            finally:
                await admin.close()


async def wait_for_leaders(
    bootstrap: str, topics: list[str], partitions: int, *, timeout_s: float = 60.0
) -> None:
    """Block until every partition of every topic of ``topics`` has a leader."""
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tenure-bench")
    await admin.start()
    try:
        for topic in topics:
            while not await _has_leaders(admin, topic, partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic}: no leader for every partition")
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _has_leaders(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> bool:
    """Whether every partition of ``topic`` has a leader (producing before that fails)."""
    described = await admin.describe_topics([topic])
    found = [
        p for t in described if t["topic"] == topic and not t["error_code"] for p in t["partitions"]
    ]
    return len(found) == partitions and all(p["leader"] >= 0 and not p["error_code"] for p in found)


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextmanager
def counting_warnings(logger: str = "aiokafka") -> Iterator[_Counter]:
    """Count (instead of printing) the warnings ``logger`` emits inside the block.

    aiokafka logs a warning for every produce error it retries: a timed section
    with retries in it measured something else than the steady state.
    """
    counter = _Counter()
    target = logging.getLogger(logger)
    target.addHandler(counter)
    try:
        yield counter
    finally:
        target.removeHandler(counter)
