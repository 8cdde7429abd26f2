"""The orchestrator's stall gauges: every ``metrics_every_s`` the backlog is read from
PostgreSQL and written into :mod:`orchestrator.metrics` (timers behind, outbox stuck,
live journeys). Every replica measures the same tables: alert on ``max`` over them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock
from common.kafka import GroupBacklog, GroupLagProbe
from common.runtime import sleep_or_stop
from orchestrator import metrics
from orchestrator.adapters.backlog import Backlog, read_backlog

log = logging.getLogger(__name__)


def record(backlog: Backlog, clock: Clock) -> None:
    """Write one reading into the gauges; timer ages in real seconds (the shared clock may
    run faster than real time)."""
    metrics.TIMERS_DUE.set(backlog.timers_due)
    behind = 0.0
    if backlog.oldest_due_at is not None:
        behind = max(0.0, clock.real_seconds(clock.now() - backlog.oldest_due_at))
    metrics.TIMERS_OLDEST_DUE_SECONDS.set(behind)
    metrics.OUTBOX_PENDING.set(backlog.outbox_pending)
    metrics.OUTBOX_OLDEST_SECONDS.set(max(0.0, backlog.outbox_oldest_age_s or 0.0))
    metrics.JOURNEYS_LIVE.clear()
    for (playbook, state), count in backlog.live_journeys.items():
        metrics.JOURNEYS_LIVE.labels(playbook=playbook, state=state).set(count)


async def run_backlog_gauges(
    engine: AsyncEngine, clock: Clock, *, stop: asyncio.Event, every_s: float
) -> None:
    """Measure the backlog every ``every_s`` real seconds until ``stop``; a failed reading
    (the database away) is logged and skipped, the gauges keep their last values."""
    while not stop.is_set():
        try:
            record(await read_backlog(engine, now=clock.now()), clock)
        except Exception as exc:
            log.warning("backlog not measured: %s", exc)
        await sleep_or_stop(stop, every_s)


def record_groups(backlogs: Mapping[str, GroupBacklog], now_s: float) -> None:
    """Write one measurement of the watched groups into the gauges: the lag, and the age
    of the oldest unconsumed record (``now_s``, wall-clock seconds, minus its timestamp:
    Kafka timestamps are real time) where it was read, 0 where no record waits."""
    for group, backlog in backlogs.items():
        metrics.report_group_lag(group, backlog.lag)
        ages: dict[tuple[str, int], float] = {
            where: 0.0 for where, lag in backlog.lag.items() if lag == 0
        }
        for where, stamp_ms in backlog.oldest_ms.items():
            ages[where] = 0.0 if stamp_ms is None else max(0.0, now_s - stamp_ms / 1000)
        metrics.report_group_oldest(group, ages)


async def run_group_lag(
    probe: GroupLagProbe, groups: list[str], *, stop: asyncio.Event, every_s: float
) -> None:
    """Measure ``groups``' lag and oldest unconsumed records from outside every
    ``every_s`` real seconds until ``stop`` (``probe`` started by the caller); a failed
    measurement is logged and skipped."""
    while not stop.is_set():
        try:
            record_groups(await probe.backlog(groups), time.time())
        except Exception as exc:
            log.warning("consumer group lag not measured: %s", exc)
        await sleep_or_stop(stop, every_s)
