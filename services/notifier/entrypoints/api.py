"""The notifier's HTTP API: tracking links (click, open pixel), health and metrics."""

from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

from common.clock import Clock
from common.http import ops_router
from common.kafka import Publisher
from common.messages import Delivery
from common.topics import Topic
from notifier import metrics
from notifier.domain.signing import BadSignature, verify_token
from notifier.settings import NotifierSettings

PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def create_api(settings: NotifierSettings, publisher: Publisher, clock: Clock) -> FastAPI:
    app = FastAPI(title="Tenure notifier", version="1")
    app.include_router(ops_router())
    secret = settings.link_secret.get_secret_value().encode()

    async def track(token: str, status: str) -> None:
        try:
            data = verify_token(token, secret)
        except BadSignature:
            raise HTTPException(404, "unknown link") from None
        await publisher.publish(
            Topic.DELIVERIES,
            data["c"],
            Delivery(
                notification_id=data["n"],
                customer_id=data["c"],
                journey_id=data.get("j"),
                playbook=data.get("p"),
                step=data.get("s"),
                channel=data.get("ch", "email"),
                status=status,
                occurred_at=clock.now(),
            ),  # type: ignore[arg-type]
        )
        metrics.TRACKED.labels(status=status).inc()

    @app.get("/t/click/{token}")
    async def click(token: str) -> RedirectResponse:
        await track(token, "clicked")
        return RedirectResponse(settings.landing_url, status_code=302)

    @app.get("/t/open/{token}")
    async def open_pixel(token: str) -> Response:
        await track(token, "opened")
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    return app
