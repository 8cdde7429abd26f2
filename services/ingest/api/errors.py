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


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Answer every :class:`IngestError` with its status and a :class:`Problem` body;
    503 says to retry after ``retry_after_s``, 429 after the rate limit's wait."""

    async def answer(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, IngestError)
        headers = {}
        if isinstance(exc, NotAuthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        elif isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, Unavailable):
            headers["Retry-After"] = str(retry_after_s)
        problem = Problem(error=exc.message, errors=field_errors(exc.errors))
        return json_response(problem.model_dump(), STATUS[type(exc)], headers)

    app.add_exception_handler(IngestError, answer)
