"""``python -m devstack run | sinks``: the local stack's command line."""

from __future__ import annotations

import signal
import sys
import time
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.logging import resolve_format
from common.settings import TenureSettings
from devstack import prometheus as prometheus_files
from devstack.history import span
from devstack.simulator import SimulatorSettings
from devstack.stack import REPO, Stack


class RunSettings(TenureSettings):
    """What ``make run`` reads: ``TENURE_DATABASE_URL`` (external PostgreSQL) and the clock."""

    model_config = SettingsConfigDict(env_prefix="TENURE_", extra="ignore", frozen=True)

    database_url: str | None = None
    time_scale: float = Field(default=1440.0, gt=0, description="1440: a simulated day a minute.")
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="How the services' log lines are shown on the terminal (the files in "
        ".stack/logs are JSON); unset: text on a terminal, JSON otherwise.",
    )


def banner(stack: Stack, *, with_prometheus: bool) -> str:
    p = stack.ports
    env = stack.env()
    prometheus = (
        f"http://127.0.0.1:{p.prometheus}/graph"
        if with_prometheus
        else "not started (`make prometheus` could not fetch Debian's package)"
    )
    alerts = (
        f"http://127.0.0.1:{p.prometheus}{prometheus_files.ALERTS_PAGE}"
        "  (rules: deploy/prometheus/alerts.yml, what to do: docs/runbooks.md)"
        if with_prometheus
        else "no Prometheus, no alerts"
    )
    now = stack.clock().now().strftime("%Y-%m-%d %H:%M UTC")
    clock = (
        f"{now}, resumed where the last run stopped (data kept in {stack.root};"
        " `make clean` starts afresh)"
        if stack.resumed_from is not None
        else f"{now}, a new clock (no earlier run in {stack.root})"
    )
    return f"""
Tenure is running (a simulated day passes every {86400 / stack.time_scale:.0f} s).

  Simulated clock      {clock}

  Ingest API docs      http://127.0.0.1:{p.ingest}/docs     (API key: {stack.api_key})
  Metrics              ingest       http://127.0.0.1:{p.ingest}/metrics
                       scoring      http://127.0.0.1:{p.scoring_metrics}/metrics
                       orchestrator http://127.0.0.1:{p.orchestrator}/metrics
                       notifier     http://127.0.0.1:{p.notifier}/metrics
  Prometheus           {prometheus}
  Alerts               {alerts}
  Kafka                {stack.kafka.bootstrap}
  PostgreSQL           {stack.database_url}
  Emails (.eml)        {stack.mail_dir}
  Notifier links       {env["TENURE_NOTIFIER_PUBLIC_URL"]}  (development only: http allowed by
                       TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL={env["TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL"]})
  Webhooks (.json)     {stack.webhook_dir}
  Logs                 {stack.log_dir}

Press Ctrl-C to stop everything.
"""


def run() -> int:
    settings = RunSettings()
    stack = Stack(
        root=REPO / ".stack",
        time_scale=settings.time_scale,
        database_url=settings.database_url,
        echo=sys.stdout,
        echo_format=resolve_format(settings.log_format, sys.stdout),
        # The simulator's past months go through ingest with their own timestamps.
        ingest_max_event_age=span(SimulatorSettings().history_rates()) or None,
    )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        started = time.monotonic()
        print("Starting Kafka, PostgreSQL and the sinks...", flush=True)
        stack.start_infra()
        print("Starting the services and the simulator...", flush=True)
        stack.start_services()
        stack.start_service("simulator")
        with_prometheus = stack.start_prometheus()
        print(banner(stack, with_prometheus=with_prometheus), flush=True)
        print(f"(ready in {time.monotonic() - started:.1f} s)", flush=True)
        while not stopping:
            stack.save_clock()  # a killed run resumes from here, not from today
            dead = stack.dead()
            if dead:
                print(f"A process stopped unexpectedly: {dead}; see {stack.log_dir}", flush=True)
                code = 1
                break
            time.sleep(0.5)
    finally:
        print("Stopping...", flush=True)
        stack.stop()
        print("Stopped.", flush=True)
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "sinks"):
        print("usage: python -m devstack run | sinks ...", file=sys.stderr)
        return 2
    if argv[0] == "run":
        return run()
    from devstack.sinks import main as sinks_main

    sinks_main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
