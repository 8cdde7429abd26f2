"""Tenure's Grafana dashboards as code: ``python -m devstack.dashboards`` writes them to
``deploy/grafana/dashboards/`` (``make dashboards``), where Grafana's provisioning reads
them, and to the Helm chart's ``files/dashboards/``; tests/unit/test_dashboards.py fails
when the committed JSON is not what this package makes.

One overview (the golden signals of every service, the business flow, the
event-to-notification latency and the stalls the alerts watch) and one dashboard per
service. A panel that shows what an alert watches names the alert in its description and
draws its threshold, read from ``deploy/prometheus/alerts.yml`` (the one place the
numbers live); the test checks the drawn values against the rules.

The modules: ``model`` (dashboard, row, panel, query), ``promql`` (the query builders),
``alerts`` (the rules' thresholds), ``panels`` (those on several dashboards), one module
per dashboard (``overview``, ``ingest``, ``scoring``, ``orchestrator``, ``notifier``) and
``grafana`` (the JSON, and reading it back as Prometheus queries). This module names
the dashboards and re-exports what the Makefile and the tests use.
"""

from __future__ import annotations

from devstack.dashboards.alerts import alert_thresholds
from devstack.dashboards.grafana import (
    CHART_FOLDER,
    FOLDER,
    GRAFANA_VARIABLES,
    as_promql,
    as_text,
    prometheus_targets,
    render,
    write,
)
from devstack.dashboards.ingest import INGEST
from devstack.dashboards.model import Dashboard, Panel, Query, Row
from devstack.dashboards.notifier import NOTIFIER
from devstack.dashboards.orchestrator import ORCHESTRATOR
from devstack.dashboards.overview import OVERVIEW
from devstack.dashboards.scoring import SCORING

DASHBOARDS = (OVERVIEW, INGEST, SCORING, ORCHESTRATOR, NOTIFIER)
"""Every dashboard, the overview first; ``write(DASHBOARDS)`` makes the files."""

__all__ = [
    "CHART_FOLDER",
    "DASHBOARDS",
    "FOLDER",
    "GRAFANA_VARIABLES",
    "Dashboard",
    "Panel",
    "Query",
    "Row",
    "alert_thresholds",
    "as_promql",
    "as_text",
    "prometheus_targets",
    "render",
    "write",
]
