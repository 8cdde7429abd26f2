"""Each service's PostgreSQL pool size is its own setting, and the engine gets it."""

from __future__ import annotations

import pytest

from ingest.settings import IngestSettings
from notifier.bootstrap import stores
from notifier.settings import NotifierSettings
from orchestrator.settings import OrchestratorSettings
from tests.unit.notifier.test_settings import REQUIRED

WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZg=="  # 16 bytes


def notifier() -> NotifierSettings:
    return NotifierSettings(webhook_secret=WEBHOOK_SECRET, **REQUIRED)


def test_each_service_reads_its_own_pool_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert IngestSettings().database_pool_size == 2  # API keys only, cached
    assert OrchestratorSettings().database_pool_size == 10
    assert notifier().database_pool_size == 10
    monkeypatch.setenv("TENURE_ORCHESTRATOR_DATABASE_POOL_SIZE", "25")
    monkeypatch.setenv("TENURE_INGEST_DATABASE_POOL_SIZE", "1")
    assert OrchestratorSettings().database_pool_size == 25
    assert IngestSettings().database_pool_size == 1
    assert notifier().database_pool_size == 10


def test_the_pool_size_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_NOTIFIER_DATABASE_POOL_SIZE", "3")
    engine = stores(notifier()).engine  # nothing connects until it is used
    assert engine.pool.size() == 3


def test_a_pool_size_of_zero_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENURE_NOTIFIER_DATABASE_POOL_SIZE", "0")
    with pytest.raises(ValueError, match="database_pool_size"):
        notifier()
