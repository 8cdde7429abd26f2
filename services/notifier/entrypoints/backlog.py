"""The notifier's stall gauges: every ``metrics_every_s`` the retry backlog is read from
the delivery log and written into :mod:`notifier.metrics`."""

from __future__ import annotations

import asyncio
import logging
from typing import get_args

from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from common.messages import Channel
from common.runtime import sleep_or_stop
from notifier import metrics
from notifier.adapters.backlog import RetryBacklog, read_retry_backlog

log = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = get_args(Channel)


def record(backlog: RetryBacklog, clock: Clock) -> None:
    """Write one reading into the gauges (every channel, 0 when none waits); ages in real
    seconds (the shared clock may run faster than real time)."""
    now = clock.now()
    for channel in sorted(set(CHANNELS) | set(backlog.waiting)):
        metrics.RETRIES_WAITING.labels(channel=channel).set(backlog.waiting.get(channel, 0))
        first = backlog.oldest_first_attempt.get(channel)
        age = 0.0 if first is None else max(0.0, clock.real_seconds(now - first))
        metrics.RETRIES_OLDEST_SECONDS.labels(channel=channel).set(age)


async def run_backlog_gauges(
    engine: AsyncEngine, clock: Clock, *, stop: asyncio.Event, every_s: float
) -> None:
    """Measure the retry backlog every ``every_s`` real seconds until ``stop``; a failed
    reading (the database away) is logged and skipped."""
    while not stop.is_set():
        try:
            record(await read_retry_backlog(engine), clock)
        except Exception as exc:
            log.warning("retry backlog not measured: %s", exc)
        await sleep_or_stop(stop, every_s)
