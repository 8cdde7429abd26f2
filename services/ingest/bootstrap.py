"""The one place where ingest's settings become clients: the publisher, the key cache,
the clock and the rate limit. Tests pass fakes in instead; nothing connects before
:meth:`Ingest.running` is entered."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from common.apikeys import ApiKey, Authenticator, KeyCache, KeyRepository, Scope
from common.clock import Clock, clock_from_settings
from common.db import create_engine
from common.kafka import Publisher, TransactionalPublisher
from ingest.adapters import BoundedPublisher, RealTimeRateLimit, observe_transaction
from ingest.domain.admission import RateLimiter
from ingest.service import Policy, RateLimit
from ingest.settings import IngestSettings


@dataclass
class Ingest:
    """The use cases' dependencies, built from the settings, and what has to start and
    stop with the app (:meth:`running`)."""

    settings: IngestSettings
    publisher: BoundedPublisher
    clock: Clock
    limiter: RateLimit
    policy: Policy
    authenticator: Authenticator
    owned_publisher: TransactionalPublisher | None = None
    """The publisher made here (none was passed in): started and stopped here."""
    key_cache: KeyCache | None = None
    """The key cache made here: loaded from PostgreSQL while running, if the settings say."""
    tune_gc: bool = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start what was made here (the publisher; the key cache and its refresher), and
        stop it on exit. Blocks until Kafka lets the publisher start."""
        settings = self.settings
        stop = asyncio.Event()
        refresher = None
        engine = None
        if self.owned_publisher is not None:
            await self.owned_publisher.start()
        try:
            if self.key_cache is not None and settings.keys_from_database:
                engine = create_engine(
                    settings.common.database_url, pool_size=settings.database_pool_size
                )
                self.key_cache.repository = KeyRepository(engine)
                await self.key_cache.refresh()
                refresher = asyncio.create_task(
                    self.key_cache.run(stop, every_s=settings.keys_refresh_s)
                )
            if self.tune_gc and settings.gc_freeze:
                # A full collection walked all ~120,000 objects of the started process:
                # 65-160 ms with the event loop stopped, every few seconds at 500
                # requests/s, and 29 % more CPU an event on the batch path (measured:
                # docs/BENCHMARKS.md). What is alive now lives as long as the process.
                gc.collect()
                gc.freeze()
            yield
        finally:
            stop.set()
            if refresher is not None:
                with contextlib.suppress(Exception):
                    await refresher
            if engine is not None:
                await engine.dispose()
            if self.owned_publisher is not None:
                await self.owned_publisher.stop()


def bootstrap(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
    tune_gc: bool = False,
) -> Ingest:
    """Ingest's dependencies; what is not passed in is made from ``settings``.

    ``tune_gc``: freeze the garbage collector's view of the process once started (when
    ``settings.gc_freeze``); for the served process only, not for apps built in tests.
    """
    common = settings.common
    owned = None
    if publisher is None:
        owned = publisher = make_publisher(
            settings,
            transactional_id=f"{common.topic_prefix}ingest-{socket.gethostname()}-{os.getpid()}",
        )
    cache = None
    if authenticator is None:
        static = {}
        if settings.api_key is not None:
            static[settings.api_key.get_secret_value()] = ApiKey.static(
                "static", frozenset({Scope.EVENTS_WRITE})
            )
        authenticator = cache = KeyCache(static=static, miss_reload_s=settings.keys_miss_reload_s)
    return Ingest(
        settings=settings,
        publisher=BoundedPublisher(publisher, max_inflight=settings.max_inflight_events),
        clock=clock or clock_from_settings(common.time_scale, common.clock_epoch),
        limiter=RealTimeRateLimit(RateLimiter(settings.rate_per_key, settings.burst_per_key)),
        policy=Policy(
            max_future_skew=settings.max_future_skew,
            max_event_age=settings.max_event_age,
            max_batch_events=settings.max_batch_events,
            publish_timeout_s=settings.publish_timeout_s,
        ),
        authenticator=authenticator,
        owned_publisher=owned,
        key_cache=cache,
        tune_gc=tune_gc,
    )


def make_publisher(
    settings: IngestSettings, *, transactional_id: str, **overrides: Any
) -> TransactionalPublisher:
    """Ingest's publisher: group commit in Kafka transactions, tuned by the settings,
    reporting each transaction to ingest's metrics. Not started."""
    return TransactionalPublisher(
        settings.common,
        client_id="tenure-ingest",
        transactional_id=transactional_id,
        transaction_timeout_ms=int(settings.transaction_timeout_s * 1000),
        commit_reserve_s=settings.commit_reserve_s,
        max_group_records=settings.max_transaction_events,
        committers=settings.transaction_producers,
        spacing_s=settings.transaction_spacing_ms / 1000,
        observe=observe_transaction,
        **overrides,
    )
