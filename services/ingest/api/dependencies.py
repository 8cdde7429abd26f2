"""What the routes take from a request: the ingest dependencies, the writer's API key,
and the body, read up to its limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.apikeys import ApiKey, Scope
from common.http import AccessDenied, check_access
from ingest.bootstrap import Ingest
from ingest.errors import NotAllowed, NotAuthenticated, TooLarge, UnsupportedMediaType


async def get_ingest(request: Request) -> Ingest:
    """The app's :class:`Ingest` (made by ``create_app``). ``async``: FastAPI runs a
    plain ``def`` dependency in its thread pool, a thread hop per request."""
    ingest: Ingest = request.app.state.ingest
    return ingest


Services = Annotated[Ingest, Depends(get_ingest)]


async def require_writer(request: Request, ingest: Services) -> ApiKey:
    """The request's API key, if it may write events and the body is declared JSON.

    Raises :class:`NotAuthenticated`, :class:`NotAllowed` or :class:`UnsupportedMediaType`.
    """
    try:
        key = await check_access(ingest.authenticator, request.headers, Scope.EVENTS_WRITE)
    except AccessDenied as denied:
        error = NotAuthenticated if denied.status == 401 else NotAllowed
        raise error(denied.error) from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("content type must be application/json")
    return key


Writer = Annotated[ApiKey, Depends(require_writer)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; :class:`TooLarge` as soon as it passes ``limit`` bytes (by its
    declared length before reading, else while it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def event_body(request: Request, ingest: Services) -> bytes:
    return await read_body(request, ingest.settings.max_event_bytes)


async def batch_body(request: Request, ingest: Services) -> bytes:
    return await read_body(request, ingest.settings.max_batch_bytes)


EventBody = Annotated[bytes, Depends(event_body)]
BatchBody = Annotated[bytes, Depends(batch_body)]
