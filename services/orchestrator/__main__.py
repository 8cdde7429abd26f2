"""Run the orchestrator: ``python -m orchestrator``."""

from common.kafka import require_connection
from common.logging import configure_logging
from common.runtime import run_until_signal
from orchestrator.bootstrap import run
from orchestrator.settings import OrchestratorSettings


def main() -> None:
    settings = OrchestratorSettings()
    configure_logging("orchestrator", settings.common.log_level, settings.common.log_format)
    require_connection(settings.common, service="orchestrator")  # a refused login stops here
    run_until_signal(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
