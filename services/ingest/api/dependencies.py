"""What the routes take from a request: the ingest dependencies, the writer's API key,
and the body, read up to its limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

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


async def writer_key(ingest: Ingest, headers: Mapping[str, str]) -> ApiKey:
    """The request's API key, if it may write events and the body is declared JSON.

    Raises :class:`NotAuthenticated`, :class:`NotAllowed` or :class:`UnsupportedMediaType`.
    """
    try:
        key = await check_access(ingest.authenticator, headers, Scope.EVENTS_WRITE)
    except AccessDenied as denied:
        error = NotAuthenticated if denied.status == 401 else NotAllowed
        raise error(denied.error) from None
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("content type must be application/json")
    return key


async def require_writer(request: Request, ingest: Services) -> ApiKey:
    """:func:`writer_key` of a FastAPI route's request."""
    return await writer_key(ingest, request.headers)


Writer = Annotated[ApiKey, Depends(require_writer)]


class Disconnected(Exception):
    """The client went away before its request body was read: nobody to answer."""


async def read_asgi_body(scope: Any, receive: Any, limit: int) -> bytes:
    """The request body; :class:`TooLarge` as soon as it passes ``limit`` bytes (by its
    declared length before reading, else while it streams in); :class:`Disconnected`
    if the client goes away first."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise TooLarge(f"body larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """:func:`read_asgi_body` of a FastAPI route's request."""
    try:
        return await read_asgi_body(request.scope, request.receive, limit)
    except Disconnected:
        raise ClientDisconnect from None


async def batch_body(request: Request, ingest: Services) -> bytes:
    return await read_body(request, ingest.settings.max_batch_bytes)


BatchBody = Annotated[bytes, Depends(batch_body)]
