"""The stall metrics' plumbing: the runner's lag reports, the lag gauge, build info."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Gauge

from common.kafka import (
    DeadLetters,
    FakeConsumer,
    FakePublisher,
    MemoryBroker,
    Partition,
    Record,
    Sequential,
    run_consumer,
)
from common.metrics import BUILD_COMMIT_ENV, LagGauge, build_info

TOPIC = "t.lagging"


async def test_the_runner_reports_lag_while_records_wait_and_clears_it_on_stop() -> None:
    broker = MemoryBroker(partitions=2)
    broker.create_topic(TOPIC)
    for i in range(6):
        broker.append(TOPIC, f"k{i}", b"{}")
    consumer = FakeConsumer(broker, [TOPIC], group_id="g1")
    await consumer.start()
    reports: list[tuple[str, dict[Partition, int]]] = []
    release, stop = asyncio.Event(), asyncio.Event()

    async def handle(record: Record) -> None:
        await release.wait()

    def report(group: str, lags: Mapping[Partition, int]) -> None:
        reports.append((group, dict(lags)))

    loop = asyncio.create_task(
        run_consumer(
            consumer,
            handle,
            DeadLetters(FakePublisher(), consumer_name="unit"),
            stop=stop,
            name="unit",
            strategy=Sequential(),
            report_lag=report,
            lag_every_s=0.01,
        )
    )
    await asyncio.sleep(0.05)
    group, stuck = reports[-1]
    assert group == "g1"
    assert sum(stuck.values()) == 6  # nothing committed: every record is behind
    assert set(stuck) == {(TOPIC, 0), (TOPIC, 1)}
    release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sum(reports[-1][1].values()) == 0:
            break
    assert reports[-1] == ("g1", {(TOPIC, 0): 0, (TOPIC, 1): 0})
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert reports[-1] == ("g1", {})  # stopped: this member holds nothing any more


def test_the_lag_gauge_drops_the_partitions_a_member_no_longer_holds() -> None:
    registry = CollectorRegistry()
    lag = Gauge("unit_lag", "lag", ["group", "topic", "partition"], registry=registry)
    report = LagGauge(lag)
    report("g", {("t", 0): 5, ("t", 1): 7})
    report("h", {("t", 0): 1})
    report("g", {("t", 1): 2})  # a rebalance took partition 0 away
    samples = {
        (s.labels["group"], s.labels["partition"]): s.value
        for metric in registry.collect()
        for s in metric.samples
    }
    assert samples == {("g", "1"): 2, ("h", "0"): 1}


def test_build_info_carries_the_version_and_the_commit_from_the_environment(
    monkeypatch,
) -> None:
    monkeypatch.setenv(BUILD_COMMIT_ENV, "0123abc")
    build_info("unit_build")
    value = DEFAULT_REGISTRY.get_sample_value(
        "tenure_unit_build_build_info", {"version": "0.1.0", "commit": "0123abc"}
    )
    assert value == 1


async def test_a_dead_letter_is_reported_with_its_topic_once_published() -> None:
    publisher = FakePublisher()
    counted: list[str] = []
    letters = DeadLetters(publisher, consumer_name="unit", on_sent=counted.append)
    record = Record(
        topic=TOPIC, partition=0, offset=7, key="k", value=b"{", headers=(), timestamp_ms=0
    )
    await letters.send(record, ValueError("not JSON"))
    assert [r.topic for r in publisher.records] == [f"{TOPIC}.dlq"]
    assert counted == [TOPIC]
