"""Losing a broker of three under the consumers: scoring, the orchestrator and the notifier
ride out the SIGKILL of a partition leader; journeys continue, nothing is sent twice.

The four services run as processes (as in tests/e2e) on the three-broker cluster, with a
PostgreSQL of their own, every topic at replication 3 and ``min.insync.replicas`` 2
(faust's own topics too, from ``TENURE_TOPIC_REPLICATION_FACTOR``). Customers whose churn
probability passes 0.70 start retention_offer journeys: offer email (+0), CSM call
webhook (+1 d), escalation webhook (+3 d). Once the first offers are out, the node
leading a partition of the signals topic (scoring's output, the orchestrator's input) is
killed with SIGKILL while more customers arrive; no process is restarted. Afterwards every
journey has sent each of its three messages exactly once (counted at the SMTP sink and the
webhook receiver by notification id) and no process exited.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.kafka import ensure_topics
from common.kafka.replicas import describe_partitions
from common.topics import Topic, dlq_name, topic_name
from devstack.cluster import KafkaCluster
from devstack.postgres import EmbeddedPostgres
from devstack.stack import SERVICES, Ports, Stack
from orchestrator.domain import decisions
from scoring.adapters.faust_app import STATES_TABLE
from tests.e2e.journeys import fast_env, identify, new_customer
from tests.e2e.test_database_outage import SCALE, STEPS, alive, journeys_of, sent

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

BEFORE = 4  # customers whose journeys are under way when the broker dies
DURING = 6  # customers whose events arrive just after
JOURNEYS_BOUND_S = 120.0
CHANGELOG = f"tenure-scoring-{STATES_TABLE}-changelog"  # faust: <app id>-<table>-changelog


@pytest.fixture()
def services(cluster: KafkaCluster, request: pytest.FixtureRequest) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="tenure-test-cluster-services-"))
    pg = EmbeddedPostgres(root / "pg")
    url = pg.start()
    st = Stack(
        root=root,
        ports=Ports.free(),
        time_scale=SCALE,
        topic_prefix=f"closs{uuid.uuid4().hex[:4]}.",
        database_url=url,
        _kafka=cluster,  # type: ignore[arg-type]  # the stack reads its bootstrap only
    )
    try:
        for folder in (st.mail_dir, st.webhook_dir, st.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        st.start_postgres()  # migrations only: the server is ours
        create_topics(cluster, st)
        st.start_sinks()
        replication = {
            "TENURE_TOPIC_REPLICATION_FACTOR": str(cluster.replication_factor),
            "TENURE_TOPIC_MIN_INSYNC_REPLICAS": str(cluster.min_insync),
        }
        for name in SERVICES:
            st.start_service(name, {**fast_env(SCALE), **replication})
        st.wait_ready(timeout=120)
        yield st
    finally:
        for name in reversed(list(st.procs)):
            st.stop_service(name)
        pg.stop()
        if request.session.testsfailed:
            print(f"\nthe test's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


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


def churning(st: Stack, customer: str) -> int:
    """What makes a customer's churn probability pass 0.70; the 503s on the way."""
    return sum(
        post_until_accepted(st, customer, kind, type_, **fields)
        for kind, type_, fields in (
            ("support", "ticket_opened", {"ticket_id": "t1", "sentiment": 0.1}),
            ("intent", "competitor_trial", {"source": "g2"}),
            ("intent", "alternative_search", {"source": "google"}),
        )
    )


def test_journeys_continue_and_nothing_is_sent_twice_after_a_leader_is_killed(
    cluster: KafkaCluster, services: Stack
) -> None:
    st = services
    common = st.common_settings()
    before = [new_customer("loss-a") for _ in range(BEFORE)]
    during = [new_customer("loss-b") for _ in range(DURING)]
    for customer in before + during:
        identify(st, SCALE, customer, plan="pro")
    time.sleep(2)  # the profiles are projected before the churn signals arrive
    for customer in before:
        churning(st, customer)
    deadline = time.monotonic() + 60
    while sum(1 for (_, ch) in sent(st) if ch == "email") < BEFORE // 2:
        assert time.monotonic() < deadline, f"no offers sent; logs in {st.log_dir}"
        time.sleep(0.2)

    signals = topic_name(Topic.SIGNALS, st.topic_prefix)
    victim = asyncio.run(cluster.leader_of(common, signals, 0))
    cluster.kill(victim)
    killed_at = time.monotonic()
    refused = sum(churning(st, customer) for customer in during)
    arrived_s = time.monotonic() - killed_at

    customers = before + during
    while True:
        alive(st)
        journeys = journeys_of(st, customers)
        expected = {
            (decisions.notification_id(journey, step), channel)
            for journey in journeys.values()
            for step, channel in STEPS.items()
        }
        if len(journeys) == len(customers) and expected <= set(sent(st)):
            break
        assert time.monotonic() - killed_at < JOURNEYS_BOUND_S, (
            f"{len(journeys)} of {len(customers)} journeys, "
            f"{len(expected & set(sent(st)))} of {len(expected)} messages, missing "
            f"{sorted(expected - set(sent(st)))}; logs in {st.log_dir}"
        )
        time.sleep(0.5)
    done_s = time.monotonic() - killed_at
    time.sleep(3)  # a duplicate would come now, if at all
    counts = sent(st)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    print(
        f"\nkilled node {victim} (leader of {signals}[0]); {DURING} customers' events in "
        f"{arrived_s:.1f} s after it ({refused} answers 503 on the way); all "
        f"{len(customers)} journeys' {len(expected)} messages out {done_s:.1f} s after the "
        f"kill; messages at the sinks {sum(counts.values())}, distinct {len(counts)}, "
        f"duplicated {len(duplicates)}"
    )
    assert not duplicates, duplicates
    alive(st)
    cluster.restart(victim)
    # faust made its changelogs with TENURE_TOPIC_REPLICATION_FACTOR replicas: a write to them
    # with acks=all needs 2 of them (the cluster's min.insync.replicas).
    changelog = asyncio.run(describe_partitions(common, CHANGELOG))
    assert {len(p.replicas) for p in changelog.values()} == {cluster.replication_factor}
