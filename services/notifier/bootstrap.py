"""The one place where notifier settings become clients and loops."""

from __future__ import annotations

import asyncio
import logging

from common.clock import Clock, clock_from_settings
from common.db import create_engine
from common.kafka import DeadLetters, KafkaPublisher, make_consumer
from common.runtime import run_all, serve_service
from common.topics import Topic
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox, InboxEvents
from notifier.adapters.mailer import SmtpMailer
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain.render import Renderer
from notifier.entrypoints.api import create_api
from notifier.entrypoints.backlog import run_backlog_gauges
from notifier.entrypoints.deliver import Deliverer, consume, retry_loop
from notifier.settings import NotifierSettings

logger = logging.getLogger(__name__)


async def run(
    settings: NotifierSettings, stop: asyncio.Event, *, clock: Clock | None = None
) -> None:
    common = settings.common
    if not settings.public_url.startswith("https://"):
        logger.warning(
            "development mode: links and List-Unsubscribe use http (%s), which mailbox "
            "providers do not honour; TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL is set",
            settings.public_url,
        )
    clock = clock or clock_from_settings(common.time_scale, common.clock_epoch)
    engine = create_engine(common.database_url)
    publisher = KafkaPublisher(
        common, client_id="tenure-notifier", linger_ms=settings.producer_linger_ms
    )
    consumer = make_consumer(common, [Topic.NOTIFICATIONS], group_id=settings.group_id)
    suppressions = Suppressions(engine)
    inbox = Inbox(engine, channel=settings.inbox_channel)
    inbox_events = InboxEvents(
        engine, channel=settings.inbox_channel, retry_s=settings.inbox_listen_retry_s, stop=stop
    )
    mailer = SmtpMailer(settings)
    log = DeliveryLog(engine)
    http = vetted_client(
        allow=settings.webhook_allow_hosts,
        timeout_s=settings.webhook_timeout_s,
        max_connections=settings.webhook_max_connections,
    )
    async with http:
        await publisher.start()
        await consumer.start()
        dead_letters = DeadLetters(
            publisher, consumer_name="notifier", on_sent=metrics.dead_lettered
        )
        deliverer = Deliverer(
            settings=settings,
            log=log,
            mailer=mailer,
            webhooks=WebhookSender(
                http,
                settings.webhook_secret.get_secret_value(),
                allow=settings.webhook_allow_hosts,
            ),
            renderer=Renderer(),
            publisher=publisher,
            clock=clock,
            suppressions=suppressions,
            inbox=inbox,
            dead_letters=dead_letters,
        )
        try:
            await run_all(
                consume(consumer, deliverer, stop=stop),
                retry_loop(deliverer, stop=stop),
                run_backlog_gauges(engine, clock, stop=stop, every_s=common.metrics_every_s),
                serve_service(
                    create_api(
                        settings,
                        publisher,
                        clock,
                        suppressions=suppressions,
                        inbox=inbox,
                        log=log,
                        inbox_events=inbox_events,
                        stop=stop,
                    ),
                    settings,
                    port=settings.port,
                    stop=stop,
                ),
                stop=stop,
            )
        finally:
            await inbox_events.aclose()
            await mailer.aclose()
            await log.aclose()
            await consumer.stop()
            await publisher.stop()
            await engine.dispose()
