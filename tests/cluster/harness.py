"""What the process-level tests of this folder share: the four services (one copy of each,
or more) on the three-broker cluster with a PostgreSQL of their own, and the ingest calls
that make customers churn while brokers or processes die."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from common.kafka import ensure_topics
from common.topics import Topic, dlq_name, topic_name
from devstack.cluster import KafkaCluster
from devstack.postgres import EmbeddedPostgres
from devstack.stack import SERVICES, Ports, Stack
from tests.e2e.journeys import fast_env
from tests.e2e.test_database_outage import SCALE


@contextlib.contextmanager
def services_on(
    cluster: KafkaCluster,
    *,
    prefix: str,
    replicas: int = 1,
    extra_env: dict[str, str] | None = None,
    failed: Any = lambda: False,
) -> Iterator[tuple[Stack, EmbeddedPostgres]]:
    """``replicas`` copies of each service (processes ``ingest``, ``ingest-1``, ...) on
    ``cluster`` at ``SCALE``, with a PostgreSQL of their own, every topic replicated as
    the cluster says; the stack and its PostgreSQL. The folder is kept if ``failed()``."""
    root = Path(tempfile.mkdtemp(prefix=f"tenure-test-{prefix.strip('.')}-"))
    pg = EmbeddedPostgres(root / "pg")
    url = pg.start()
    st = Stack(
        root=root,
        ports=Ports.free(),
        time_scale=SCALE,
        topic_prefix=f"{prefix}{uuid.uuid4().hex[:4]}.",
        database_url=url,
        _kafka=cluster,  # a KafkaBroker in all but name: the stack reads its bootstrap only
    )
    try:
        for folder in (st.mail_dir, st.webhook_dir, st.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        st.start_postgres()  # migrations only: the server is ours
        create_topics(cluster, st)
        st.start_sinks()
        env = {**fast_env(SCALE), **replication_env(cluster), **(extra_env or {})}
        for replica in range(replicas):
            for name in SERVICES:
                st.start_service(name, env, replica=replica)
        st.wait_ready(timeout=180)
        yield st, pg
    finally:
        for name in reversed(list(st.procs)):
            st.stop_service(name)
        pg.stop()
        if failed():
            print(f"\nthe test's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def replication_env(cluster: KafkaCluster) -> dict[str, str]:
    """The services' topic settings for ``cluster`` (faust's own topics follow them)."""
    return {
        "TENURE_TOPIC_REPLICATION_FACTOR": str(cluster.replication_factor),
        "TENURE_TOPIC_MIN_INSYNC_REPLICAS": str(cluster.min_insync),
    }


def create_topics(cluster: KafkaCluster, st: Stack) -> None:
    """Every topic and its dead-letter topic, replicated (scores compacted)."""
    common = cluster.settings(st.topic_prefix)
    names = [topic_name(t, st.topic_prefix) for t in Topic]

    async def create() -> None:
        await ensure_topics(common)
        await cluster.wait_in_sync(common, [*names, *map(dlq_name, names)])

    asyncio.run(create())


def post_until_accepted(st: Stack, customer: str, kind: str, type_: str, **fields: Any) -> int:
    """Post one event (the same event id each time) until ingest answers 202; how many
    503s it took. Ingest answers 503 while Kafka has no leader for a partition."""
    event = {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "kind": kind,
        "type": type_,
        **fields,
    }
    refused = 0
    deadline = time.monotonic() + 60
    while True:
        event["occurred_at"] = st.clock().now().isoformat()
        response = httpx.post(
            f"http://127.0.0.1:{st.ports.ingest}/v1/events",
            json=event,
            headers={"X-API-Key": st.api_key},
            timeout=15,
        )
        if response.status_code == 202:
            return refused
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "ingest refused an event for 60 s"
        refused += 1
        time.sleep(0.5)


# What makes a customer's churn probability pass 0.70 (retention_offer starts).
CHURN_EVENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("support", "ticket_opened", {"ticket_id": "t1", "sentiment": 0.1}),
    ("intent", "competitor_trial", {"source": "g2"}),
    ("intent", "alternative_search", {"source": "google"}),
)


def churning(st: Stack, customer: str) -> int:
    """Make ``customer`` churn; the 503s on the way."""
    return sum(
        post_until_accepted(st, customer, kind, type_, **fields)
        for kind, type_, fields in CHURN_EVENTS
    )


class Attempt(Protocol):
    """A request the client made: its answer (0: none) and when it started and ended."""

    status: int
    started: float
    ended: float


def longest_unavailability(answers: Iterable[Attempt]) -> tuple[int, float]:
    """The longest run of consecutive non-202 answers (in the order they were answered):
    how many, and the seconds from the start of its first request to its last answer."""
    longest: tuple[int, float] = (0, 0.0)
    run: list[Attempt] = []
    for answer in sorted(answers, key=lambda a: a.ended):
        if answer.status == 202:
            run = []
            continue
        run.append(answer)
        span = (len(run), run[-1].ended - min(a.started for a in run))
        longest = max(longest, span, key=lambda s: s[1])
    return longest
