"""The ingest HTTP API: authenticate, validate, publish, and answer 202 only once Kafka acked."""

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from common.events import EVENT_MODELS, EXAMPLES, Event
from common.http import ops_router
from common.kafka import KafkaPublisher, Publisher, PublishError
from common.topics import events_topic
from ingest import metrics
from ingest.settings import IngestSettings


class Accepted(BaseModel):
    event_id: str
    status: str = "accepted"


class FieldError(BaseModel):
    field: str
    rule: str
    message: str


class Problem(BaseModel):
    error: str
    errors: list[FieldError] = []


class ApiError(Exception):
    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.error, self.headers = status, error, headers or {}


def field_errors(errors: Any) -> list[FieldError]:
    """Pydantic errors as (field path, rule, message), without the 'body' and kind-tag parts."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if loc and loc[0] in EVENT_MODELS:
            loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["kind"]
        out.append(
            FieldError(field=".".join(loc) or "(body)", rule=err["type"], message=err["msg"])
        )
    return out


def route_of(request: Request) -> str:
    """The matched route's template, so unknown URLs cannot create new metric series."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def create_app(settings: IngestSettings, *, publisher: Publisher | None = None) -> FastAPI:
    """Build the app. Without ``publisher`` a :class:`KafkaPublisher` is made and owned."""
    owned = publisher is None
    pub: Publisher = publisher or KafkaPublisher(settings.common, client_id="tenure-ingest")
    expected_key = settings.api_key.get_secret_value().encode()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned:
            assert isinstance(pub, KafkaPublisher)
            await pub.start()
        try:
            yield
        finally:
            if owned:
                assert isinstance(pub, KafkaPublisher)
                await pub.stop()

    app = FastAPI(
        title="Tenure ingest API",
        version="1",
        description="Send usage, payment, login, support, profile and intent events.",
        lifespan=lifespan,
    )
    app.include_router(ops_router())

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(Problem(error=exc.error).model_dump(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
        metrics.EVENTS.labels(kind="unknown", outcome="rejected").inc()
        return JSONResponse(Problem(error="invalid event", errors=errors).model_dump(), 422)

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            response: Response = JSONResponse(
                Problem(error=f"body larger than {settings.max_body_bytes} bytes").model_dump(), 413
            )
        else:
            started = time.perf_counter()
            response = await call_next(request)
            metrics.REQUEST_SECONDS.labels(route=route_of(request)).observe(
                time.perf_counter() - started
            )
        metrics.REQUESTS.labels(route=route_of(request), status=str(response.status_code)).inc()
        return response

    def require_key(request: Request) -> str:
        supplied = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if supplied is None and auth.lower().startswith("bearer "):
            supplied = auth[7:].strip()
        if not supplied or not hmac.compare_digest(supplied.encode(), expected_key):
            raise ApiError(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
        return settings.api_key_id

    def require_json(request: Request) -> None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "content type must be application/json")

    KeyId = Annotated[str, Depends(require_key)]
    examples = {kind: {"summary": f"a {kind} event", "value": ex} for kind, ex in EXAMPLES.items()}

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        dependencies=[Depends(require_json)],
        responses={
            401: {"model": Problem},
            413: {"model": Problem},
            415: {"model": Problem},
            422: {"model": Problem},
            503: {"model": Problem},
        },
    )
    async def post_event(
        key_id: KeyId, event: Annotated[Event, Body(openapi_examples=examples)]
    ) -> Accepted:
        """Publish one event; 202 means Kafka acknowledged it (acks=all)."""
        headers = [
            ("kind", event.kind.encode()),
            ("schema_version", str(event.schema_version).encode()),
            ("ingested_at", datetime.now(UTC).isoformat().encode()),
            ("api_key_id", key_id.encode()),
        ]
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                pub.publish(events_topic(event.kind), event.customer_id, event, headers),
                settings.publish_timeout_s,
            )
        except (PublishError, TimeoutError) as exc:
            metrics.EVENTS.labels(kind=event.kind, outcome="unavailable").inc()
            raise ApiError(
                503,
                "event store unavailable, retry later",
                {"Retry-After": str(settings.retry_after_s)},
            ) from exc
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.EVENTS.labels(kind=event.kind, outcome="accepted").inc()
        return Accepted(event_id=event.event_id)

    return app
