"""Run the scoring worker: ``python -m scoring``."""

import sys

import faust

from common.logging import configure_logging
from common.runtime import serve_metrics
from scoring.app import create_app
from scoring.domain.model import load_model
from scoring.settings import ScoringSettings


def main() -> None:
    settings = ScoringSettings()
    # faust runs its Kafka consumer in a thread; with the default 5 ms GIL switch interval
    # every producer socket write waited for that thread (see docs/BENCHMARKS.md).
    sys.setswitchinterval(settings.gil_switch_interval_s)
    model = load_model(settings.model_path)  # fails fast, naming file and field
    configure_logging("scoring", settings.common.log_level, settings.common.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    app = create_app(settings, model)
    worker = faust.Worker(app, loglevel=settings.common.log_level.lower(), redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
