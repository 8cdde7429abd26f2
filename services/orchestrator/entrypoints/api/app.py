"""The orchestrator's HTTP API: health, metrics and the operator API under ``/v1/``
(the at-risk list, customer 360 and data rights, journeys, playbooks, portfolio
metrics; see :mod:`.dependencies` for the keys each route needs)."""

from __future__ import annotations

from fastapi import FastAPI

from common.apikeys import Authenticator
from common.db import database_ready
from common.http import RequestLog, answer_outages, docs_routes, ops_router, readiness_router
from orchestrator.entrypoints.api import (
    at_risk,
    customers,
    errors,
    journeys,
    playbooks,
    portfolio,
)
from orchestrator.entrypoints.deps import Deps
from orchestrator.settings import OrchestratorSettings


def create_api(
    deps: Deps | None = None,
    *,
    settings: OrchestratorSettings | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The app: ``/healthz`` and ``/metrics`` always; ``/readyz`` (ready when PostgreSQL
    answers) and the operator API when ``deps`` is given. A route that needs the database
    answers 503 while it is unavailable.

    ``authenticator`` tells keys apart (a :class:`common.apikeys.KeyCache` in production);
    without one, every ``/v1/`` request gets 401.
    """
    config = settings or OrchestratorSettings()
    app = FastAPI(
        title="Tenure orchestrator",
        version="1",
        description="Operator and CSM API: customer 360, playbooks and their results, "
        "and pausing or cancelling journeys and playbooks.",
        **docs_routes(config.docs),
    )
    app.add_middleware(RequestLog)
    app.include_router(ops_router(metrics=config.metrics_port is None))
    if deps is None:
        return app
    app.state.deps = deps
    app.state.settings = config
    app.state.authenticator = authenticator
    app.include_router(readiness_router(lambda: database_ready(deps.engine)))
    answer_outages(app)
    errors.install(app)
    routers = (at_risk, customers, journeys, playbooks, portfolio)
    for routes in (module.router for module in routers):
        app.include_router(routes)
    return app
