"""The ingest API on the real broker: 202 means the record is in Kafka, keyed and labelled."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from prometheus_client import REGISTRY

from common.events import EXAMPLES
from common.kafka import Record, ensure_topics, read_topic
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from ingest.api import create_app
from ingest.bootstrap import make_publisher
from ingest.settings import IngestSettings


def transaction_events() -> float:
    """Events counted by ingest's transaction metrics so far (this test process)."""
    return REGISTRY.get_sample_value("tenure_ingest_transaction_events_sum") or 0.0


async def test_every_202_can_be_read_back_with_key_and_headers(
    common_settings: CommonSettings,
) -> None:
    common = common_settings.model_copy(
        # real time: the session's scaled clock would make the fixed example dates too old
        update={
            "topic_prefix": f"it-ingest-{uuid.uuid4().hex[:6]}.",
            "time_scale": 1.0,
            "clock_epoch": None,
        }
    )
    await ensure_topics(common)
    sent: dict[str, dict[str, object]] = {}
    # The publisher ingest builds for itself: group commit in transactions.
    settings = IngestSettings(common=common, api_key="k")
    publisher = make_publisher(settings, transactional_id=f"it-ingest-{uuid.uuid4().hex[:6]}")
    events_before = transaction_events()
    async with publisher:
        app = create_app(settings, publisher=publisher)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        ) as c:
            for i, kind in enumerate(sorted(EXAMPLES) * 5):
                event = {
                    **EXAMPLES[kind],
                    "event_id": f"it-{i}",
                    "customer_id": f"cust-{i % 7}",
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                response = await c.post("/v1/events", json=event, headers={"X-API-Key": "k"})
                assert response.status_code == 202
                sent[event["event_id"]] = event  # type: ignore[index]
            rejected = await c.post(
                "/v1/events", json={**EXAMPLES["usage"], "quantity": -1}, headers={"X-API-Key": "k"}
            )
            assert rejected.status_code == 422
    # every accepted event went through a committed transaction, and the metrics saw it
    assert set(publisher.outcomes) == {"committed"}
    assert transaction_events() - events_before == len(sent)
    topics = [topic_name(t, common.topic_prefix) for t in Topic.events()]
    got: list[Record] = []
    for topic in topics:
        got += (await read_topic(common, topic, timeout_s=30))[0]
    assert len(got) == len(sent)  # nothing more: the 422 wrote nothing
    partitions: dict[str, set[int]] = {}
    for record in got:
        headers = dict(record.headers)
        kind = headers["kind"].decode()
        event_id = httpx.Response(200, content=record.value).json()["event_id"]
        original = sent[event_id]
        assert record.topic == topic_name(Topic(f"events.{kind}"), common.topic_prefix)
        assert record.key == original["customer_id"]
        assert headers["schema_version"] == b"1" and headers["api_key_id"] == b"static"
        partitions.setdefault(record.key, set()).add(record.partition)
    # Same key → same partition within each topic; across topics partition counts are equal.
    assert all(len(p) == 1 for p in partitions.values())
