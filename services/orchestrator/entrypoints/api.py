"""The orchestrator's HTTP API (health and metrics; the operator API grows here)."""

from fastapi import FastAPI

from common.http import ops_router


def create_api() -> FastAPI:
    app = FastAPI(title="Tenure orchestrator", version="1")
    app.include_router(ops_router())
    return app
