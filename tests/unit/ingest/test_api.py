"""The ingest API's contract on a fake publisher and fake keys: codes, errors, limits."""

from __future__ import annotations

import gc
import inspect
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request

from common.apikeys import ApiKey, FakeAuthenticator, Scope
from common.clock import FakeClock
from common.events import EXAMPLES, REDEMPTION_EXAMPLE
from common.kafka import FakePublisher, OutgoingRecord, PublishError
from ingest.api import create_app, routes
from ingest.settings import IngestSettings

KEY = "writer-key"
READER = "reader-key"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # EXAMPLES are stamped 2026-11-20T10:15Z
KEYS = {
    KEY: ApiKey.static("key-w", [Scope.EVENTS_WRITE]),
    READER: ApiKey.static("key-r", [Scope.OPERATOR_READ]),
}


class FailingPublisher(FakePublisher):
    """Acknowledges nothing: as if the broker were down."""

    async def publish_each(self, records: Any, *, timeout_s: float) -> list[PublishError | None]:
        return [PublishError("broker down") for _ in records]


class HalfPublisher(FakePublisher):
    """Acknowledges every other record."""

    async def publish_each(
        self, records: list[OutgoingRecord], *, timeout_s: float
    ) -> list[PublishError | None]:
        return [None if i % 2 == 0 else PublishError("lost") for i, _ in enumerate(records)]


def client(publisher: FakePublisher | None = None, **settings: Any) -> httpx.AsyncClient:
    app = create_app(
        IngestSettings(keys_from_database=False, **settings),
        publisher=publisher if publisher is not None else FakePublisher(),
        authenticator=FakeAuthenticator(KEYS),
        clock=FakeClock(NOW),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


async def post(
    c: httpx.AsyncClient, body: Any, path: str = "/v1/events", **headers: str
) -> httpx.Response:
    return await c.post(path, json=body, headers={"X-API-Key": KEY, **headers})


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
    assert headers["api_key_id"] == b"key-w"
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
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert len(publisher.records) == 1


async def test_key_without_the_scope_gets_403() -> None:
    publisher = FakePublisher()
    async with client(publisher) as c:
        response = await post(c, EXAMPLES["usage"], **{"X-API-Key": READER})
    assert response.status_code == 403
    assert "events:write" in response.json()["error"]
    assert publisher.records == []


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


async def test_unknown_kind_and_type_list_the_accepted_values() -> None:
    async with client() as c:
        kind = await post(c, {**EXAMPLES["usage"], "kind": "telepathy"})
        type_ = await post(c, {**EXAMPLES["login"], "type": "logout"})
    [error] = kind.json()["errors"]
    assert (error["field"], error["rule"]) == ("kind", "union_tag_invalid")
    assert all(k in error["message"] for k in EXAMPLES)
    [error] = type_.json()["errors"]
    assert error["field"] == "type" and "'login'" in error["message"]
    assert "'session_started'" in error["message"]


@pytest.mark.parametrize(
    ("occurred_at", "rule"),
    [(NOW + timedelta(minutes=6), "too_far_in_future"), (NOW - timedelta(days=31), "too_old")],
)
async def test_event_time_window(occurred_at: datetime, rule: str) -> None:
    async with client() as c:
        response = await post(c, {**EXAMPLES["usage"], "occurred_at": occurred_at.isoformat()})
        skewed = await post(
            c, {**EXAMPLES["usage"], "occurred_at": (NOW + timedelta(minutes=4)).isoformat()}
        )
    assert response.status_code == 422
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [("occurred_at", rule)]
    assert skewed.status_code == 202


async def test_wrong_content_type_is_415() -> None:
    async with client() as c:
        response = await c.post(
            "/v1/events",
            content=b"event_id=1",
            headers={"X-API-Key": KEY, "Content-Type": "text/plain"},
        )
    assert response.status_code == 415


async def test_oversized_bodies_get_413_even_without_content_length() -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    async with client(max_event_bytes=2048) as c:
        declared = await post(c, {**EXAMPLES["support"], "text": "x" * 4000})
        streamed = await c.post(
            "/v1/events",
            content=chunks(),
            headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413


async def test_malformed_json_is_422_not_500() -> None:
    async with client() as c:
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


async def test_too_many_inflight_events_is_503() -> None:
    async with client(max_inflight_events=2) as c:
        batch = {"events": [{**EXAMPLES["login"], "event_id": f"e{i}"} for i in range(3)]}
        response = await post(c, batch, path="/v1/batch")
    assert response.status_code == 503
    assert response.json()["unavailable"] == 3


async def test_batch_answers_per_event() -> None:
    publisher = FakePublisher()
    events = [
        {**EXAMPLES["login"], "event_id": "b0"},
        {**EXAMPLES["support"], "event_id": "b1", "score": 99},
        {**EXAMPLES["intent"], "event_id": "b2"},
        {"kind": "usage"},
    ]
    async with client(publisher) as c:
        response = await post(c, {"events": events}, path="/v1/batch")
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"], body["unavailable"]) == (2, 2, 0)
    assert [(r["index"], r["event_id"], r["status"]) for r in body["results"]] == [
        (0, "b0", "accepted"),
        (1, "b1", "rejected"),
        (2, "b2", "accepted"),
        (3, None, "rejected"),
    ]
    assert body["results"][1]["errors"] == [
        {
            "field": "score",
            "rule": "less_than_equal",
            "message": "Input should be less than or equal to 10",
        }
    ]
    assert [r.key for r in publisher.records] == ["acme-42", "acme-42"]


async def test_batch_with_nothing_valid_is_422_and_partial_outage_503() -> None:
    async with client() as c:
        invalid = await post(c, {"events": [{"kind": "x"}]}, path="/v1/batch")
    assert invalid.status_code == 422 and invalid.json()["rejected"] == 1
    async with client(HalfPublisher()) as c:
        events = [{**EXAMPLES["login"], "event_id": f"h{i}"} for i in range(4)]
        partial = await post(c, {"events": events}, path="/v1/batch")
    assert partial.status_code == 503
    assert partial.headers["Retry-After"] == "5"
    assert [r["status"] for r in partial.json()["results"]] == [
        "accepted",
        "unavailable",
        "accepted",
        "unavailable",
    ]


@pytest.mark.parametrize(
    "body", [[], {"events": []}, {"events": {}}, {"batch": []}, {"events": [], "extra": 1}]
)
async def test_batch_shape_errors(body: Any) -> None:
    async with client() as c:
        response = await post(c, body, path="/v1/batch")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "events"


async def test_batch_limits() -> None:
    async with client(max_batch_events=3, max_batch_bytes=4096) as c:
        many = await post(c, {"events": [EXAMPLES["login"]] * 4}, path="/v1/batch")
        big = await post(
            c, {"events": [{**EXAMPLES["support"], "text": "x" * 4000}]}, path="/v1/batch"
        )
    assert many.status_code == 413
    assert big.status_code == 413


async def test_rate_limit_per_key_counts_events() -> None:
    async with client(rate_per_key=1, burst_per_key=5) as c:
        first = await post(
            c,
            {"events": [{**EXAMPLES["login"], "event_id": f"r{i}"} for i in range(5)]},
            path="/v1/batch",
        )
        limited = await post(c, EXAMPLES["login"])
        too_big = await post(c, {"events": [EXAMPLES["login"]] * 6}, path="/v1/batch")
    assert first.status_code == 202
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert too_big.status_code == 429


async def test_readyz_and_healthz() -> None:
    async with client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200


async def test_openapi_has_an_example_of_every_kind_and_the_batch() -> None:
    async with client() as c:
        spec = (await c.get("/openapi.json")).json()
    single = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert set(single["examples"]) == {*EXAMPLES, "reward_redeemed"}
    assert single["schema"] == {"$ref": "#/components/schemas/Event"}
    assert (
        "Batch" in spec["components"]["schemas"] and "UsageEvent" in spec["components"]["schemas"]
    )


async def test_redemption_example_is_accepted_on_the_usage_topic() -> None:
    publisher = FakePublisher()
    async with client(publisher) as c:
        response = await post(c, REDEMPTION_EXAMPLE)
        missing = await post(c, {**REDEMPTION_EXAMPLE, "reward": None, "event_id": "evt_r2"})
    assert response.status_code == 202
    [record] = publisher.records
    assert record.topic == "tenure.events.usage"
    assert orjson.loads(record.value)["reward"] == "training"
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "reward"


async def test_metrics_label_routes_not_raw_paths() -> None:
    async with client() as c:
        await c.get("/no/such/path/42")
        await post(c, EXAMPLES["usage"])
        text = (await c.get("/metrics")).text
    assert 'route="unmatched"' in text
    assert 'route="/v1/events"' in text
    assert "/no/such/path/42" not in text


async def test_answers_are_the_same_under_a_root_path() -> None:
    """POST /v1/events answers the same when the app is mounted under a root path (until
    issue 14 a bare ASGI handler served the plain path and the FastAPI route the other)."""
    app = create_app(
        IngestSettings(keys_from_database=False, max_event_bytes=2048),
        publisher=FakePublisher(),
        authenticator=FakeAuthenticator(KEYS),
        clock=FakeClock(NOW),
    )
    bodies = [
        ({"X-API-Key": KEY}, EXAMPLES["usage"]),
        ({"X-API-Key": KEY}, {**EXAMPLES["support"], "score": 42}),
        ({"X-API-Key": KEY}, {**EXAMPLES["support"], "text": "x" * 4000}),
        ({"X-API-Key": READER}, EXAMPLES["usage"]),
        ({}, EXAMPLES["usage"]),
    ]
    answers = {}
    for root in ("", "/api"):
        transport = httpx.ASGITransport(app=app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            answers[root] = [
                await c.post(f"{root}/v1/events", json=body, headers=headers)
                for headers, body in bodies
            ]
    fast, declared = answers[""], answers["/api"]  # names from when they were two handlers
    assert [r.status_code for r in fast] == [202, 422, 413, 403, 401]
    assert [r.status_code for r in declared] == [r.status_code for r in fast]
    assert [r.json() for r in declared] == [r.json() for r in fast]
    assert fast[4].headers["WWW-Authenticate"] == declared[4].headers["WWW-Authenticate"]
    assert all(r.headers["content-type"] == "application/json" for r in fast)


async def test_other_methods_on_the_single_event_path_reach_fastapi() -> None:
    async with client() as c:
        response = await c.get("/v1/events", headers={"X-API-Key": KEY})
    assert response.status_code == 405


@pytest.mark.parametrize("freeze", [True, False])
async def test_served_app_freezes_the_garbage_collector_once_started(freeze: bool) -> None:
    app = create_app(
        IngestSettings(keys_from_database=False, gc_freeze=freeze),
        publisher=FakePublisher(),
        authenticator=FakeAuthenticator(KEYS),
        tune_gc=True,
    )
    before = gc.get_freeze_count()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert (frozen > before) is freeze


async def test_single_events_are_served_past_fastapis_request_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /v1/events is a bare ASGI handler served ahead of FastAPI's routing
    (``ingest.api.asgi_route``; docs/BENCHMARKS.md says what it buys): no Request object
    is built for it. The batch route is an ordinary FastAPI route."""
    built: list[str] = []
    init = Request.__init__

    def counting(self: Request, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        built.append(self.url.path)

    monkeypatch.setattr(Request, "__init__", counting)
    async with client() as c:
        single = await post(c, EXAMPLES["login"])
        batch = await post(c, {"events": [EXAMPLES["support"]]}, "/v1/batch")
    assert (single.status_code, batch.status_code) == (202, 202)
    assert "/v1/events" not in built and "/v1/batch" in built


def test_the_single_event_operation_is_documented_from_its_handler() -> None:
    app = create_app(
        IngestSettings(keys_from_database=False),
        publisher=FakePublisher(),
        authenticator=FakeAuthenticator(KEYS),
    )
    operation = app.openapi()["paths"]["/v1/events"]["post"]
    assert operation["description"] == inspect.getdoc(routes.post_event)
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Event"
    }
    assert operation["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"
    }
    assert set(operation["responses"]) >= {"401", "403", "413", "415", "422", "429", "503"}


async def test_single_events_are_logged_and_counted_under_their_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request log and the request metrics sit outside the bare handler: they see
    POST /v1/events under its route template, as FastAPI's routes are seen."""
    labels = {"route": "/v1/events", "status": "202"}
    before = REGISTRY.get_sample_value("tenure_ingest_requests_total", labels) or 0.0
    with caplog.at_level(logging.INFO, logger="tenure.requests"):
        async with client() as c:
            assert (await post(c, EXAMPLES["login"])).status_code == 202
    [logged] = [r for r in caplog.records if r.name == "tenure.requests"]
    fields = (logged.__dict__["method"], logged.__dict__["route"], logged.__dict__["status"])
    assert fields == ("POST", "/v1/events", 202)
    assert REGISTRY.get_sample_value("tenure_ingest_requests_total", labels) == before + 1
