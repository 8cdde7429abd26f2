"""Grafana's JSON: :func:`render` lays a :class:`~devstack.dashboards.model.Dashboard` out
as Grafana's dashboard model (rows, then panels left to right on a 24-column grid, the
alert thresholds drawn as lines), :func:`write` puts the files where Grafana's
provisioning and the Helm chart read them; :func:`as_promql` and
:func:`prometheus_targets` read a written file back as the queries Grafana sends to
Prometheus (the tests run them on a real one)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devstack.dashboards.alerts import alert_thresholds
from devstack.dashboards.model import Dashboard, Panel

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / "deploy" / "grafana" / "dashboards"
CHART_FOLDER = REPO / "deploy" / "helm" / "tenure" / "files" / "dashboards"
"""The Helm chart's copies (Helm reads no file outside the chart)."""
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def _thresholds(panel: Panel) -> dict[str, Any]:
    values = sorted({v for alert in panel.alerts for v in alert_thresholds(alert)})
    colours = ["red"] if len(values) == 1 else ["orange", "red"] * len(values)
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colours[i], "value": v} for i, v in enumerate(values)]
    return {"mode": "absolute", "steps": steps}


def _panel(panel: Panel, panel_id: int, x: int, y: int, height: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.alerts:
        defaults["thresholds"] = _thresholds(panel)
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    options: dict[str, Any] = {
        "legend": {"displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
        }
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up"}},
            }
        ]
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "refId": chr(ord("A") + i),
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model: rows, then panels left to right."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in dashboard.rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        height = 4 if all(p.kind == "stat" for p in row.panels) else 8
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + height
            panels.append(_panel(panel, next_id, x, y, height))
            next_id += 1
            x += panel.width
        y += height
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["tenure"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["tenure"],
                "asDropdown": True,
                "title": "Tenure dashboards",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}
"""What Grafana puts in place of its variables, as a query to Prometheus would have them
(``$__rate_interval`` is at least four scrape intervals: one minute at 15 s)."""


def as_promql(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """A panel's expression as Grafana sends it to Prometheus (its variables replaced)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def prometheus_targets(path: Path) -> list[tuple[str, str, str]]:
    """(panel title, refId, expression) of every Prometheus query of a dashboard file,
    rows' nested panels included; other datasources' targets are left out."""
    model = json.loads(path.read_text())
    panels = [p for top in model["panels"] for p in [top, *top.get("panels", [])]]
    return [
        (panel["title"], target.get("refId", ""), target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def as_text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"


def write(
    dashboards: Iterable[Dashboard], folders: tuple[Path, ...] = (FOLDER, CHART_FOLDER)
) -> list[Path]:
    """Write each of ``dashboards`` into each of ``folders``; the paths written."""
    paths = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for dashboard in dashboards:
            path = folder / dashboard.filename
            path.write_text(as_text(dashboard))
            paths.append(path)
    return paths
