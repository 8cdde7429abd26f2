"""What the operator API's routes depend on, as ``Annotated`` aliases that keep them short:
the orchestrator's dependencies and settings (set on ``app.state`` by
:func:`~orchestrator.entrypoints.api.app.create_api`), the API key a route needs, and
the bounded path identifiers.

Every ``/v1/`` route needs an API key (``X-API-Key`` or ``Authorization: Bearer``):
reading routes the scope ``operator:read``, the routes that change a journey or a
playbook the scope ``operator:admin`` (scopes do not imply one another). 401 without a
valid key, 403 with a key that lacks the scope.
"""

# No ``from __future__ import annotations``: FastAPI reads the aliases from evaluated
# annotations.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from common.apikeys import ApiKey, Authenticator, Scope
from common.http import IDENTIFIER_PATTERN, NAME_PATTERN, AccessDenied, check_access
from orchestrator.entrypoints.api.models import Problem
from orchestrator.entrypoints.deps import Deps
from orchestrator.settings import OrchestratorSettings


def get_deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def get_settings(request: Request) -> OrchestratorSettings:
    settings: OrchestratorSettings = request.app.state.settings
    return settings


def needs(scope: Scope) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that answers 401 / 403 unless the request's key has ``scope``."""

    async def check(request: Request) -> ApiKey:
        auth: Authenticator | None = request.app.state.authenticator
        if auth is None:
            raise AccessDenied(401, "no API keys are configured", {"WWW-Authenticate": "Bearer"})
        return await check_access(auth, request.headers, scope)

    return check


Service = Annotated[Deps, Depends(get_deps)]
Settings = Annotated[OrchestratorSettings, Depends(get_settings)]
Reader = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_READ))]
Admin = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_ADMIN))]
# Every identifier is bounded (422 outside), so no query sees a NUL byte or a megabyte.
CustomerId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["acme-42"])]
JourneyId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
PlaybookName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["retention_offer"])]
# The error answers every operator route declares.
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": Problem} for s in (401, 403, 404, 409)}
