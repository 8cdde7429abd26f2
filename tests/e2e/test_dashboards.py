"""Every panel of every dashboard against the real Prometheus of the test stack, after a
short run of the four services in which a churning customer gets the retention offer by
email: each expression parses (``/api/v1/query`` answers ``success``, Grafana's variables
replaced as Grafana would), and each returns at least one series, but for those listed in
:data:`NO_DATA_YET` with the reason the run cannot give them data.

Prometheus is set up as in the fault drills (tests/e2e/test_alert_drill.py): every job
scraped and the deployed rules (deploy/prometheus/alerts.yml) evaluated every second."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack import dashboards, prometheus
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import SERVICES, Stack
from tests.e2e.journeys import NO_QUIET_HOURS, new_customer
from tests.e2e.test_retention_offer import churning_customer, emails_to, post, wait_for

# No quiet hours: held by them, the offer would not be the immediate reaction the latency
# panels count (the stack's clock may stand at any hour when this module runs).
RUN_ENV = {"TENURE_METRICS_EVERY_S": "1", **NO_QUIET_HOURS}
FOLDER = dashboards.FOLDER

# (panel title,) or (panel title, refId), in whichever dashboard: no series after the run,
# and why. A listed query that does return data is printed, not failed.
_NOTHING_FAILS = "nothing fails in the run"
NO_DATA_YET: dict[tuple[str, ...], str] = {
    # What fails, is refused, retried or dead-lettered: nothing in the run.
    ("Errors by service", "A"): "no 5xx answer",
    ("Errors by service", "B"): "no invalid event reaches scoring (ingest rejects it)",
    ("Errors by service", "C"): "no timer fails",
    ("Errors by service", "D"): _NOTHING_FAILS,
    ("Ingest 5xx ratio",): "no 5xx answer",
    ("Invalid inputs",): "no invalid input reaches scoring (ingest rejects it)",
    ("Delivery failure ratio by channel",): _NOTHING_FAILS,
    ("Send failures by error class",): _NOTHING_FAILS,
    ("Attempt failures by kind",): _NOTHING_FAILS,
    ("Dead letters",): _NOTHING_FAILS,
    ("Taken over after a crash",): "no notifier dies with a message in flight",
    ("Links refused",): "no link is followed",
    ("Timer failures",): "no timer fails",
    ("Consumer dead letters",): "every record is readable",
    # Business the run does not do.
    ("Conversions",): "no payment meets a journey's goal",
    ("MRR movements",): "no payment event",
    ("Erasures", "A"): "no customer is erased",
    ("Redemptions",): "no loyalty redemption",
    ("Cohorts", "A"): "the run's customer changes no plan cohort's counts",
    ("Engagement tracked",): "nobody opens, clicks or unsubscribes",
    ("In-app inbox", "A"): "no inbox API request",
}


@pytest.fixture(scope="module")
def prometheus_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not prometheus.BINARY.exists():
        pytest.skip("`make prometheus` could not fetch Debian's package")
    for name in SERVICES:
        stack.start_service(name, RUN_ENV)
    home: Path = tmp_path_factory.mktemp("dashboards-prometheus")
    config = prometheus.test_config(
        stack.service_ports(), [prometheus.DEPLOY_CONFIG.with_name("alerts.yml")]
    )
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = spawn(
        prometheus.command(home / "prometheus.yml", home / "data", port),
        log_path=home / "prometheus.log",
        cwd=home,
    )
    try:
        stack.wait_ready()
        wait_for_port(port, timeout=30, proc=proc)
        ingest = f"http://127.0.0.1:{stack.ports.ingest}/readyz"
        wait_for(lambda: httpx.get(ingest, timeout=5).status_code == 200, 60, "ingest ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        stack.stop_services(SERVICES)


def queries() -> list[tuple[tuple[str, str, str], str]]:
    """((file, panel title, refId), PromQL) of every Prometheus query of every dashboard."""
    return [
        ((path.name, title, ref), dashboards.as_promql(expr))
        for path in sorted(FOLDER.glob("*.json"))
        for title, ref, expr in dashboards.prometheus_targets(path)
    ]


def exempt(key: tuple[str, str, str]) -> bool:
    _, title, ref = key
    return (title,) in NO_DATA_YET or (title, ref) in NO_DATA_YET


def ask(client: httpx.Client, expr: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.get("/api/v1/query", params={"query": expr}).json()
    return answer


def test_every_panel_parses_and_those_that_should_have_data_do(
    stack: Stack, prometheus_url: str
) -> None:
    all_queries = queries()
    assert len(all_queries) > 80
    customer = new_customer("dash")  # in the treatment arm (the holdout sends nothing)
    churning_customer(stack, customer)
    invalid = post(stack, {"event_id": str(uuid.uuid4()), "customer_id": customer})
    assert invalid.status_code == 422  # a rejection, for the rejection panels
    seen: set[tuple[str, str, str]] = set()  # a gauge may come and go (a journey ends)
    with httpx.Client(base_url=prometheus_url, timeout=10) as client:
        for key, expr in all_queries:
            answer = ask(client, expr)
            assert answer["status"] == "success", (key, expr, answer)
        deadline = time.monotonic() + 240  # scoring joins its group slowly on a busy machine
        while True:
            seen |= {key for key, expr in all_queries if ask(client, expr)["data"]["result"]}
            sent = emails_to(stack.mail_dir, f"{customer}@example.com")
            missing = [key for key, _ in all_queries if key not in seen and not exempt(key)]
            if (sent and not missing) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert sent, "the retention offer was not sent"
    assert not missing, "no series:\n" + "\n".join(map(str, missing))
    stale = sorted({key[1:] for key in seen if exempt(key)})
    print(f"{len(all_queries)} queries parse; listed without data, yet answered: {stale}")
