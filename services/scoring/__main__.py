"""Run the scoring worker: ``python -m scoring``."""

import faust

from common.logging import configure_logging
from common.metrics import serve_metrics
from scoring.app import create_app
from scoring.domain.model import load_model
from scoring.settings import ScoringSettings


def main() -> None:
    settings = ScoringSettings()
    model = load_model(settings.model_path)  # fails fast, naming file and field
    configure_logging("scoring", settings.common.log_level, settings.common.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    app = create_app(settings, model)
    worker = faust.Worker(app, loglevel=settings.common.log_level.lower(), redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
