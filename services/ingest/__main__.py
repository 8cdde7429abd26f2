"""Run the ingest API: ``python -m ingest``."""

import os
import shutil
import tempfile

import uvicorn

from common.kafka import require_connection
from common.logging import configure_logging
from common.metrics import MULTIPROCESS_ENV
from common.runtime import http_limits, serve_metrics
from ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", settings.common.log_level, settings.common.log_format)
    require_connection(settings.common, service="ingest")  # before any worker starts
    owned_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Workers inherit the variable: each writes its metrics there, /metrics sums them.
        owned_dir = os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="tenure-ingest-metrics-")
    limits = http_limits(settings)
    metrics = None
    if settings.metrics_port is not None:
        # In this process (the workers' supervisor when there are several), summing theirs.
        metrics = serve_metrics(settings.served_metrics_host, settings.metrics_port, limits)
    try:
        uvicorn.run(
            "ingest.api:build",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=None,
            access_log=False,
            http=limits.protocol(),
            timeout_keep_alive=limits.keep_alive_s,
        )
    finally:
        if metrics is not None:
            metrics.stop()
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
