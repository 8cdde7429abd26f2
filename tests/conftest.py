"""The test harness: one real Kafka broker, one embedded PostgreSQL and the sinks per session.

Started with the same code as ``make run`` (``devstack.stack.Stack``), on free ports
under a temporary folder, and stopped at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import CommonSettings
from devstack.stack import REPO, Ports, Stack

E2E_TIME_SCALE = 14_400.0  # one simulated day every 6 real seconds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
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


@pytest.fixture(scope="session")
def common_settings(stack: Stack) -> CommonSettings:
    return stack.common_settings()
