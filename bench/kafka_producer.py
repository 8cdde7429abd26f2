"""``kafka_producer_raw`` and ``kafka_producer_publisher``: what one producer can write here.

The physical limit that later ingest work is compared against. The same 200,000
pre-serialised event records (``bench.events``, key = customer id) are written to a
fresh 3-partition topic per measurement by:

- ``raw_all``: a bare aiokafka producer, ``acks=all``, idempotent, ``linger_ms=2``
  (the guarantees Tenure requires of every producer);
- ``raw_one``: the same producer with ``acks=1`` and no idempotence, a peer
  configuration: the baseline of ``kafka_producer_raw``;
- ``publisher``: Tenure's ``KafkaPublisher.publish_many`` with the project's own
  producer settings, whose baseline is ``raw_all``.

Sends are pipelined: ``send()`` futures are gathered chunk by chunk, never one
``send_and_wait`` at a time. Each producer first writes ``WARMUP`` records to its
topic (connection, metadata, producer id, partition leaders), then the timed
records; before the first round every configuration runs once on ``BROKER_WARMUP``
records, uncounted, so that the broker's JVM is warm. The three configurations are
then measured ``ROUNDS`` times, interleaved with the order rotated each round so
that drift on a shared machine hits them alike; the median of each is kept. Every
topic's end offsets are checked afterwards, so a measurement that lost records
fails instead of looking fast, and the produce errors aiokafka retried during a
timed section are counted and shown.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import Context, Result, counting_warnings
from bench.events import EventRecords, event_records
from common.kafka import KafkaPublisher

RECORDS = 200_000
WARMUP = 10_000  # per producer, before its timed records
BROKER_WARMUP = 100_000  # per configuration, once, before the first round
ROUNDS = 3
CHUNK = 5_000
PARTITIONS = 3
LINGER_MS = 2  # the same as common.kafka.KafkaPublisher, so the limit is like for like


@dataclass(frozen=True)
class Sample:
    rate: float  # events/s over the timed records
    retries: int  # produce errors aiokafka retried while timed (should be 0)

    def __str__(self) -> str:
        retried = f"  ({self.retries} retried produce errors)" if self.retries else ""
        return f"{self.rate:>9,.0f} events/s{retried}"


Measure = Callable[[Context, EventRecords], Coroutine[Any, Any, Sample]]


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


async def _send_pipelined(
    producer: AIOKafkaProducer, topic: str, keys: Sequence[bytes], values: Sequence[bytes]
) -> None:
    for part in _chunks(len(values)):
        futures = [
            await producer.send(topic, value, key=key)
            for key, value in zip(keys[part], values[part], strict=True)
        ]
        await asyncio.gather(*futures)


async def _check_written(ctx: Context, topic: str, expected: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=ctx.bootstrap, client_id="tenure-bench-check")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        written = sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()
    if written < expected:
        raise RuntimeError(f"{topic}: {written} records on the broker, {expected} sent")
    if written > expected:  # possible without idempotence: a retried send written twice
        print(f"  note: {topic} holds {written - expected} duplicate records", flush=True)


async def _raw(ctx: Context, records: EventRecords, *, acks: int | str, idempotent: bool) -> Sample:
    topic = await ctx.fresh_topic(f"raw-acks{acks}", partitions=PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=ctx.bootstrap,
        client_id="tenure-bench-raw",
        acks=acks,
        enable_idempotence=idempotent,
        linger_ms=LINGER_MS,
    )
    await producer.start()
    try:
        await _send_pipelined(producer, topic, records.keys[:WARMUP], records.values[:WARMUP])
        gc.collect()
        with counting_warnings() as warnings:
            started = time.perf_counter()
            await _send_pipelined(producer, topic, records.keys, records.values)
            elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    await _check_written(ctx, topic, WARMUP + len(records))
    return Sample(len(records) / elapsed, warnings.count)


async def raw_all(ctx: Context, records: EventRecords) -> Sample:
    return await _raw(ctx, records, acks="all", idempotent=True)


async def raw_one(ctx: Context, records: EventRecords) -> Sample:
    return await _raw(ctx, records, acks=1, idempotent=False)


async def publisher(ctx: Context, records: EventRecords) -> Sample:
    topic = await ctx.fresh_topic("publisher", partitions=PARTITIONS)
    # The publisher's API takes the key as text and the value as a model, dict or bytes:
    # give it what ingest has in hand (the customer id, the serialised event).
    batch = [(topic, k.decode(), v, ()) for k, v in zip(records.keys, records.values, strict=True)]
    async with KafkaPublisher(ctx.settings(), client_id="tenure-bench-publisher") as pub:
        for part in _chunks(WARMUP):
            await pub.publish_many(batch[part])
        gc.collect()
        with counting_warnings() as warnings:
            started = time.perf_counter()
            for part in _chunks(len(batch)):
                await pub.publish_many(batch[part])
            elapsed = time.perf_counter() - started
    await _check_written(ctx, topic, WARMUP + len(records))
    return Sample(len(records) / elapsed, warnings.count)


MEASURES: dict[str, Measure] = {"raw_all": raw_all, "raw_one": raw_one, "publisher": publisher}


async def run(ctx: Context) -> list[Result]:
    records = event_records(RECORDS)
    print(f"records: {records.describe()}; chunks of {CHUNK:,}; {ROUNDS} rounds", flush=True)
    # The broker's JVM needs far more than one producer's warm-up to get its hot paths
    # compiled: without this the first round runs at half speed. Not counted.
    warm = EventRecords(records.keys[:BROKER_WARMUP], records.values[:BROKER_WARMUP])
    for name, measure in MEASURES.items():
        print(f"  warm-up  {name:<9} {await measure(ctx, warm)} (not counted)", flush=True)
    samples: dict[str, list[float]] = {name: [] for name in MEASURES}
    order = list(MEASURES)
    for round_ in range(ROUNDS):
        for name in order[round_:] + order[:round_]:
            sample = await MEASURES[name](ctx, records)
            samples[name].append(sample.rate)
            print(f"  round {round_ + 1}  {name:<9} {sample}", flush=True)
    best = {name: float(median(values)) for name, values in samples.items()}
    shape = (
        f"{len(records):,} events (mean {records.mean_value_bytes:.0f} B), key=customer_id, "
        f"fresh {PARTITIONS}-partition topic, pipelined in chunks of {CHUNK:,}"
    )
    return [
        Result(
            name="kafka_producer_raw",
            metric=f"aiokafka producer throughput, acks=all, idempotent, linger_ms={LINGER_MS}: "
            f"{shape}; median of {ROUNDS}",
            value=best["raw_all"],
            unit="events/s",
            baseline="peer: same aiokafka producer with acks=1, no idempotence, same records, "
            "same broker, same run",
            baseline_value=best["raw_one"],
        ),
        Result(
            name="kafka_producer_publisher",
            metric=f"common.kafka.KafkaPublisher.publish_many throughput (project settings: "
            f"acks=all, idempotent, linger_ms=2): {shape}; median of {ROUNDS}",
            value=best["publisher"],
            unit="events/s",
            baseline="physical limit: raw aiokafka producer, acks=all, idempotent "
            "(kafka_producer_raw value), same run",
            baseline_value=best["raw_all"],
        ),
    ]
