"""The test harness: one real Kafka broker, one embedded PostgreSQL and the sinks per session.

Started with the same code as ``make run`` (``devstack.stack.Stack``), on free ports
under a temporary folder, and stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import CommonSettings
from devstack.stack import REPO, Ports, Stack
from tests.secure_kafka import SecureKafka

E2E_TIME_SCALE = 14_400.0  # one simulated day every 6 real seconds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    # Not under pytest's tmp_path: pytest resets /tmp/pytest-of-<user> to mode 0700 at
    # every session start, which locks PostgreSQL's own user (pgserver) out of a data
    # directory another session is using; a folder of its own avoids that.
    root = Path(tempfile.mkdtemp(prefix="tenure-test-stack-"))
    st = Stack(
        root=root,
        ports=Ports.free(),
        time_scale=E2E_TIME_SCALE,
        topic_prefix="test.",
        kafka_libs=REPO / ".stack" / "kafka" / "libs",
    )
    try:
        st.start_infra()
        yield st
    finally:
        st.stop()
        if request.session.testsfailed:
            print(f"\nthe stack's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def common_settings(stack: Stack) -> CommonSettings:
    return stack.common_settings()


@pytest.fixture(scope="session")
def secure_kafka(request: pytest.FixtureRequest) -> Iterator[SecureKafka]:
    """A broker of its own with SSL (mutual TLS), SASL_SSL and SASL_PLAINTEXT
    (SCRAM-SHA-512) listeners, its certificates from a CA made for the session
    (tests/secure_kafka.py)."""
    root = Path(tempfile.mkdtemp(prefix="tenure-test-tls-"))
    broker = SecureKafka.start(root, REPO / ".stack" / "kafka" / "libs")
    try:
        yield broker
    finally:
        broker.stop()
        if request.session.testsfailed:
            print(f"\nthe TLS broker's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
