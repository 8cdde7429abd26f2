"""A cluster of Kafka brokers on 127.0.0.1 for the fault tests: three combined
broker+controller nodes in KRaft mode with a three-voter quorum, run from the jars
`make kafka` fetched, each node killable and restartable on its own."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.kafka.replicas import NO_LEADER, describe_partitions, live_brokers
from common.settings import CommonSettings
from devstack.kafka import KafkaBroker
from devstack.procs import free_port

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's storage tool makes one (``random-uuid``), without
    starting a JVM: 16 random bytes in URL-safe base64 without padding, not led by '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def cluster_overrides(replication_factor: int, min_insync: int) -> tuple[str, ...]:
    """Broker settings of a replicated cluster: Kafka's internal topics (the consumer
    groups' offsets, the transactions' state) and topics created without a replication
    factor (auto-created ones) get ``replication_factor`` replicas, and a write with
    ``acks=all`` needs ``min_insync`` of them. (faust creates its changelogs with its own
    ``TOPIC_REPLICATION_FACTOR``, 1 unless set.)"""
    return (
        f"default.replication.factor={replication_factor}",
        f"min.insync.replicas={min_insync}",
        f"offsets.topic.replication.factor={replication_factor}",
        f"transaction.state.log.replication.factor={replication_factor}",
        f"transaction.state.log.min.isr={min_insync}",
    )


@dataclass
class KafkaCluster:
    """``size`` nodes (ids 1..size), all voters of the controller quorum, all brokers.

    The nodes are made on free ports under ``home``; :meth:`start` formats them with one
    cluster id and starts them together. Kafka's own failure detection is left at its
    defaults (``broker.session.timeout.ms`` 9 s), so a killed leader is replaced in the
    time a production cluster would take.
    """

    libs: Path
    home: Path
    size: int = 3
    heap: str = "256m"
    replication_factor: int = REPLICATION_FACTOR
    min_insync: int = MIN_INSYNC_REPLICAS
    nodes: dict[int, KafkaBroker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nodes:
            return
        ports = _free_ports(2 * self.size)
        ids = range(1, self.size + 1)
        voters = ",".join(f"{n}@127.0.0.1:{ports[2 * (n - 1) + 1]}" for n in ids)
        replication = cluster_overrides(self.replication_factor, self.min_insync)
        for n in ids:
            self.nodes[n] = KafkaBroker(
                libs=self.libs,
                home=self.home / f"node{n}",
                port=ports[2 * (n - 1)],
                controller_port=ports[2 * (n - 1) + 1],
                heap=self.heap,
                overrides=(f"node.id={n}", f"controller.quorum.voters={voters}", *replication),
            )

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client finds the cluster through any one alive."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def settings(self, topic_prefix: str, *, partitions: int = 3) -> CommonSettings:
        """Settings for this cluster: its topics replicated on every node, this many in sync."""
        return CommonSettings(
            kafka_bootstrap=self.bootstrap,
            topic_prefix=topic_prefix,
            topic_partitions=partitions,
            topic_replication_factor=self.replication_factor,
            topic_min_insync_replicas=self.min_insync,
        )

    def start(self, *, timeout: float = 180.0) -> None:
        """Format the nodes (once, one cluster id) and start them all; blocks until each
        listens. Brokers register with the controllers after that: see
        :meth:`wait_for_brokers`."""
        cluster_id = new_cluster_id()
        for node in self.nodes.values():
            node.format_for(cluster_id)
        # Together: a node's broker listens only once the controllers have a quorum. Not
        # from threads of a pool: a node gets SIGTERM when the thread that started it
        # ends (PR_SET_PDEATHSIG, devstack.procs).
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_until_listening(timeout=timeout)

    def stop(self, *, kill: bool = False) -> None:
        """Stop every node, all at once (one by one, the last ones wait for a quorum
        that is gone before giving up their controlled shutdown)."""
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            for node in self.nodes.values():
                pool.submit(node.stop, kill=kill)

    def running(self) -> list[int]:
        """The ids of the nodes whose process is alive."""
        return [n for n, node in self.nodes.items() if node.proc and node.proc.poll() is None]

    def kill(self, node_id: int) -> None:
        """SIGKILL the node: no controlled shutdown, no leadership handed over."""
        self.nodes[node_id].stop(kill=True)

    def restart(self, node_id: int, *, timeout: float = 180.0) -> None:
        """Start a stopped node again on its ports and data; blocks until it listens.
        Call it from a thread that outlives the node (the node dies with it)."""
        self.nodes[node_id].launch()
        self.nodes[node_id].wait_until_listening(timeout=timeout)

    async def wait_for_brokers(self, settings: CommonSettings, *, timeout: float = 90.0) -> None:
        """Wait until every running node is registered as a broker in the metadata."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if set(self.running()) <= await live_brokers(settings):
                    return
            except Exception:  # no broker answers yet: ask again
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every node of {self.running()} registered in time")
            await asyncio.sleep(0.5)

    async def leader_of(self, settings: CommonSettings, topic: str, partition: int) -> int:
        """The node leading ``partition`` of ``topic`` now (``NO_LEADER`` if none)."""
        return (await describe_partitions(settings, topic))[partition].leader

    async def wait_for_leader(
        self,
        settings: CommonSettings,
        topic: str,
        partition: int,
        *,
        not_on: int | None = None,
        timeout: float = 60.0,
    ) -> int:
        """Wait until ``partition`` of ``topic`` has a leader other than ``not_on``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = await self.leader_of(settings, topic, partition)
                if leader not in (NO_LEADER, not_on):
                    return leader
            except Exception:  # metadata not answered yet: ask again
                leader = NO_LEADER
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}] has no new leader ({leader})")
            await asyncio.sleep(0.25)

    async def wait_in_sync(
        self, settings: CommonSettings, topics: Iterable[str], *, timeout: float = 90.0
    ) -> None:
        """Wait until every partition of ``topics`` has a leader and all its replicas in
        sync (after :meth:`start`, or a node's :meth:`restart`), in two rounds of answers
        in a row: the brokers learn of new topics one after the other."""
        deadline = time.monotonic() + timeout
        names = list(topics)
        rounds = 0
        while rounds < 2:
            try:
                for name in names:
                    described = await describe_partitions(settings, name)
                    if not described or not all(
                        p.leader != NO_LEADER and set(p.in_sync) == set(p.replicas)
                        for p in described.values()
                    ):
                        raise LookupError(name)
                rounds += 1
            except Exception:  # not created, not in sync, not answered yet
                rounds = 0
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{names} not fully in sync in {timeout:.0f} s") from None
            await asyncio.sleep(0.5)
