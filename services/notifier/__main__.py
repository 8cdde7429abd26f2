"""Run the notifier: ``python -m notifier``."""

from common.kafka import require_connection
from common.logging import configure_logging
from common.runtime import run_until_signal
from notifier.bootstrap import run
from notifier.settings import NotifierSettings


def main() -> None:
    # The required fields come from TENURE_NOTIFIER_* (mypy sees only the constructor).
    settings = NotifierSettings()  # type: ignore[call-arg]
    configure_logging("notifier", settings.common.log_level, settings.common.log_format)
    require_connection(settings.common, service="notifier")  # a refused login stops here
    run_until_signal(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
