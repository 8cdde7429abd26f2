"""The ingest API fuzzed from its own OpenAPI document, on the real broker.

Schemathesis generates requests for every operation the document lists (its examples,
then boundary and invalid values, then random bodies) and checks each answer: never a
5xx, and the status code, content type and body are ones the document declares.
Requests without a valid API key must get 401.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from common.apikeys import ApiKey, FakeAuthenticator, Scope
from common.clock import FakeClock
from common.events import EXAMPLES
from common.kafka import FakePublisher, KafkaPublisher, ensure_topics
from common.settings import CommonSettings
from ingest.api import create_app
from ingest.settings import IngestSettings

KEY = "fuzz-writer-key"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the document's examples are 2026-11-20T10:15Z
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def build_app(settings: IngestSettings, publisher: Any) -> FastAPI:
    return create_app(
        settings,
        publisher=publisher,
        authenticator=FakeAuthenticator({KEY: ApiKey.static("fuzz", [Scope.EVENTS_WRITE])}),
        clock=FakeClock(NOW),
    )


def rfc3339(day: date, at: time, offset_minutes: int) -> str:
    sign, minutes = "+-"[offset_minutes < 0], abs(offset_minutes)
    return f"{day.isoformat()}T{at.isoformat()}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


_offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
# Every `date-time` schemathesis generates (in this process): a third inside the accepted
# window around NOW (so events get through to Kafka), a third anywhere in years 1-9999, a
# third on the first or last day a datetime can hold.
schemathesis.openapi.format(
    "date-time",
    st.one_of(
        st.builds(
            rfc3339,
            st.dates(date(2026, 10, 22), date(2026, 11, 19)),
            st.times(),
            st.sampled_from([0, 0, 330, -480]),
        ),
        st.builds(rfc3339, st.dates(), st.times(), _offsets),
        st.builds(rfc3339, st.sampled_from([date.min, date.max]), st.times(), _offsets),
    ),
)

# The document as the app serves it. Loaded at import (from an app on a stand-in publisher)
# because `schemathesis.pytest.from_fixture` fails on pytest 9.2 (it sets `Function._nodeid`,
# which 9.2 removed); every request goes to the `ingest_app` fixture's app, on the real broker.
served = schemathesis.openapi.from_asgi(
    "/openapi.json", build_app(IngestSettings(keys_from_database=False), FakePublisher())
)

schema = served


def call_and_check(case: schemathesis.Case, app: Any, headers: dict[str, str]) -> Any:
    """Send ``case`` to ``app`` in-process and run the checks; raises FailureGroup."""
    return case.call_and_validate(app=app, headers=headers, checks=CHECKS)


@pytest.fixture(scope="module")
async def fuzz_common(common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(update={"topic_prefix": f"it-fuzz-{uuid.uuid4().hex[:6]}."})
    await ensure_topics(common)
    return common


@pytest.fixture
def ingest_app(fuzz_common: CommonSettings) -> FastAPI:
    """The app on a real KafkaPublisher, started and stopped with the app's lifespan.

    Schemathesis serves an ASGI app from its own event-loop thread (starting the lifespan on
    the first request, ending it when the test ends), and aiokafka belongs to the loop it
    was started in; so the publisher starts in that loop rather than in the test's.
    """
    publisher = KafkaPublisher(fuzz_common, client_id="it-fuzz")
    app = build_app(IngestSettings(common=fuzz_common, keys_from_database=False), publisher)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with publisher, inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan
    return app


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_document_is_valid_openapi_and_every_operation_resolves() -> None:
    served.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in served.get_all_operations()]  # raises if unresolvable
    assert sorted(op.label for op in operations) == [
        "GET /readyz",
        "POST /v1/batch",
        "POST /v1/events",
    ]


@schema.parametrize()
@FUZZ
def test_no_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case, ingest_app: FastAPI
) -> None:
    call_and_check(case, ingest_app, {"X-API-Key": KEY})


NOT_A_WRITER = [
    {},
    {"X-API-Key": ""},
    {"X-API-Key": "not-a-key"},
    {"X-API-Key": KEY.upper()},
    {"Authorization": "Bearer not-a-key"},
]


@schema.parametrize()
@schema.given(headers=st.sampled_from(NOT_A_WRITER))
@settings(FUZZ, max_examples=30, phases=[Phase.generate, Phase.shrink])
def test_without_a_valid_key_every_write_gets_401(
    case: schemathesis.Case, headers: dict[str, str], ingest_app: FastAPI
) -> None:
    # Generated cases only: schemathesis refuses given() together with the document's examples.
    response = call_and_check(case, ingest_app, headers)
    if case.method.upper() == "POST":
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == ["Bearer"]


OUT_OF_RANGE = {**EXAMPLES["usage"], "occurred_at": "0001-01-01T00:00:00+01:00"}


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/events", OUT_OF_RANGE), ("/v1/batch", {"events": [OUT_OF_RANGE]})]
)
def test_occurred_at_beyond_utc_range_is_422(path: str, body: Any, ingest_app: FastAPI) -> None:
    """Found by the fuzzer: this used to escape as an OverflowError (500)."""
    case = served[path]["POST"].Case(body=body, media_type="application/json")
    response = call_and_check(case, ingest_app, {"X-API-Key": KEY})
    assert response.status_code == 422


def test_malformed_batch_gets_a_declared_422_body(ingest_app: FastAPI) -> None:
    """Found by the fuzzer: a Problem body used to be undeclared for the batch's 422."""
    case = served["/v1/batch"]["POST"].Case(body=[None, None], media_type="application/json")
    response = call_and_check(case, ingest_app, {"X-API-Key": KEY})
    assert response.status_code == 422


class Thing(BaseModel):
    name: str


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [(500, {"name": "x"}, "Server error"), (200, {"name": 1}, "Response violates schema")],
)
def test_the_checks_do_fail_a_broken_app(status: int, body: Any, failure: str) -> None:
    broken = FastAPI()

    @broken.get("/thing", response_model=Thing)
    async def thing() -> JSONResponse:
        return JSONResponse(body, status)

    case = schemathesis.openapi.from_asgi("/openapi.json", broken)["/thing"]["GET"].Case()
    with pytest.raises(FailureGroup) as failed:
        call_and_check(case, broken, {})
    assert failure in str(failed.value)
