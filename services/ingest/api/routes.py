"""The ingest API's routes: each reads its input, calls one use case and picks the
status code of the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.datastructures import Headers

from ingest import service
from ingest.api.asgi_route import send_json
from ingest.api.dependencies import (
    BatchBody,
    Disconnected,
    Services,
    Writer,
    read_asgi_body,
    writer_key,
)
from ingest.api.errors import PROBLEMS, json_response, problem
from ingest.api.schemas import (
    BATCH_EXAMPLES,
    EVENT_EXAMPLES,
    Accepted,
    BatchResult,
    Problem,
    request_body,
)
from ingest.bootstrap import Ingest
from ingest.errors import IngestError

router = APIRouter()


async def post_event(scope: Any, receive: Any, send: Any) -> None:
    """Publish one event. 202 only once Kafka acknowledged it."""
    # A bare ASGI handler, served ahead of FastAPI's routing (ingest.api.asgi_route).
    ingest: Ingest = scope["app"].state.ingest
    try:
        key = await writer_key(ingest, Headers(scope=scope))
        body = await read_asgi_body(scope, receive, ingest.settings.max_event_bytes)
        accepted = await service.accept_event(
            body,
            key_id=key.id,
            publisher=ingest.publisher,
            clock=ingest.clock,
            limiter=ingest.limiter,
            policy=ingest.policy,
        )
    except IngestError as exc:
        await send_json(send, *problem(exc, retry_after_s=ingest.settings.retry_after_s))
        return
    except Disconnected:
        return
    await send_json(send, 202, {"event_id": accepted.event_id, "status": "accepted"}, {})


EVENT_ROUTE: dict[str, Any] = {
    "status_code": 202,
    "response_model": Accepted,
    "responses": PROBLEMS,
    "openapi_extra": request_body("#/components/schemas/Event", EVENT_EXAMPLES),
}
"""How :func:`post_event` is declared to FastAPI (``ingest.api.asgi_route.serve_ahead``)."""


@router.post(
    "/v1/batch",
    status_code=202,
    response_model=BatchResult,
    responses={**PROBLEMS, 422: {"model": BatchResult | Problem}, 503: {"model": BatchResult}},
    openapi_extra=request_body("#/components/schemas/Batch", BATCH_EXAMPLES),
)
async def post_batch(key: Writer, body: BatchBody, ingest: Services) -> Response:
    """Publish up to ``max_batch_events`` events; the answer says what became of each.

    202: every valid event was acknowledged (invalid ones are listed as rejected).
    422: no event was valid. 503: some valid events were not acknowledged; retry
    those (or the whole batch: duplicates by event_id are dropped downstream).
    """
    outcome = await service.accept_batch(
        body,
        key_id=key.id,
        publisher=ingest.publisher,
        clock=ingest.clock,
        limiter=ingest.limiter,
        policy=ingest.policy,
    )
    counts = outcome.counts
    answer = {
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "unavailable": counts["unavailable"],
        "results": [
            {
                "index": r.index,
                "event_id": r.event_id,
                "status": r.status,
                "errors": [vars(e) for e in r.errors] if r.errors else [],
            }
            for r in outcome.results
        ],
    }
    if counts["unavailable"]:
        return json_response(answer, 503, {"Retry-After": str(ingest.settings.retry_after_s)})
    return json_response(answer, 422 if not counts["accepted"] else 202)


@router.get("/readyz", responses={503: {"model": Problem}})
async def readyz(ingest: Services) -> Response:
    """Ready when Kafka answers and the producer has room."""
    reason = await ingest.publisher.ready(timeout_s=min(2.0, ingest.settings.publish_timeout_s))
    if reason is not None:
        return json_response(Problem(error=reason).model_dump(), 503)
    return json_response({"status": "ready"}, 200)
