"""The ingest HTTP API: authenticate, bound, validate, publish, and answer 202 only once
Kafka acknowledged every event it reports as accepted."""

import asyncio
import contextlib
import gc
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from common.apikeys import ApiKey, Authenticator, KeyCache, KeyRepository, Scope
from common.clock import Clock, clock_from_settings
from common.db import create_engine
from common.events import (
    EVENT_MODELS,
    EXAMPLES,
    REDEMPTION_EXAMPLE,
    SCHEMA_VERSION,
    Event,
    event_adapter,
)
from common.http import AccessDenied, check_access, docs_routes, ops_router
from common.kafka import OutgoingRecord, Publisher, TransactionalPublisher, TransactionReport
from common.logging import configure_logging
from common.topics import events_topic, topic_name
from ingest import metrics
from ingest.domain.admission import RateLimiter, Rejection, check_occurred_at
from ingest.settings import IngestSettings


class Accepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


class FieldError(BaseModel):
    field: str
    rule: str
    message: str


class Problem(BaseModel):
    error: str
    errors: list[FieldError] = []


class EventResult(BaseModel):
    index: int
    event_id: str | None = None
    status: Literal["accepted", "rejected", "unavailable"]
    errors: list[FieldError] = []


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    unavailable: int
    results: list[EventResult]


class ApiError(Exception):
    """An answer other than success; only this layer picks HTTP status codes."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        self.status, self.error = status, error
        self.headers, self.errors = headers or {}, errors or []


def field_errors(errors: Any) -> list[FieldError]:
    """Pydantic errors as (field path, rule, message), without the kind tag in the path."""
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


class ObserveRequests:
    """Counts and times requests by route template (so unknown URLs add no series).

    A plain ASGI middleware: FastAPI's ``@app.middleware("http")`` wraps every request in
    extra tasks and streams, which cost a quarter of a single event's CPU time here.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            metrics.REQUEST_SECONDS.labels(route=route).observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(route=route, status=str(status)).inc()


class _Disconnected(Exception):
    """The client went away before its request body was read: nobody to answer."""


async def read_asgi_body(scope: Any, receive: Any, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """:func:`read_asgi_body` for a FastAPI endpoint's request."""
    try:
        return await read_asgi_body(request.scope, request.receive, limit)
    except _Disconnected:
        raise ClientDisconnect from None


def problem_body(exc: ApiError) -> bytes:
    """The JSON body of an error answer (a :class:`Problem`)."""
    return orjson.dumps(Problem(error=exc.error, errors=exc.errors).model_dump())


AsgiHandler = Callable[[Any, Any, Any], Awaitable[None]]


class SingleEventFastPath:
    """``POST /v1/events`` straight to its handler, past FastAPI's routing and request
    machinery; every other request goes on to the app.

    At 500 single events a second FastAPI's per-request work (Request object,
    dependency solving, response model, exception wrappers) was a large part of a
    request's CPU, and CPU is what the latency tail waits for. The route stays declared
    in FastAPI (the OpenAPI document, and the same handler logic behind it); this only
    takes the requests before routing does. ``route`` is put in the scope so that
    :class:`ObserveRequests` labels them as FastAPI would.
    """

    def __init__(self, app: Any, *, path: str, route: Any, handler: AsgiHandler) -> None:
        self.app, self.path, self.route, self.handler = app, path, route, handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "POST":
            scope["route"] = self.route
            await self.handler(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _row(
    index: int, event_id: str | None, status: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One entry of a batch answer (an :class:`EventResult`, built without the model)."""
    return {"index": index, "event_id": event_id, "status": status, "errors": errors or []}


def _openapi_body(ref: str, examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref}, "examples": examples}},
        }
    }


class Batch(BaseModel):
    """The body of POST /v1/batch (documentation only: the route parses it event by event)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1)


batch_adapter: TypeAdapter[Batch] = TypeAdapter(Batch)


def observe_transaction(report: TransactionReport) -> None:
    metrics.TRANSACTIONS.labels(outcome=report.outcome).inc()
    metrics.TRANSACTION_EVENTS.observe(report.events)
    metrics.TRANSACTION_WAIT_SECONDS.observe(report.waited_s)
    metrics.TRANSACTION_SECONDS.observe(report.seconds)


def make_publisher(
    settings: IngestSettings,
    *,
    transactional_id: str,
    **overrides: Any,
) -> TransactionalPublisher:
    """Ingest's publisher: group commit in Kafka transactions, tuned by the settings,
    reporting each transaction to ingest's metrics."""
    return TransactionalPublisher(
        settings.common,
        client_id="tenure-ingest",
        transactional_id=transactional_id,
        transaction_timeout_ms=int(settings.transaction_timeout_s * 1000),
        commit_reserve_s=settings.commit_reserve_s,
        max_group_records=settings.max_transaction_events,
        committers=settings.transaction_producers,
        rest_s=settings.transaction_rest_ms / 1000,
        spacing_s=settings.transaction_spacing_ms / 1000,
        observe=observe_transaction,
        **overrides,
    )


def create_app(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
    tune_gc: bool = False,
) -> FastAPI:
    """Build the app. What is not passed in (publisher, key cache) is made and owned here.

    ``tune_gc``: freeze the garbage collector's view of the process once started (when
    ``settings.gc_freeze``); for the served process only, not for apps built in tests.
    """
    common = settings.common
    owned_publisher = publisher is None
    pub: Publisher = publisher or make_publisher(
        settings,
        transactional_id=f"{common.topic_prefix}ingest-{socket.gethostname()}-{os.getpid()}",
    )
    clock = clock or clock_from_settings(common.time_scale, common.clock_epoch)
    limiter = RateLimiter(settings.rate_per_key, settings.burst_per_key)
    inflight = 0
    cache: KeyCache | None = None
    if authenticator is None:
        static = {}
        if settings.api_key is not None:
            static[settings.api_key.get_secret_value()] = ApiKey.static(
                "static", frozenset({Scope("events:write")})
            )
        cache = KeyCache(static=static, miss_reload_s=settings.keys_miss_reload_s)
        authenticator = cache
    auth: Authenticator = authenticator

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        refresher = None
        engine = None
        if owned_publisher:
            assert isinstance(pub, TransactionalPublisher)
            await pub.start()
        if cache is not None and settings.keys_from_database:
            engine = create_engine(common.database_url, pool_size=2)
            cache.repository = KeyRepository(engine)
            await cache.refresh()
            refresher = asyncio.create_task(cache.run(stop, every_s=settings.keys_refresh_s))
        if tune_gc and settings.gc_freeze:
            # A full collection walked all ~120,000 objects of the started process: 65-160 ms
            # with the event loop stopped, every few seconds at 500 requests/s (the single
            # event latency's tail). What is alive now lives as long as the process.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop.set()
            if refresher is not None:
                with contextlib.suppress(Exception):
                    await refresher
            if engine is not None:
                await engine.dispose()
            if owned_publisher:
                assert isinstance(pub, TransactionalPublisher)
                await pub.stop()

    app = FastAPI(
        title="Tenure ingest API",
        version="1",
        description=(
            "Send the usage, payment, login, support, profile and intent events of your "
            "customers. 202 means Kafka acknowledged the event (acks=all); 503 means retry "
            "after Retry-After seconds; resending an event with the same event_id is safe."
        ),
        lifespan=lifespan,
        **docs_routes(settings.docs),
    )
    app.include_router(ops_router(metrics=settings.metrics_port is None))

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body = Problem(error=exc.error, errors=exc.errors).model_dump()
        return JSONResponse(body, exc.status, headers=exc.headers)

    async def writer_key(headers: Mapping[str, str]) -> ApiKey:
        """The request's key if it may write events and sends JSON; else ApiError."""
        try:
            key = await check_access(auth, headers, Scope.EVENTS_WRITE)
        except AccessDenied as denied:
            raise ApiError(denied.status, denied.error, headers=denied.headers) from None
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "content type must be application/json")
        return key

    async def require_writer(request: Request) -> ApiKey:
        return await writer_key(request.headers)

    Writer = Annotated[ApiKey, Depends(require_writer)]

    def admit_rate(key: ApiKey, events: int) -> None:
        wait = limiter.take(key.id, events, time.monotonic())
        if wait > 0:
            retry = "60" if wait == float("inf") else str(max(1, int(wait + 0.999)))
            raise ApiError(
                429, "rate limit exceeded for this API key", headers={"Retry-After": retry}
            )

    def admit_time(event: Any, now: datetime) -> Rejection | None:
        return check_occurred_at(
            event.occurred_at,
            now=now,
            max_future=settings.max_future_skew,
            max_age=settings.max_event_age,
        )

    # Per kind: the physical topic and the kind header, computed once.
    routes = {
        kind: (topic_name(events_topic(kind), common.topic_prefix), kind.encode())
        for kind in EVENT_MODELS
    }
    schema_version = str(SCHEMA_VERSION).encode()

    def records(events: list[Any], key: ApiKey) -> list[OutgoingRecord]:
        """Key = customer id, value = the validated event as JSON, headers as documented."""
        ingested_at = datetime.now(UTC).isoformat().encode()
        key_id = key.id.encode()
        # The headers are the same for every event of a kind in one request: built once.
        headers = {
            kind: (
                topic,
                [
                    ("kind", kind_header),
                    ("schema_version", schema_version),
                    ("ingested_at", ingested_at),
                    ("api_key_id", key_id),
                ],
            )
            for kind, (topic, kind_header) in routes.items()
        }
        out: list[OutgoingRecord] = []
        for event in events:
            topic, kind_headers = headers[event.kind]
            # to_json gives the bytes model_dump_json would give as str, without the copy
            value = event.__pydantic_serializer__.to_json(event)
            out.append((topic, event.customer_id, value, kind_headers))
        return out

    async def publish(records: list[OutgoingRecord]) -> list[bool]:
        """Publish within the time bound; True per acknowledged record."""
        nonlocal inflight
        if inflight + len(records) > settings.max_inflight_events:
            return [False] * len(records)
        inflight += len(records)
        metrics.PRODUCER_INFLIGHT.set(inflight)
        metrics.PRODUCER_BUFFER_USAGE.set(inflight / settings.max_inflight_events)
        started = time.perf_counter()
        try:
            outcomes = await pub.publish_each(records, timeout_s=settings.publish_timeout_s)
        finally:
            inflight -= len(records)
            metrics.PRODUCER_INFLIGHT.set(inflight)
            metrics.PRODUCER_BUFFER_USAGE.set(inflight / settings.max_inflight_events)
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return [o is None for o in outcomes]

    unavailable = {"Retry-After": str(settings.retry_after_s)}
    problems: dict[int | str, dict[str, Any]] = {
        s: {"model": Problem} for s in (401, 403, 413, 415, 422, 429, 503)
    }
    event_examples = {k: {"summary": f"a {k} event", "value": v} for k, v in EXAMPLES.items()}
    event_examples["reward_redeemed"] = {
        "summary": "a loyalty redemption (a usage event)",
        "value": REDEMPTION_EXAMPLE,
    }
    batch_example = {
        "batch": {
            "summary": "two events",
            "value": {"events": [EXAMPLES["login"], EXAMPLES["support"]]},
        }
    }

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        responses=problems,
        openapi_extra=_openapi_body("#/components/schemas/Event", event_examples),
    )
    async def post_event(request: Request, key: Writer) -> Response:
        """Publish one event. 202 only once Kafka acknowledged it."""
        # Served by event_endpoint (SingleEventFastPath); declared here for the OpenAPI
        # document, and answering the same way if a request reaches it.
        body = await read_body(request, settings.max_event_bytes)
        return Response(await accept_event(key, body), 202, media_type="application/json")

    async def accept_event(key: ApiKey, body: bytes) -> bytes:
        """Admit, validate and publish one event: the 202 answer's body, or ApiError."""
        admit_rate(key, 1)
        try:
            event = event_adapter.validate_json(body)
        except ValidationError as exc:
            errors = field_errors(exc.errors())
            metrics.EVENTS.labels(kind="unknown", outcome="rejected", reason=errors[0].rule).inc()
            raise ApiError(422, "invalid event", errors=errors) from None
        rejection = admit_time(event, clock.now())
        if rejection is not None:
            metrics.EVENTS.labels(kind=event.kind, outcome="rejected", reason=rejection.rule).inc()
            raise ApiError(422, "invalid event", errors=[FieldError(**vars(rejection))])
        [ok] = await publish(records([event], key))
        if not ok:
            metrics.EVENTS.labels(kind=event.kind, outcome="unavailable", reason="publish").inc()
            raise ApiError(503, "event store unavailable, retry later", headers=unavailable)
        accepted[event.kind].inc()
        return orjson.dumps({"event_id": event.event_id, "status": "accepted"})

    accepted = {
        kind: metrics.EVENTS.labels(kind=kind, outcome="accepted", reason="") for kind in routes
    }
    json_type = (b"content-type", b"application/json")

    async def event_endpoint(scope: Any, receive: Any, send: Any) -> None:
        """POST /v1/events as a bare ASGI handler (see :class:`SingleEventFastPath`)."""
        try:
            key = await writer_key(Headers(scope=scope))
            body = await read_asgi_body(scope, receive, settings.max_event_bytes)
            status, answer, extra = 202, await accept_event(key, body), {}
        except ApiError as exc:
            status, answer, extra = exc.status, problem_body(exc), exc.headers
        except _Disconnected:
            return
        headers = [json_type, (b"content-length", b"%d" % len(answer))]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    [event_route] = [r for r in app.routes if getattr(r, "path", None) == "/v1/events"]
    app.add_middleware(
        SingleEventFastPath, path="/v1/events", route=event_route, handler=event_endpoint
    )
    # Added last, so outermost: it also times the requests the fast path answers.
    app.add_middleware(ObserveRequests)

    @app.post(
        "/v1/batch",
        status_code=202,
        response_model=BatchResult,
        responses={
            **problems,
            422: {"model": BatchResult | Problem},
            503: {"model": BatchResult},
        },
        openapi_extra=_openapi_body("#/components/schemas/Batch", batch_example),
    )
    async def post_batch(request: Request, key: Writer) -> Response:
        """Publish up to ``max_batch_events`` events; the answer says what became of each.

        202: every valid event was acknowledged (invalid ones are listed as rejected).
        422: no event was valid. 503: some valid events were not acknowledged; retry
        those (or the whole batch: duplicates by event_id are dropped downstream).
        """
        body = await read_body(request, settings.max_batch_bytes)
        try:  # fast path: the whole batch valid, validated in one call from the bytes
            events = list(enumerate(batch_adapter.validate_json(body).events))
            rows: list[dict[str, Any]] = []
        except ValidationError:
            events, rows = parse_batch_slowly(body)
        if len(events) + len(rows) > settings.max_batch_events:
            raise ApiError(413, f"more than {settings.max_batch_events} events in one batch")
        admit_rate(key, len(events) + len(rows))
        metrics.BATCH_EVENTS.observe(len(events) + len(rows))
        tally: Counter[tuple[str, str, str]] = Counter()
        for row in rows:
            tally["unknown", "rejected", row["errors"][0]["rule"]] += 1
        valid: list[tuple[int, Any]] = []
        now = clock.now()
        for index, event in events:
            rejection = admit_time(event, now)
            if rejection is None:
                valid.append((index, event))
                continue
            tally[event.kind, "rejected", rejection.rule] += 1
            rows.append(_row(index, event.event_id, "rejected", [vars(rejection)]))
        acked = await publish(records([e for _, e in valid], key)) if valid else []
        for (index, event), ok in zip(valid, acked, strict=True):
            status = "accepted" if ok else "unavailable"
            tally[event.kind, status, "" if ok else "publish"] += 1
            rows.append(_row(index, event.event_id, status))
        for (kind, outcome, reason), n in tally.items():
            metrics.EVENTS.labels(kind=kind, outcome=outcome, reason=reason).inc(n)
        rows.sort(key=lambda r: r["index"])
        counts = dict.fromkeys(("accepted", "rejected", "unavailable"), 0)
        for (_, outcome, _), n in tally.items():
            counts[outcome] += n
        answer = orjson.dumps({**counts, "results": rows})
        code = 503 if counts["unavailable"] else 422 if not counts["accepted"] else 202
        return Response(
            answer,
            code,
            media_type="application/json",
            headers=unavailable if code == 503 else None,
        )

    def parse_batch_slowly(
        body: bytes,
    ) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
        """Per-event validation of a batch with something wrong: ((index, event) of the
        valid ones, answer rows of the rejected ones)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                422,
                "invalid batch",
                errors=[FieldError(field="(body)", rule="json_invalid", message=str(exc))],
            ) from None
        items = data.get("events") if isinstance(data, dict) else None
        if not isinstance(items, list) or (isinstance(data, dict) and len(data) != 1):
            raise ApiError(
                422,
                "invalid batch",
                errors=[
                    FieldError(
                        field="events",
                        rule="batch_shape",
                        message='the body must be {"events": [event, ...]} and nothing else',
                    )
                ],
            )
        if not items:
            raise ApiError(
                422,
                "invalid batch",
                errors=[
                    FieldError(
                        field="events", rule="too_short", message="a batch needs at least one event"
                    )
                ],
            )
        if len(items) > settings.max_batch_events:
            raise ApiError(413, f"more than {settings.max_batch_events} events in one batch")
        events: list[tuple[int, Any]] = []
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                event = event_adapter.validate_python(item)
            except ValidationError as exc:
                event_id = item.get("event_id") if isinstance(item, dict) else None
                errors = [e.model_dump() for e in field_errors(exc.errors())]
                rows.append(
                    _row(index, event_id if isinstance(event_id, str) else None, "rejected", errors)
                )
                continue
            events.append((index, event))
        return events, rows

    @app.get("/readyz", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        """Ready when Kafka answers and the producer has room."""
        reason = await pub.ready(timeout_s=min(2.0, settings.publish_timeout_s))
        if reason is None and inflight >= settings.max_inflight_events:
            reason = "producer buffer full"
        if reason is not None:
            return JSONResponse(Problem(error=reason).model_dump(), 503)
        return JSONResponse({"status": "ready"})

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            defs = TypeAdapter(Batch).json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["Batch"] = defs
            components["Event"] = TypeAdapter(Event).json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components["Event"].pop("$defs", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def build() -> FastAPI:
    """Factory for uvicorn (``--factory``), one app per worker process."""
    settings = IngestSettings()
    # A worker process is a fresh interpreter (spawn): it configures its own logging.
    configure_logging("ingest", settings.common.log_level, settings.common.log_format)
    return create_app(settings, tune_gc=True)
