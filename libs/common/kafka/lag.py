"""Consumer-group lag seen from outside the group: committed offsets from the group
coordinator, end offsets from the partitions' leaders. Unlike a member's own measure
(``Consumer.lag``), it still tells when every member of a group is gone."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.kafka.records import Partition
from common.kafka.security import client_options
from common.settings import CommonSettings


class GroupLagProbe:
    """Measures consumer groups' lag; ``start`` it before :meth:`lag`, ``stop`` it after.

    Holds one admin client and one group-less ``read_committed`` consumer (for the last
    stable offsets), so a measurement costs a few requests, not new connections.
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
        )
        await self._ends.start()

    async def stop(self) -> None:
        if self._ends is not None:
            await self._ends.stop()
            self._ends = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def lag(self, groups: Iterable[str]) -> dict[str, dict[Partition, int]]:
        """Per group, per partition it has committed an offset on: the end offset minus
        that offset. A group that never committed (or does not exist) maps to ``{}``.
        Raises aiokafka's errors when the cluster does not answer."""
        if self._admin is None or self._ends is None:
            raise RuntimeError("GroupLagProbe not started")
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        partitions = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = await self._ends.end_offsets(partitions) if partitions else {}
        return {
            group: {
                (tp.topic, tp.partition): max(0, ends[tp] - offset)
                for tp, offset in offsets.items()
            }
            for group, offsets in committed.items()
        }
