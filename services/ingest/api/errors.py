"""The one place that turns ingest's errors into HTTP status codes and bodies."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from fastapi import FastAPI, Request, Response

from ingest.api.schemas import FieldError, Problem
from ingest.domain.admission import Rejection
from ingest.errors import (
    IngestError,
    Invalid,
    NotAllowed,
    NotAuthenticated,
    RateLimited,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)

STATUS: dict[type[IngestError], int] = {
    NotAuthenticated: 401,
    NotAllowed: 403,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    Invalid: 422,
    RateLimited: 429,
    Unavailable: 503,
}
"""The status of each error; an error missing here is a bug and answers 500."""

PROBLEMS: dict[int | str, dict[str, object]] = {
    status: {"model": Problem} for status in sorted(set(STATUS.values()))
}
"""The error answers every write route may give, for the OpenAPI document."""


def field_errors(rejections: Sequence[Rejection]) -> list[FieldError]:
    return [FieldError(field=r.field, rule=r.rule, message=r.message) for r in rejections]


def json_response(body: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def problem(exc: IngestError, *, retry_after_s: int) -> tuple[int, bytes, dict[str, str]]:
    """The answer to ``exc``: its status, a :class:`Problem` body, and the headers (503
    says to retry after ``retry_after_s``, 429 after the rate limit's wait)."""
    headers = {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = str(retry_after_s)
    body = Problem(error=exc.message, errors=field_errors(exc.errors)).model_dump()
    return STATUS[type(exc)], orjson.dumps(body), headers


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Answer every :class:`IngestError` a FastAPI route raises with :func:`problem`."""

    async def answer(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, IngestError)
        status, body, headers = problem(exc, retry_after_s=retry_after_s)
        return Response(body, status, headers, media_type="application/json")

    app.add_exception_handler(IngestError, answer)
