"""A cluster of three Kafka brokers for the fault tests of this folder (marker ``cluster``,
run by ``make test-cluster``), started once for the session and shared: each test has
topics of its own, and restarts the node it killed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.cluster import KafkaCluster
from devstack.stack import REPO, Stack
from tests.cluster.harness import services_on


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    root = Path(tempfile.mkdtemp(prefix="tenure-test-cluster-"))
    kafka = KafkaCluster(libs=REPO / ".stack" / "kafka" / "libs", home=root)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop(kill=True)  # the data is thrown away: no controlled shutdown needed
        if request.session.testsfailed:
            print(f"\nthe cluster's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def services(cluster: KafkaCluster, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """One copy of each service on the cluster, with a PostgreSQL of their own."""
    with services_on(cluster, prefix="closs", failed=lambda: request.session.testsfailed) as (
        st,
        _,
    ):
        yield st
