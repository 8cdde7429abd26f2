"""Keys made with `tenure keys` work at ingest, stop working after revocation, never get logged."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from common.apikeys import KeyRepository, generate
from common.db import create_engine
from common.events import EXAMPLES
from common.kafka import KafkaPublisher, ensure_topics
from common.settings import CommonSettings
from common.topics import Topic
from devstack.stack import Stack
from ingest.app import create_app
from ingest.settings import IngestSettings


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_ingest_keys")


async def test_created_key_works_and_revocation_takes_effect(
    database_url: str, common_settings: CommonSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    common = common_settings.model_copy(
        update={  # real time: the session's scaled clock would age the example dates
            "database_url": database_url,
            "topic_prefix": f"it-keys-{uuid.uuid4().hex[:6]}.",
            "time_scale": 1.0,
            "clock_epoch": None,
        }
    )
    await ensure_topics(common, Topic.events())
    engine = create_engine(database_url)
    repository = KeyRepository(engine)
    writer_key, writer = generate("backend", ["events:write"])
    reader_key, reader = generate("dashboard", ["operator:read"])
    await repository.create(writer)
    await repository.create(reader)

    settings = IngestSettings(common=common, keys_refresh_s=1)
    async with KafkaPublisher(common, client_id="it-keys") as publisher:
        app = create_app(settings, publisher=publisher)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ingest"
            ) as client,
        ):

            async def post(key: str) -> int:
                event = {
                    **EXAMPLES["usage"],
                    "event_id": str(uuid.uuid4()),
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                response = await client.post(
                    "/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}
                )
                return response.status_code

            assert await post(writer_key) == 202
            assert await post(reader_key) == 403
            assert await post(writer_key[:-2] + "xx") == 401
            assert await repository.revoke(writer.id)
            statuses = []
            for _ in range(30):
                statuses.append(await post(writer_key))
                if statuses[-1] == 401:
                    break
                await asyncio.sleep(0.2)
            assert statuses[-1] == 401, statuses
    await engine.dispose()
    logged = caplog.text
    for secret in (writer_key, reader_key, writer_key.split("_", 2)[2]):
        assert secret not in logged
