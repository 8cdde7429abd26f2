"""Consumer-group lag seen from outside the group: committed offsets from the group
coordinator, end offsets from the partitions' leaders. Unlike a member's own measure
(``Consumer.lag``), it still tells when every member of a group is gone. It also reads
the first record waiting at each committed offset: for the age of the oldest record a
group has not consumed, and to tell a partition where only transaction markers wait
(no lag) from one where records do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.kafka.records import Partition
from common.kafka.security import client_options
from common.settings import CommonSettings

HEAD_FETCH_BYTES = 64 * 1024
"""Bytes fetched per partition when reading the record at a committed offset: one batch
is enough (the broker returns the first batch whole even when it is larger)."""


@dataclass(frozen=True)
class GroupBacklog:
    """One group's backlog, per partition it has committed an offset on.

    ``lag``: the end offset minus that offset, but 0 where no record waits, only
    transaction markers (a transaction's commit or abort marker takes an offset and is
    no record; consumers commit the offset after the last record they processed, which
    on a topic written in transactions is a marker's). Markers among waiting records are
    counted with them (telling them apart would mean reading every record).

    ``oldest_ms``, for the partitions with offsets waiting whose first record could be
    read: that record's Kafka timestamp (ms since the epoch, set by its producer, or by
    the broker for log-append-time topics), or None where only markers wait."""

    lag: dict[Partition, int]
    oldest_ms: dict[Partition, int | None] = field(default_factory=dict)


class GroupLagProbe:
    """Measures consumer groups' lag; ``start`` it before :meth:`lag`, ``stop`` it after.

    Holds one admin client and one group-less ``read_committed`` consumer (for the last
    stable offsets, and for the records waiting at committed offsets), so a measurement
    costs a few requests, not new connections.
    """

    def __init__(self, settings: CommonSettings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            **client_options(self._settings), client_id="tenure-lag-probe"
        )
        await self._admin.start()
        self._ends = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="tenure-lag-probe",
            # A committed offset whose records retention removed: the oldest still there.
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=HEAD_FETCH_BYTES,
        )
        await self._ends.start()

    async def stop(self) -> None:
        if self._ends is not None:
            await self._ends.stop()
            self._ends = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def lag(
        self, groups: Iterable[str], *, read_timeout_s: float = 2.0
    ) -> dict[str, dict[Partition, int]]:
        """Per group, the ``lag`` of its :class:`GroupBacklog` (:meth:`backlog`). A group
        that never committed (or does not exist) maps to ``{}``. Raises aiokafka's errors
        when the cluster does not answer."""
        backlogs = await self.backlog(groups, read_timeout_s=read_timeout_s)
        return {group: backlog.lag for group, backlog in backlogs.items()}

    async def backlog(
        self, groups: Iterable[str], *, read_timeout_s: float = 2.0
    ) -> dict[str, GroupBacklog]:
        """Per group, its :class:`GroupBacklog`: the offsets, and the first record at or
        after each committed offset of a partition with offsets waiting, read within
        ``read_timeout_s``. A partition whose reading did not end in time, or whose record
        has no timestamp, is left out of ``oldest_ms`` and keeps the offsets as its lag."""
        committed, ends = await self._offsets(groups)
        waiting = {
            (tp, offset)
            for offsets in committed.values()
            for tp, offset in offsets.items()
            if ends[tp] > offset
        }
        first = await self._first_timestamps(waiting, ends, read_timeout_s) if waiting else {}
        backlogs = {}
        for group, offsets in committed.items():
            lag = _lags(offsets, ends)
            oldest = {
                (tp.topic, tp.partition): first[tp, offset]
                for tp, offset in offsets.items()
                if (tp, offset) in first
            }
            lag.update({where: 0 for where, stamp in oldest.items() if stamp is None})
            backlogs[group] = GroupBacklog(lag=lag, oldest_ms=oldest)
        return backlogs

    async def _offsets(
        self, groups: Iterable[str]
    ) -> tuple[dict[str, dict[TopicPartition, int]], dict[TopicPartition, int]]:
        if self._admin is None or self._ends is None:
            raise RuntimeError("GroupLagProbe not started")
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        partitions = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = await self._ends.end_offsets(partitions) if partitions else {}
        return committed, ends

    async def _first_timestamps(
        self,
        wanted: set[tuple[TopicPartition, int]],
        ends: dict[TopicPartition, int],
        timeout_s: float,
    ) -> dict[tuple[TopicPartition, int], int | None]:
        """The timestamp of the first committed record at or after each (partition,
        offset), None when the reading reached the end offset without one (markers only);
        one partition is read from one offset at a time (two groups on one partition at
        different offsets take two rounds). What was not read within ``timeout_s``, and a
        record without a timestamp, are left out."""
        assert self._ends is not None
        consumer = self._ends
        loop = asyncio.get_running_loop()
        found: dict[tuple[TopicPartition, int], int | None] = {}
        pending = set(wanted)
        deadline = loop.time() + timeout_s
        try:
            while pending:
                at: dict[TopicPartition, int] = {}
                for tp, offset in sorted(pending, key=lambda p: p[1]):
                    at.setdefault(tp, offset)
                pending -= set(at.items())
                consumer.assign(list(at))
                for tp, offset in at.items():
                    consumer.seek(tp, offset)
                left = set(at)
                while left:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return found
                    wait_ms = int(min(remaining, 0.5) * 1000)
                    for tp, records in (await consumer.getmany(*left, timeout_ms=wait_ms)).items():
                        if records and tp in left:
                            left.discard(tp)
                            stamp = records[0].timestamp
                            if stamp is not None and stamp >= 0:
                                found[tp, at[tp]] = stamp
                    for tp in list(left):
                        if await consumer.position(tp) >= ends[tp]:  # markers only
                            left.discard(tp)
                            found[tp, at[tp]] = None
            return found
        finally:
            consumer.unsubscribe()


def _lags(
    offsets: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> dict[Partition, int]:
    return {(tp.topic, tp.partition): max(0, ends[tp] - offset) for tp, offset in offsets.items()}
