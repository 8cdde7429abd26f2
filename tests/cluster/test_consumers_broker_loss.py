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
import time

import pytest

from common.kafka.replicas import describe_partitions, topic_overrides
from common.topics import Topic, topic_name
from devstack.cluster import KafkaCluster
from devstack.stack import Stack
from orchestrator.domain import decisions
from scoring.adapters.faust_app import STATES_TABLE
from tests.cluster.harness import churning
from tests.e2e.journeys import identify, new_customer
from tests.e2e.test_database_outage import SCALE, STEPS, alive, journeys_of, sent

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

BEFORE = 4  # customers whose journeys are under way when the broker dies
DURING = 6  # customers whose events arrive just after
JOURNEYS_BOUND_S = 120.0
CHANGELOG = f"tenure-scoring-{STATES_TABLE}-changelog"  # faust: <app id>-<table>-changelog


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
            f"{sorted(expected - set(sent(st)))}, no journey for "
            f"{[c for c in customers if c not in journeys]}; logs in {st.log_dir}"
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
    # and its min.insync.replicas is set on the topic from TENURE_TOPIC_MIN_INSYNC_REPLICAS
    # (not only inherited from this cluster's broker default)
    overrides = asyncio.run(topic_overrides(common, CHANGELOG))
    assert overrides.get("min.insync.replicas") == str(cluster.min_insync), overrides
