"""The one place where orchestrator settings become engines, clients and loops."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from common.apikeys import KeyCache, KeyRepository
from common.clock import Clock, clock_from_settings
from common.db import create_engine
from common.kafka import (
    DeadLetters,
    GroupLagProbe,
    KafkaPublisher,
    Sequential,
    make_consumer,
    run_consumer,
)
from common.outage import DatabaseUnavailable, ride_out
from common.runtime import run_all, serve_service
from common.topics import Topic
from orchestrator import metrics
from orchestrator.domain.playbook import load_playbooks
from orchestrator.entrypoints.analytics import analytics_handler
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.backlog import run_backlog_gauges, run_group_lag
from orchestrator.entrypoints.consumers import ROUTES, router
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.outcomes import outcome_handler
from orchestrator.entrypoints.relay import run_relay
from orchestrator.entrypoints.timers import lease_from_settings, run_held_triggers, run_timers
from orchestrator.service_layer.portfolio import share_settings
from orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)


async def _share_settings(
    engine: AsyncEngine, settings: OrchestratorSettings, stop: asyncio.Event
) -> None:
    """Once, as soon as PostgreSQL answers: the settings the dashboard's views read
    (``share_settings``). Stopping during an outage gives up; another failure (a schema
    not yet migrated to 0014) is logged, and the journeys go on."""
    try:
        await ride_out(
            lambda: share_settings(engine, settings.figure_rules()),
            what="writing the dashboard's settings",
            stop=stop,
        )
    except DatabaseUnavailable:
        pass  # stopping during an outage
    except Exception:
        log.exception("the dashboard's settings were not written: it keeps the previous ones")


async def run(
    settings: OrchestratorSettings,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    serve_api: bool = True,
) -> None:
    common = settings.common
    playbooks = load_playbooks(settings.playbooks_dir)
    engine = create_engine(common.database_url, pool_size=settings.database_pool_size)
    deps = Deps(
        engine=engine,
        playbooks=playbooks,
        clock=clock or clock_from_settings(common.time_scale, common.clock_epoch),
        topic_prefix=common.topic_prefix,
        rules=settings.rules(),
        default_currency=settings.default_currency,
    )
    publisher = KafkaPublisher(common, client_id="tenure-orchestrator")
    consumer = make_consumer(common, ROUTES, group_id=settings.group_id)
    outcomes = make_consumer(common, [Topic.DELIVERIES], group_id=f"{settings.group_id}-outcomes")
    analytics = make_consumer(
        common, [Topic.EVENTS_PAYMENT], group_id=f"{settings.group_id}-analytics"
    )
    keys = KeyCache(KeyRepository(engine), miss_reload_s=settings.keys_miss_reload_s)
    probe = GroupLagProbe(common)
    await publisher.start()
    await consumer.start()
    await outcomes.start()
    await analytics.start()
    await probe.start()
    try:
        loops = [
            _share_settings(engine, settings, stop),
            run_consumer(
                consumer,
                router(deps),
                DeadLetters(publisher, consumer_name="orchestrator", on_sent=metrics.dead_lettered),
                stop=stop,
                name="orchestrator consumer",
                strategy=Sequential(),
                report_lag=metrics.report_lag,
                lag_every_s=common.metrics_every_s,
            ),
            run_timers(
                deps,
                stop=stop,
                poll_s=settings.timer_poll_s,
                batch=settings.timer_batch,
                lease=lease_from_settings(settings),
                concurrency=settings.timer_concurrency,
            ),
            run_held_triggers(
                deps, stop=stop, poll_s=settings.trigger_poll_s, batch=settings.timer_batch
            ),
            run_relay(
                engine,
                common,
                stop=stop,
                poll_s=settings.relay_poll_s,
                batch=settings.relay_batch,
                transactional_id=f"{common.topic_prefix}orchestrator-relay",
            ),
            run_consumer(
                outcomes,
                outcome_handler(deps),
                DeadLetters(
                    publisher,
                    consumer_name="orchestrator-outcomes",
                    on_sent=metrics.dead_lettered,
                ),
                stop=stop,
                name="outcome consumer",
                strategy=Sequential(),
                report_lag=metrics.report_lag,
                lag_every_s=common.metrics_every_s,
            ),
            run_backlog_gauges(engine, deps.clock, stop=stop, every_s=common.metrics_every_s),
            run_group_lag(
                probe, settings.watched_groups, stop=stop, every_s=common.metrics_every_s
            ),
            run_consumer(
                analytics,
                analytics_handler(deps),
                DeadLetters(
                    publisher,
                    consumer_name="orchestrator-analytics",
                    on_sent=metrics.dead_lettered,
                ),
                stop=stop,
                name="analytics consumer",
                strategy=Sequential(),
                report_lag=metrics.report_lag,
                lag_every_s=common.metrics_every_s,
            ),
        ]
        if serve_api:
            api = create_api(deps, settings=settings, authenticator=keys)
            loops += [
                keys.run(stop, every_s=settings.keys_refresh_s),
                serve_service(api, settings, port=settings.port, stop=stop),
            ]
        await run_all(*loops, stop=stop)
    finally:
        await analytics.stop()
        await probe.stop()
        await outcomes.stop()
        await consumer.stop()
        await publisher.stop()
        await engine.dispose()
