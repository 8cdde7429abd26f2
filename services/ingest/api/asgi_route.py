"""A route served by a bare ASGI handler ahead of FastAPI's routing, and declared to
FastAPI for the OpenAPI document.

``POST /v1/events`` is the one route that takes a request per event. At 500 single
events a second, FastAPI's per-request work (routing, the ``Request`` object,
dependency solving, the response model, its exception wrappers) was a large part of
the CPU time a request took, and CPU time is what the latency tail waits for
(docs/BENCHMARKS.md, "What each speed mechanism buys"). :func:`serve_ahead` hands the
route's requests to its handler before FastAPI sees them; the handler is the only
implementation, and the document's operation is made by FastAPI from the declaration
given here and the handler's name and docstring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI

AsgiHandler = Callable[[Any, Any, Any], Awaitable[None]]
JSON = (b"content-type", b"application/json")


def serve_ahead(app: FastAPI, path: str, handler: AsgiHandler, **declaration: Any) -> None:
    """Serve ``POST path`` with ``handler(scope, receive, send)`` ahead of FastAPI's
    routing; declare it to FastAPI with ``declaration`` (``add_api_route``'s arguments:
    status code, response model, responses, ``openapi_extra``) for the document.

    The handler reads the body, checks what a dependency would check and answers by
    itself: no FastAPI dependency, exception handler or middleware added before this
    call applies to it (one added after it, outside, does). Other methods on ``path``
    reach FastAPI, which answers 405.
    """

    async def declared() -> None:  # pragma: no cover - the handler serves the route
        raise AssertionError(f"POST {path} is served by {handler.__name__}")

    declared.__name__ = handler.__name__
    declared.__doc__ = handler.__doc__
    app.add_api_route(path, declared, methods=["POST"], **declaration)
    app.add_middleware(_Ahead, path=path, route=app.router.routes[-1], handler=handler)


class _Ahead:
    """The ASGI middleware of :func:`serve_ahead`. It puts the declared route in the
    scope, as FastAPI's routing would, for middlewares outside it (request metrics)."""

    def __init__(self, app: Any, *, path: str, route: Any, handler: AsgiHandler) -> None:
        self.app, self.path, self.route, self.handler = app, path, route, handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and _route_path(scope) == self.path
        ):
            scope["route"] = self.route
            await self.handler(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route_path(scope: Any) -> str:
    """The request's path under the app's root path (behind a proxy's prefix), as routing
    matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def send_json(send: Any, status: int, body: object, headers: Mapping[str, str]) -> None:
    """Answer with ``body`` (JSON bytes, or an object to serialise), ``status`` and
    ``headers``."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    raw = [JSON, (b"content-length", b"%d" % len(data))]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
