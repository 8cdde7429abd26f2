"""The ingest API's contract with a fake publisher: status codes, errors that name the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from common.events import EXAMPLES
from common.kafka import FakePublisher, PublishError
from ingest.app import create_app
from ingest.settings import IngestSettings

KEY = "test-key"


class FailingPublisher(FakePublisher):
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise PublishError("broker down")


def client(publisher: FakePublisher, **settings: Any) -> httpx.AsyncClient:
    app = create_app(IngestSettings(api_key=KEY, **settings), publisher=publisher)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


async def post(c: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await c.post("/v1/events", json=body, headers={"X-API-Key": KEY, **headers})


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
async def test_accepted_event_is_published_keyed_by_customer(kind: str) -> None:
    publisher = FakePublisher()
    async with client(publisher) as c:
        response = await post(c, EXAMPLES[kind])
    assert response.status_code == 202
    assert response.json() == {"event_id": EXAMPLES[kind]["event_id"], "status": "accepted"}
    [record] = publisher.records
    assert record.topic == f"tenure.events.{kind}"
    assert record.key == "acme-42"
    headers = dict(record.headers)
    assert headers["kind"] == kind.encode() and headers["schema_version"] == b"1"
    assert headers["api_key_id"] == b"default"
    assert headers["ingested_at"].startswith(b"20")


async def test_bearer_token_is_accepted_and_bad_keys_get_401() -> None:
    publisher = FakePublisher()
    async with client(publisher) as c:
        ok = await c.post(
            "/v1/events", json=EXAMPLES["usage"], headers={"Authorization": f"Bearer {KEY}"}
        )
        missing = await c.post("/v1/events", json=EXAMPLES["usage"])
        wrong = await post(c, EXAMPLES["usage"], **{"X-API-Key": "nope"})
    assert ok.status_code == 202
    assert missing.status_code == wrong.status_code == 401
    assert len(publisher.records) == 1


async def test_validation_error_names_field_and_rule_and_publishes_nothing() -> None:
    publisher = FakePublisher()
    async with client(publisher) as c:
        response = await post(c, {**EXAMPLES["support"], "score": 42})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "score",
            "rule": "less_than_equal",
            "message": "Input should be less than or equal to 10",
        }
    ]
    assert publisher.records == []


async def test_unknown_kind_lists_the_accepted_kinds() -> None:
    async with client(FakePublisher()) as c:
        response = await post(c, {**EXAMPLES["usage"], "kind": "telepathy"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("kind", "union_tag_invalid")
    assert all(k in error["message"] for k in EXAMPLES)


async def test_wrong_content_type_is_415_and_oversized_is_413() -> None:
    async with client(FakePublisher(), max_body_bytes=2048) as c:
        text = await c.post(
            "/v1/events",
            content=b"event_id=1",
            headers={"X-API-Key": KEY, "Content-Type": "text/plain"},
        )
        big = await post(c, {**EXAMPLES["support"], "text": "x" * 4000})
    assert text.status_code == 415
    assert big.status_code == 413


async def test_malformed_json_is_422_not_500() -> None:
    async with client(FakePublisher()) as c:
        response = await c.post(
            "/v1/events",
            content=b"{nope",
            headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        )
        empty = await post(c, {"kind": "usage"})
    assert response.status_code == 422
    assert [e["field"] for e in empty.json()["errors"]] == [
        "event_id",
        "customer_id",
        "occurred_at",
        "type",
    ]


async def test_unavailable_broker_is_503_with_retry_after() -> None:
    async with client(FailingPublisher()) as c:
        response = await post(c, EXAMPLES["login"])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


async def test_openapi_has_an_example_of_every_kind() -> None:
    async with client(FakePublisher()) as c:
        spec = (await c.get("/openapi.json")).json()
    examples = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    assert set(examples) == set(EXAMPLES)


async def test_metrics_label_routes_not_raw_paths() -> None:
    async with client(FakePublisher()) as c:
        await c.get("/no/such/path/42")
        await post(c, EXAMPLES["usage"])
        text = (await c.get("/metrics")).text
    assert 'route="unmatched"' in text
    assert 'route="/v1/events"' in text
    assert "/no/such/path/42" not in text
