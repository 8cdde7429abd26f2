"""The ingest HTTP app: the routes of :mod:`ingest.api.routes` over the dependencies
:mod:`ingest.bootstrap` builds, with request metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from common.apikeys import Authenticator
from common.clock import Clock
from common.events import Event
from common.http import RequestLog, docs_routes, ops_router
from common.kafka import Publisher
from common.logging import configure_logging
from ingest import metrics
from ingest.api import errors, routes
from ingest.api.asgi_route import serve_ahead
from ingest.api.routes import router
from ingest.api.schemas import Batch
from ingest.bootstrap import bootstrap
from ingest.settings import IngestSettings

DESCRIPTION = (
    "Send the usage, payment, login, support, profile and intent events of your "
    "customers. 202 means Kafka acknowledged the event (acks=all); 503 means retry "
    "after Retry-After seconds; resending an event with the same event_id is safe."
)


def create_app(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
    tune_gc: bool = False,
) -> FastAPI:
    """The app. What is not passed in (publisher, key cache, clock) is made from
    ``settings`` by :func:`~ingest.bootstrap.bootstrap`, and started and stopped with the
    app's lifespan."""
    ingest = bootstrap(
        settings, publisher=publisher, authenticator=authenticator, clock=clock, tune_gc=tune_gc
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with ingest.running():
            yield

    app = FastAPI(
        title="Tenure ingest API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        **docs_routes(settings.docs),
    )
    app.state.ingest = ingest
    app.include_router(ops_router(metrics=settings.metrics_port is None))
    app.include_router(router)
    serve_ahead(app, "/v1/events", routes.post_event, **routes.EVENT_ROUTE)
    errors.install(app, retry_after_s=settings.retry_after_s)
    # Added after serve_ahead, so outside it: they time and log POST /v1/events too.
    app.add_middleware(RequestLog, observe=observe_request)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the schemas of the bodies the routes read themselves
    (``Event``, ``Batch`` and the event models they refer to)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        ref_template = "#/components/schemas/{model}"
        batch = TypeAdapter(Batch).json_schema(ref_template=ref_template)
        components.update(batch.pop("$defs", {}))
        components["Batch"] = batch
        event = TypeAdapter(Event).json_schema(ref_template=ref_template)
        event.pop("$defs", None)
        components["Event"] = event
        app.openapi_schema = schema
    return app.openapi_schema


def observe_request(route: str, status: int, seconds: float) -> None:
    """Ingest's request metrics, by route template (so unknown URLs add no series)."""
    metrics.REQUEST_SECONDS.labels(route=route).observe(seconds)
    metrics.REQUESTS.labels(route=route, status=str(status)).inc()


def build() -> FastAPI:
    """Factory for uvicorn (``--factory``), one app per worker process."""
    settings = IngestSettings()
    # A worker process is a fresh interpreter (spawn): it configures its own logging.
    configure_logging("ingest", settings.common.log_level, settings.common.log_format)
    return create_app(settings, tune_gc=True)
