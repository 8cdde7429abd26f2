"""What each service's API exposes besides its routes (issue 13, item 17): documentation
that can be switched off, and /metrics that can move to a listener of its own."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from common.clock import FakeClock
from common.kafka import FakePublisher
from ingest.api import create_app
from ingest.settings import IngestSettings
from notifier.entrypoints.api import create_api as notifier_api
from notifier.settings import NotifierSettings
from orchestrator.entrypoints.api import create_api as orchestrator_api
from orchestrator.settings import OrchestratorSettings

DOCS = ("/docs", "/redoc", "/openapi.json")


def apps(**over: Any) -> dict[str, FastAPI]:
    notifier = NotifierSettings(
        public_url="https://notifier.example",
        link_secret="s",
        webhook_secret="whsec_" + "A" * 32,
        webhook_csm_url="http://127.0.0.1:9/csm",
        webhook_escalation_url="http://127.0.0.1:9/escalation",
        **over,
    )
    return {
        "ingest": create_app(IngestSettings(**over), publisher=FakePublisher()),
        "orchestrator": orchestrator_api(settings=OrchestratorSettings(**over)),
        "notifier": notifier_api(notifier, FakePublisher(), FakeClock()),
    }


async def statuses(app: FastAPI, paths: tuple[str, ...]) -> dict[str, int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return {path: (await client.get(path)).status_code for path in paths}


@pytest.mark.parametrize("name", ["ingest", "orchestrator", "notifier"])
async def test_documentation_is_served_by_default_and_can_be_switched_off(name: str) -> None:
    assert set((await statuses(apps()[name], DOCS)).values()) == {200}
    assert set((await statuses(apps(docs=False)[name], DOCS)).values()) == {404}


@pytest.mark.parametrize("name", ["ingest", "orchestrator", "notifier"])
async def test_metrics_leave_the_api_port_when_they_have_one_of_their_own(name: str) -> None:
    assert await statuses(apps()[name], ("/metrics", "/healthz")) == {
        "/metrics": 200,
        "/healthz": 200,
    }
    moved = apps(metrics_port=9464)[name]
    assert await statuses(moved, ("/metrics", "/healthz")) == {"/metrics": 404, "/healthz": 200}


def test_the_metrics_listener_binds_the_api_host_unless_told_otherwise() -> None:
    assert IngestSettings(host="10.0.0.5").served_metrics_host == "10.0.0.5"
    assert IngestSettings(host="0.0.0.0", metrics_host="10.1.2.3").served_metrics_host == (
        "10.1.2.3"
    )
