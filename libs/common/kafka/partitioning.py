"""Kafka's default key -> partition mapping, shared by every producer and the memory broker."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: murmur2, as the Java client."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """Kafka's default key -> partition mapping (murmur2, as the Java client), memoised.

    aiokafka's murmur2 is pure Python and was a tenth of ingest's CPU; a customer's
    events keep coming, so the partition of a recent key is looked up instead. The
    mapping is the default one, so every producer agrees on a customer's partition.
    """

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        n = len(all_partitions)
        index = self._cache.get((key, n))
        if index is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            index = self._cache[key, n] = partition_for(key, n)
        return all_partitions[index]
