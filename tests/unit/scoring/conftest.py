"""Settings of a scoring app for unit tests: RocksDB in a temporary folder, no broker reachable."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from common.settings import CommonSettings
from scoring.settings import ScoringSettings


@pytest.fixture
def unit_settings(tmp_path: Path) -> ScoringSettings:
    return ScoringSettings(
        app_id=f"test-scoring-{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        read_committed=False,
        common=CommonSettings(topic_prefix="t.", kafka_bootstrap="127.0.0.1:1"),
    )
