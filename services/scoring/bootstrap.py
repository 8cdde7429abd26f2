"""The scoring worker's composition root: settings become the app, its stores and agents.

Nothing connects here; the faust worker starts everything (:func:`scoring.__main__.main`).
Unit tests pass a fake clock and a list sink and drive the agents with faust's
``agent.test_context()``: the same RocksDB tables and write path as production, the
changelog records and the worker's records in the list instead of Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from common.clock import Clock, clock_from_settings
from scoring.adapters import faust_app
from scoring.adapters.cohort_stats import CohortStatsFollower
from scoring.domain.model import ScoringModel, load_model
from scoring.domain.value import CohortStats
from scoring.entrypoints.agents import Sweep, Worker
from scoring.ports import Sink
from scoring.service import Deps, Topics
from scoring.settings import ScoringSettings


@dataclass(frozen=True)
class Scoring:
    """The wired worker: the faust app and what tests look at."""

    app: Any  # faust.App
    agents: dict[str, Any]  # name → faust agent (events, deliveries, ticks, erasures, cohorts)
    tables: faust_app.Tables
    worker: Worker
    sweep: Sweep
    cohort_stats: dict[str, CohortStats]  # each plan's pooled counts, as the rules read them
    topics: Topics


def bootstrap(
    settings: ScoringSettings,
    *,
    model: ScoringModel | None = None,
    clock: Clock | None = None,
    sink: Sink | None = None,
) -> Scoring:
    """Wire the worker. Without ``sink`` records go to Kafka through the app's producer and
    every worker follows ``cohort-stats``; with one (tests) they go there and nothing
    outside the agents runs."""
    common = settings.common
    model = model or load_model(settings.model_path)  # fails fast, naming file and field
    clock = clock or clock_from_settings(common.time_scale, common.clock_epoch)
    topics = Topics.from_settings(settings)
    app = faust_app.make_app(settings)
    tables = faust_app.Tables(app, settings)
    cohort_stats: dict[str, CohortStats] = {}
    follower = None
    if sink is None:
        stats = faust_app.stats_topic(app, topics)
        sink = faust_app.FaustSink(app, declare={topics.cohort_stats: stats})
        follower = CohortStatsFollower(
            common, topics.cohort_stats, cohort_stats, before=stats.maybe_declare
        ).run
    deps = Deps(model=model, topics=topics, cohorts=cohort_stats)
    states = faust_app.FaustStateStore(tables.states, sink)
    worker = Worker(
        states=states,
        cohort_rows=faust_app.FaustRowStore(tables.cohorts),
        sink=sink,
        deps=deps,
        cohorts=cohort_stats,
        clock=clock,
    )
    sweep = Sweep(
        states=states,
        sink=sink,
        deps=deps,
        clock=clock,
        min_age=timedelta(seconds=settings.sweep_min_age_s),
        batch=settings.sweep_batch,
    )
    agents = faust_app.register(
        app,
        settings=settings,
        topics=topics,
        tables=tables,
        worker=worker,
        sweep=sweep,
        follow_cohort_stats=follower,
    )
    return Scoring(app, agents, tables, worker, sweep, cohort_stats, topics)
