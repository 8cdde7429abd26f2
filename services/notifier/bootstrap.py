"""The one place where notifier settings become clients, use cases and loops.

:func:`stores` builds the PostgreSQL adapters (nothing connects until used),
:func:`deliverer` the delivery use cases over the real adapters, :func:`run` the whole
process: the consumer of ``notifications``, the retry worker and the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import Clock, clock_from_settings
from common.db import create_engine
from common.kafka import DeadLetters, KafkaPublisher, Publisher, make_consumer
from common.runtime import run_all, serve_service
from common.topics import Topic
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox, InboxEvents
from notifier.adapters.mailer import SmtpMailer
from notifier.adapters.suppressions import Suppressions
from notifier.adapters.webhooks import WebhookSender, vetted_client
from notifier.domain.render import Renderer
from notifier.entrypoints.backlog import run_backlog_gauges
from notifier.entrypoints.deliver import Deliverer, consume, retry_loop
from notifier.settings import NotifierSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stores:
    """The notifier's PostgreSQL adapters, on one engine."""

    engine: AsyncEngine
    log: DeliveryLog
    suppressions: Suppressions
    inbox: Inbox

    async def aclose(self) -> None:
        await self.log.aclose()
        await self.engine.dispose()


def stores(settings: NotifierSettings) -> Stores:
    """The PostgreSQL adapters of ``settings``; nothing connects until one is used."""
    engine = create_engine(settings.common.database_url, pool_size=settings.database_pool_size)
    return Stores(
        engine=engine,
        log=DeliveryLog(engine),
        suppressions=Suppressions(engine),
        inbox=Inbox(engine, channel=settings.inbox_channel),
    )


def inbox_events(settings: NotifierSettings, inbox: Inbox, *, stop: asyncio.Event) -> InboxEvents:
    """The listener that wakes the inbox's open streams (it connects when one opens)."""
    return InboxEvents(
        inbox.engine, channel=inbox.channel, retry_s=settings.inbox_listen_retry_s, stop=stop
    )


def webhook_client(settings: NotifierSettings) -> httpx.AsyncClient:
    return vetted_client(
        allow=settings.webhook_allow_hosts,
        timeout_s=settings.webhook_timeout_s,
        max_connections=settings.webhook_max_connections,
    )


def deliverer(
    settings: NotifierSettings,
    *,
    stores: Stores,
    publisher: Publisher,
    clock: Clock,
    http: httpx.AsyncClient,
    mailer: SmtpMailer,
) -> Deliverer:
    """The delivery use cases over the real adapters."""
    return Deliverer(
        settings=settings,
        log=stores.log,
        mailer=mailer,
        webhooks=WebhookSender(
            http, settings.webhook_secret.get_secret_value(), allow=settings.webhook_allow_hosts
        ),
        renderer=Renderer(),
        publisher=publisher,
        clock=clock,
        suppressions=stores.suppressions,
        inbox=stores.inbox,
        dead_letters=DeadLetters(
            publisher, consumer_name="notifier", on_sent=metrics.dead_lettered
        ),
    )


async def run(
    settings: NotifierSettings, stop: asyncio.Event, *, clock: Clock | None = None
) -> None:
    """Run the notifier until ``stop``: consumer, retry worker and HTTP API."""
    # Imported here: the API builds its default stores with stores() above.
    from notifier.entrypoints.api import create_api

    common = settings.common
    if not settings.public_url.startswith("https://"):
        logger.warning(
            "development mode: links and List-Unsubscribe use http (%s), which mailbox "
            "providers do not honour; TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL is set",
            settings.public_url,
        )
    clock = clock or clock_from_settings(common.time_scale, common.clock_epoch)
    db = stores(settings)
    publisher = KafkaPublisher(
        common, client_id="tenure-notifier", linger_ms=settings.producer_linger_ms
    )
    consumer = make_consumer(common, [Topic.NOTIFICATIONS], group_id=settings.group_id)
    events = inbox_events(settings, db.inbox, stop=stop)
    mailer = SmtpMailer(settings)
    async with webhook_client(settings) as http:
        await publisher.start()
        await consumer.start()
        delivering = deliverer(
            settings, stores=db, publisher=publisher, clock=clock, http=http, mailer=mailer
        )
        api = create_api(
            settings,
            publisher,
            clock,
            suppressions=db.suppressions,
            inbox=db.inbox,
            log=db.log,
            inbox_events=events,
            stop=stop,
        )
        try:
            await run_all(
                consume(consumer, delivering, stop=stop),
                retry_loop(delivering, stop=stop),
                run_backlog_gauges(db.engine, clock, stop=stop, every_s=common.metrics_every_s),
                serve_service(api, settings, port=settings.port, stop=stop),
                stop=stop,
            )
        finally:
            await events.aclose()
            await mailer.aclose()
            await consumer.stop()
            await publisher.stop()
            await db.aclose()
