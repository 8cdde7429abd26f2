"""The notifier's API and the orchestrator's operator API fuzzed from their own OpenAPI
documents, on the real PostgreSQL (and Kafka, where the notifier reports an outcome).

As for ingest (test_ingest_fuzz.py): schemathesis generates requests for every operation
the documents list, the in-app inbox's event stream included, and checks each answer:
never a 5xx, and the status code, content type and body (for the stream: each event) are
ones the document declares. A valid credential is always sent (an inbox token, an API key
with every operator scope), so the generated values reach the handlers and the database.
The examples from issue 13 (item 14) are pinned below as plain cases.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from common.apikeys import ApiKey, FakeAuthenticator, Scope
from common.clock import FakeClock
from common.db import create_engine
from common.kafka import FakePublisher, KafkaPublisher, ensure_topics
from common.settings import CommonSettings
from common.topics import Topic
from devstack.stack import Stack
from notifier.adapters.inbox import Inbox
from notifier.domain.signing import issue_inbox_token
from notifier.entrypoints.api import create_api as notifier_api
from notifier.settings import NotifierSettings
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.api import create_api as orchestrator_api
from orchestrator.entrypoints.deps import Deps

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OPERATOR_KEY = "fuzz-operator-key"
INBOX_SECRET = b"fuzz-inbox-secret"
CUSTOMER = "fuzz-customer-1"
QUIET_CUSTOMER = "fuzz-customer-2"  # not fuzzed: its messages stay as they were made
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A stream never ends by itself: the client stops reading it after this long (the events
# read until then are checked).
STREAM_READ_S = 0.3

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def notifier_settings(common: CommonSettings) -> NotifierSettings:
    return NotifierSettings(
        common=common,
        public_url="https://notifier.example",
        link_secret="fuzz-link-secret",
        inbound_secret="fuzz-inbound-secret-0123456789",
        webhook_secret="whsec_" + "A" * 32,
        webhook_csm_url="http://127.0.0.1:9/csm",
        webhook_escalation_url="http://127.0.0.1:9/escalation",
        inbox_secret=INBOX_SECRET.decode(),
        inbox_heartbeat_s=0.05,
    )


def operator_auth() -> FakeAuthenticator:
    scopes = [Scope.OPERATOR_READ, Scope.OPERATOR_ADMIN]
    return FakeAuthenticator({OPERATOR_KEY: ApiKey.static("fuzz", scopes)})


# The documents as the apps serve them, from apps on stand-ins that never connect (loaded
# at import: see test_ingest_fuzz.py); every request goes to the fixtures' apps.
_UNUSED = CommonSettings(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none")
notifier_doc = schemathesis.openapi.from_asgi(
    "/openapi.json", notifier_api(notifier_settings(_UNUSED), FakePublisher(), FakeClock(NOW))
)
orchestrator_doc = schemathesis.openapi.from_asgi(
    "/openapi.json",
    orchestrator_api(
        Deps(
            engine=create_engine(_UNUSED.database_url),
            playbooks=load_playbooks(SHIPPED),
            clock=FakeClock(NOW),
            topic_prefix="fuzz.",
        ),
        authenticator=operator_auth(),
    ),
)


def inbox_token(customer: str = CUSTOMER) -> str:
    return issue_inbox_token(customer, int(time.time()) + 3600, INBOX_SECRET)


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_api_fuzz")


@pytest.fixture(scope="module")
async def fuzz_common(database_url: str, common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-apifuzz-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES])
    engine = create_engine(database_url)
    inbox = Inbox(engine)
    for n in range(6):  # messages to list, mark and stream; the second customer's stay
        await inbox.store(
            notification_id=f"fuzz-n{n}",
            customer_id=(CUSTOMER, QUIET_CUSTOMER)[n % 2],
            journey_id=None,
            playbook="onboarding",
            step="welcome",
            title=f"Message {n}",
            body="Hello",
            created_at=NOW,
        )
    await engine.dispose()
    return common


@pytest.fixture
def notifier_app(fuzz_common: CommonSettings) -> FastAPI:
    """The notifier's app on the test database and a real KafkaPublisher, started with the
    app's lifespan in schemathesis' event loop (see test_ingest_fuzz.py's ``ingest_app``).
    The lifespan's end is the server's stop: the inbox's LISTEN task, which the first
    stream starts in that loop, ends with the test (not when PostgreSQL stops after it)."""
    publisher = KafkaPublisher(fuzz_common, client_id="it-apifuzz")
    stop = asyncio.Event()
    app = notifier_api(notifier_settings(fuzz_common), publisher, FakeClock(NOW), stop=stop)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with publisher, inner(a) as state:
                yield state
        finally:
            stop.set()

    app.router.lifespan_context = lifespan
    return app


@pytest.fixture(scope="module")
def operator_app(database_url: str) -> FastAPI:
    deps = Deps(
        engine=create_engine(database_url),
        playbooks=load_playbooks(SHIPPED),
        clock=FakeClock(NOW),
        topic_prefix="fuzz.",
    )
    return orchestrator_api(deps, authenticator=operator_auth())


def call(case: schemathesis.Case, app: FastAPI, headers: dict[str, str]) -> Any:
    """Send ``case`` in-process and run the checks; a stream is read for STREAM_READ_S."""
    timeout = STREAM_READ_S if case.path.endswith("/stream") else 30
    return case.call_and_validate(app=app, headers=headers, checks=CHECKS, timeout=timeout)


def test_both_documents_are_valid_and_list_the_bounded_routes() -> None:
    for doc in (notifier_doc, orchestrator_doc):
        doc.validate()
    labels = {r.ok().label for r in notifier_doc.get_all_operations()}
    assert "GET /v1/inbox/stream" in labels and "POST /v1/inbox/{message_id}/read" in labels
    labels = {r.ok().label for r in orchestrator_doc.get_all_operations()}
    assert "GET /v1/customers/{customer_id}" in labels and "GET /v1/journeys/{journey_id}" in labels


@notifier_doc.parametrize()
@FUZZ
def test_notifier_no_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case, notifier_app: FastAPI
) -> None:
    call(case, notifier_app, {"Authorization": f"Bearer {inbox_token()}"})


@orchestrator_doc.parametrize()
@FUZZ
def test_operator_api_no_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case, operator_app: FastAPI
) -> None:
    call(case, operator_app, {"X-API-Key": OPERATOR_KEY})


# -- the examples of issue 13, item 14 --------------------------------------------------

TOO_BIG = "9223372036854775808"  # 2**63: one more than PostgreSQL's bigint holds


@pytest.mark.parametrize(
    ("path", "method", "params"),
    [
        ("/v1/inbox", "GET", {"query": {"after": TOO_BIG}}),
        ("/v1/inbox/{message_id}/read", "POST", {"path_parameters": {"message_id": "9" * 23}}),
        ("/v1/inbox/{message_id}/dismiss", "POST", {"path_parameters": {"message_id": TOO_BIG}}),
        ("/v1/inbox/stream", "GET", {"headers": {"Last-Event-ID": "1" * 30}}),
    ],
    ids=["after", "read", "dismiss", "last-event-id"],
)
def test_an_integer_beyond_bigint_is_a_422_naming_it(
    path: str, method: str, params: dict[str, Any], notifier_app: FastAPI
) -> None:
    """These were 500s (PostgreSQL refused the value); the stream was cut instead."""
    case = notifier_doc[path][method].Case(**params)
    response = call(case, notifier_app, {"Authorization": f"Bearer {inbox_token()}"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] in ("after", "message_id", "last-event-id")


@pytest.mark.parametrize(
    "path",
    ["/v1/customers/{customer_id}", "/v1/journeys/{journey_id}"],
    ids=["customer", "journey"],
)
@pytest.mark.parametrize("value", ["\x00", "a" * 129, "a b"], ids=["nul", "long", "space"])
def test_an_identifier_that_cannot_be_one_is_a_422(
    path: str, value: str, operator_app: FastAPI
) -> None:
    """``/v1/customers/%00`` and ``/v1/journeys/%00`` were 500s (PostgreSQL refuses NUL)."""
    name = path.split("{")[1].rstrip("}")
    case = orchestrator_doc[path]["GET"].Case(path_parameters={name: value})
    response = call(case, operator_app, {"X-API-Key": OPERATOR_KEY})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", name]


def test_an_identifier_that_can_be_one_and_is_unknown_is_still_404(operator_app: FastAPI) -> None:
    for path, name in (
        ("/v1/customers/{customer_id}", "customer_id"),
        ("/v1/journeys/{journey_id}", "journey_id"),
    ):
        case = orchestrator_doc[path]["GET"].Case(path_parameters={name: "no-such:id_1.x@y"})
        assert call(case, operator_app, {"X-API-Key": OPERATOR_KEY}).status_code == 404


def test_the_stream_resumes_after_last_event_id_with_events_as_declared(
    notifier_app: FastAPI,
) -> None:
    case = notifier_doc["/v1/inbox/stream"]["GET"].Case(headers={"Last-Event-ID": "0"})
    token = inbox_token(QUIET_CUSTOMER)
    response = call(case, notifier_app, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    events = [block for block in response.text.split("\n\n") if "event: message" in block]
    assert len(events) == 3, response.text  # every message after id 0, each checked
