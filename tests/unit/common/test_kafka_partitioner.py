"""The memoised partitioner maps keys exactly as Kafka's default (murmur2) does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from common.kafka import KeyPartitioner


@given(
    keys=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=50),
    partitions=st.integers(min_value=1, max_value=64),
)
def test_same_partition_as_the_default_partitioner(keys: list[bytes], partitions: int) -> None:
    memoised = KeyPartitioner(size=8)  # small: the cache is cleared along the way
    every = list(range(partitions))
    for key in keys * 2:  # the second round is answered from the cache
        assert memoised(key, every, every) == DefaultPartitioner()(key, every, every)


def test_no_key_picks_an_available_partition() -> None:
    assert KeyPartitioner()(None, [0, 1, 2], [2]) == 2
