"""What every Tenure HTTP service shares: ``/healthz``, ``/readyz``, ``/metrics``, the API
key check, a log line per request, and 503 for a request that needs the database while it
is unavailable."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.apikeys import ApiKey, Authenticator, Scope, parse
from common.events import CUSTOMER_ID_PATTERN
from common.metrics import scrape_registry
from common.outage import DatabaseUnavailable

# Seconds a client is told to wait before retrying a request refused in an outage.
RETRY_AFTER_S = 5

# Bounds of what an API takes in a path, query or header: a value outside them is refused
# with 422 naming the parameter, before any query sees it (PostgreSQL refuses a bigint
# past 2^63 - 1 and a text with a NUL byte, which used to surface as a 500).
BIGINT_MAX = 2**63 - 1
"""The largest id PostgreSQL's ``bigint`` holds: the upper bound of every integer id."""
IDENTIFIER_PATTERN = CUSTOMER_ID_PATTERN
"""Customer and journey ids: 1-128 letters, digits and ``. _ : @ -``, not starting with a
symbol (the rule events follow for ``customer_id``; journey ids are UUIDs)."""
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,127}$"
"""Names of things declared as data (playbooks): lowercase snake case, at most 128."""


request_log = logging.getLogger("tenure.requests")


class RequestLog:
    """An ASGI middleware logging every HTTP request once answered, on ``tenure.requests``:
    ``method``, ``route`` (the template, e.g. ``/v1/journeys/{journey_id}``; ``unmatched``
    for a path no route serves), ``status``, ``duration_ms`` and ``key_id``, the id part of
    the API key presented (``tnr_<id>_<secret>``: never the secret; on a 401 it is the id
    the request claimed). Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) log
    at DEBUG, everything else at INFO. A plain ASGI middleware, as cheap as one can be."""

    QUIET = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/"})

    def __init__(self, app: Any, observe: Callable[[str, int, float], None] | None = None) -> None:
        """``observe(route, status, seconds)``, if given, is called for every request too
        (a service's request metrics), from the same measurement."""
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = str(getattr(scope.get("route"), "path", None) or "unmatched")
            if self.observe is not None:
                self.observe(route, status, time.perf_counter() - started)
            level = logging.DEBUG if route in self.QUIET else logging.INFO
            if request_log.isEnabledFor(level):
                fields = {
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "key_id": key_id(scope["headers"]),
                }
                request_log.log(level, "request", extra=fields)


def key_id(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """The id of the API key in ASGI headers (``X-API-Key`` or a bearer token), if one is
    shaped like a key; the secret is never returned."""
    wanted = {}
    for name, value in raw_headers:
        if name in (b"x-api-key", b"authorization"):
            wanted[name.decode()] = value.decode("latin-1")
    supplied = presented_key(wanted)
    parsed = parse(supplied) if supplied else None
    return parsed[0] if parsed else None


class AccessDenied(Exception):
    """A request without a valid key (401) or whose key lacks the scope (403).

    The API layer turns it into its own error body; ``headers`` go on the answer.
    """

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or {}


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    supplied = headers.get("x-api-key")
    if supplied is None:
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            supplied = authorization[7:].strip()
    return supplied or None


async def check_access(auth: Authenticator, headers: Mapping[str, str], scope: Scope) -> ApiKey:
    """The key of a request if it may use ``scope``; raises :class:`AccessDenied` otherwise.

    A known key is answered from memory; an unknown one may wait for the authenticator to
    reload its keys (:meth:`Authenticator.recheck`, bounded). Never logs the key.
    """
    supplied = presented_key(headers)
    key = auth.authenticate(supplied) if supplied else None
    if key is None and supplied:
        key = await auth.recheck(supplied)
    if key is None:
        raise AccessDenied(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
    if not key.allows(scope):
        raise AccessDenied(403, f"this API key lacks the {scope.value} scope")
    return key


def ops_router(*, metrics: bool = True) -> APIRouter:
    """``GET /healthz`` (process alive) and, unless ``metrics`` is False (they are served on
    a listener of their own), ``GET /metrics`` (Prometheus text format)."""
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if metrics:

        @router.get("/metrics", include_in_schema=False)
        async def metrics_text() -> Response:
            return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)

    return router


ReadinessCheck = Callable[[], Awaitable[str | None]]
"""None when a dependency is ready, else the reason it is not."""


def readiness_router(*checks: ReadinessCheck) -> APIRouter:
    """``GET /readyz``: 200 ``{"status": "ready"}`` when every check passes, else 503
    ``{"error": <the first reason>}`` (take the process out of a load balancer)."""
    router = APIRouter()

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        for check in checks:
            reason = await check()
            if reason is not None:
                return JSONResponse({"error": reason}, 503)
        return JSONResponse({"status": "ready"})

    return router


def answer_outages(app: FastAPI) -> None:
    """Answer 503 with ``Retry-After`` (not 500) to a request that needed the database
    while it was unavailable (:class:`common.outage.DatabaseUnavailable`)."""

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": "the database is unavailable; retry later"},
            503,
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    app.add_exception_handler(DatabaseUnavailable, unavailable)


def docs_routes(enabled: bool) -> dict[str, Any]:
    """``FastAPI(...)`` arguments serving /docs, /redoc and /openapi.json, or none of them."""
    if enabled:
        return {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}
