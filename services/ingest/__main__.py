"""Run the ingest API: ``python -m ingest``."""

import uvicorn

from common.logging import configure_logging
from ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", settings.common.log_level, settings.common.log_format)
    uvicorn.run(
        "ingest.app:build",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
