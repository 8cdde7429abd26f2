"""The one place where the orchestrator's errors become HTTP status codes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common.http import AccessDenied
from orchestrator.domain.errors import (
    CustomerNotFound,
    InvalidRequest,
    JourneyNotFound,
    OrchestratorError,
    PlaybookNotFound,
)
from orchestrator.domain.journey import IllegalTransition
from orchestrator.entrypoints.api.models import Problem

log = logging.getLogger(__name__)

STATUS: dict[type[OrchestratorError], int] = {
    JourneyNotFound: 404,
    PlaybookNotFound: 404,
    CustomerNotFound: 404,
    InvalidRequest: 422,
    IllegalTransition: 409,  # the journey machine forbids it in the journey's state
}


def status_of(exc: OrchestratorError) -> int:
    """The status for ``exc`` (the nearest class of it in :data:`STATUS`); 500 for an error
    no route should let through."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install(app: FastAPI) -> None:
    """Answer the orchestrator's errors and refused keys with a :class:`Problem`."""

    @app.exception_handler(OrchestratorError)
    async def _ours(_: Request, exc: OrchestratorError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            log.error("unexpected orchestrator error in a route", exc_info=exc)
        return JSONResponse(Problem(error=str(exc)).model_dump(), status)

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        # The shape of FastAPI's own 422 (what the OpenAPI document declares for every
        # route with parameters): the parameter named in ``loc``.
        detail = [{"loc": ["query", exc.parameter], "msg": exc.reason, "type": "value_error"}]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(AccessDenied)
    async def _denied(_: Request, exc: AccessDenied) -> JSONResponse:
        return JSONResponse(Problem(error=exc.error).model_dump(), exc.status, exc.headers)
