"""The orchestrator's HTTP API (health and metrics; the operator API grows here)."""

from fastapi import FastAPI

from common.metrics import make_asgi_app


def create_api() -> FastAPI:
    app = FastAPI(title="Tenure orchestrator", version="1")
    app.mount("/metrics", make_asgi_app())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
