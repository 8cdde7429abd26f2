"""Consume notifications and deliver each once in effect; report every outcome."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from common.clock import Clock
from common.kafka import Publisher, Record
from common.messages import Delivery, Notification
from common.topics import Topic
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.mailer import Mailer, SendError
from notifier.adapters.webhooks import WebhookSender
from notifier.domain.render import Renderer, RenderError
from notifier.domain.signing import sign_token
from notifier.settings import NotifierSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deliverer:
    settings: NotifierSettings
    log: DeliveryLog
    mailer: Mailer
    webhooks: WebhookSender
    renderer: Renderer
    publisher: Publisher
    clock: Clock

    def tracking_url(self, kind: str, n: Notification) -> str:
        token = sign_token(
            {
                "n": n.notification_id,
                "c": n.customer_id,
                "j": n.journey_id,
                "p": n.playbook,
                "s": n.step,
                "ch": n.channel,
            },
            self.settings.link_secret.get_secret_value().encode(),
        )
        return f"{self.settings.public_url}/t/{kind}/{token}"

    def context(self, n: Notification) -> dict[str, Any]:
        return {
            **n.context,
            "customer_id": n.customer_id,
            "variant": n.variant,
            "offer_url": self.tracking_url("click", n),
            "open_url": self.tracking_url("open", n),
        }

    async def _send(self, n: Notification) -> None:
        if n.channel == "email":
            if not n.recipient:
                raise SendError("no email address")
            email = self.renderer.email(n.template, self.context(n))
            await self.mailer.send(
                to=n.recipient,
                email=email,
                headers={"X-Tenure-Notification-Id": n.notification_id},
            )
        elif n.channel == "webhook":
            url = {
                "csm": self.settings.webhook_csm_url,
                "escalation": self.settings.webhook_escalation_url,
            }.get(n.recipient or "")
            if url is None:
                raise SendError(f"no webhook endpoint for recipient {n.recipient!r}")
            body = orjson.dumps(
                {
                    "type": "csm_task",
                    "notification_id": n.notification_id,
                    "customer_id": n.customer_id,
                    "playbook": n.playbook,
                    "step": n.step,
                    "priority": n.priority,
                    "owner_csm": n.context.get("owner_csm"),
                    "title": self.renderer.text(n.template, self.context(n)),
                    "explanation": n.context.get("score"),
                }
            )
            await self.webhooks.post(url, msg_id=n.notification_id, body=body)
        else:
            raise SendError(f"channel {n.channel} is not delivered by this release")

    async def handle(self, record: Record) -> None:
        n = Notification.model_validate_json(record.value)
        if not await self.log.claim(n.notification_id, n.customer_id, n.channel):
            metrics.NOTIFICATIONS.labels(channel=n.channel, outcome="duplicate").inc()
            return
        started = time.perf_counter()
        try:
            await self._send(n)
        except (SendError, RenderError) as exc:
            await self.log.finish(n.notification_id, "failed", str(exc)[:2000])
            await self.report(n, "failed", str(exc)[:500])
            metrics.NOTIFICATIONS.labels(channel=n.channel, outcome="failed").inc()
            log.warning(
                "delivery failed: %s", str(exc)[:300], extra={"notification_id": n.notification_id}
            )
            return
        metrics.SEND_SECONDS.labels(channel=n.channel).observe(time.perf_counter() - started)
        await self.log.finish(n.notification_id, "sent")
        await self.report(n, "sent")
        metrics.NOTIFICATIONS.labels(channel=n.channel, outcome="sent").inc()

    async def report(self, n: Notification, status: str, detail: str | None = None) -> None:
        await self.publisher.publish(
            Topic.DELIVERIES,
            n.customer_id,
            Delivery(
                notification_id=n.notification_id,
                customer_id=n.customer_id,
                journey_id=n.journey_id,
                playbook=n.playbook,
                step=n.step,
                channel=n.channel,
                status=status,
                occurred_at=self.clock.now(),  # type: ignore[arg-type]
                detail=detail,
            ),
        )
