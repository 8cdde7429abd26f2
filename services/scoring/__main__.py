"""Run the scoring worker: ``python -m scoring``."""

import asyncio

from common.kafka import ensure_internal_topics, require_connection
from common.logging import configure_logging
from common.runtime import serve_metrics
from scoring.adapters import faust_app
from scoring.bootstrap import bootstrap
from scoring.settings import ScoringSettings


def main() -> None:
    settings = ScoringSettings()
    configure_logging("scoring", settings.common.log_level, settings.common.log_format)
    scoring = bootstrap(settings)  # loads the model first: a bad one stops here, named
    require_connection(settings.common, service="scoring")  # a refused login stops here
    # before faust subscribes: a topic it creates afterwards makes the group rebalance
    asyncio.run(ensure_internal_topics(settings.common, faust_app.internal_topics(scoring.topics)))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    faust_app.run(scoring.app, settings.common.log_level.lower())


if __name__ == "__main__":
    main()
