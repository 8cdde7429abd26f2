"""The cohort-stats follower: every worker reads each plan's pooled counts into its rules.

The cohort agent of whichever worker owns a plan publishes the plan's pooled counts on
the compacted, one-partition ``cohort-stats`` topic when they change. Every worker reads
that topic from its start and keeps following it, with a consumer of its own outside
the consumer group, into the dict the rules read (see docs/decisions.md, *Cohorts*).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping

from common.kafka import follow, make_consumer
from common.settings import CommonSettings
from scoring.domain.value import CohortStats
from scoring.service import decode_stats

log = logging.getLogger(__name__)


def apply_stats(
    into: MutableMapping[str, CohortStats], key: str | None, value: bytes | None
) -> None:
    """Apply one ``cohort-stats`` record to ``into`` (a malformed one is logged and skipped)."""
    plan = key or ""
    try:
        stats = decode_stats(value)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("invalid cohort-stats record", extra={"error": str(exc)})
        return
    if stats is None:
        into.pop(plan, None)
    else:
        into[plan] = stats


class CohortStatsFollower:
    """Follows ``topic`` from its start into ``into``; :meth:`run` returns only when
    cancelled. ``before`` runs first (the app declares the topic there)."""

    def __init__(
        self,
        settings: CommonSettings,
        topic: str,
        into: MutableMapping[str, CohortStats],
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._into = into
        self._before = before

    async def run(self) -> None:
        if self._before is not None:
            await self._before()
        consumer = make_consumer(
            self._settings,
            [self._topic],
            group_id=None,  # outside the group: every worker reads the whole topic
            isolation_level="read_uncommitted",
        )
        await consumer.start()
        try:
            async for record in follow(consumer):
                apply_stats(self._into, record.key, record.value)
        finally:
            await consumer.stop()
