"""The chart's one Grafana value group (``grafana.*`` in deploy/helm/tenure/values.yaml):
one label setting per sidecar and one folder for every dashboard, the Prometheus ones
(``grafana.dashboards``) and the business one (``grafana.business``) alike, and chart
0.1.0's keys refused with the name of the key that replaced them, not ignored.

What each dashboard holds: tests/unit/test_dashboards.py and test_deploy_analytics.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.helm_chart import MINIMAL, PRODUCTION, render, render_error

BOTH = (
    "grafana.dashboards.enabled=true",
    "grafana.business.enabled=true",
    "grafana.business.datasource.host=db.example.internal:5432",
    "grafana.business.datasource.existingSecret=analytics",
)


def dashboard_maps(objects: list[Any]) -> dict[str, dict[str, Any]]:
    """The ConfigMaps holding a dashboard (a .json key), by name."""
    return {
        obj["metadata"]["name"]: obj
        for obj in objects
        if obj["kind"] == "ConfigMap" and any(key.endswith(".json") for key in obj["data"])
    }


def datasource(objects: list[Any]) -> dict[str, Any]:
    (found,) = [
        obj
        for obj in objects
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        == "grafana-datasource"
    ]
    return dict(found)


def test_one_label_and_folder_setting_reaches_every_dashboard() -> None:
    objects = render(
        (MINIMAL,),
        (
            *BOTH,
            "grafana.sidecarLabels.dashboard.boards=tenure",
            "grafana.sidecarLabels.datasource.sources=tenure",
            "grafana.folder=Retention",
        ),
    )
    maps = dashboard_maps(objects)
    assert len(maps) == 6  # the overview, one per service, the business dashboard
    for name, cm in maps.items():
        labels = cm["metadata"]["labels"]
        assert labels["boards"] == "tenure", name
        assert labels["grafana_dashboard"] == "1", name  # the default stays with a new label
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Retention"}, name
        assert "sources" not in labels, name
    assert datasource(objects)["metadata"]["labels"]["sources"] == "tenure"


def test_each_part_is_enabled_on_its_own() -> None:
    prometheus = dashboard_maps(render((MINIMAL,), ("grafana.dashboards.enabled=true",)))
    assert len(prometheus) == 5
    assert not [cm for cm in prometheus.values() if "tenure-business.json" in cm["data"]]
    business = render((MINIMAL,), BOTH[1:])
    assert [list(cm["data"]) for cm in dashboard_maps(business).values()] == [
        ["tenure-business.json"]
    ]
    assert datasource(business)["kind"] == "ConfigMap"  # the password from Grafana's env
    assert not dashboard_maps(render((MINIMAL,)))


def test_the_production_example_enables_both() -> None:
    maps = dashboard_maps(render((PRODUCTION,), ("image.repository=r/tenure",)))
    assert len(maps) == 6


@pytest.mark.parametrize(
    ("given", "old", "new"),
    [
        ("grafana.enabled=true", "grafana.enabled", "grafana.business.enabled"),
        ("grafana.analytics.host=db:5432", "grafana.analytics", "grafana.business.datasource"),
        (
            "grafana.dashboardLabels.a=b",
            "grafana.dashboardLabels",
            "grafana.sidecarLabels.dashboard",
        ),
        (
            "grafana.datasourceLabels.a=b",
            "grafana.datasourceLabels",
            "grafana.sidecarLabels.datasource",
        ),
        (
            "grafanaDashboards.enabled=true",
            "grafanaDashboards.enabled",
            "grafana.dashboards.enabled",
        ),
        (
            "grafanaDashboards.enabled=false",
            "grafanaDashboards.enabled",
            "grafana.dashboards.enabled",
        ),
        (
            "grafanaDashboards.labels.a=b",
            "grafanaDashboards.labels",
            "grafana.sidecarLabels.dashboard",
        ),
        ("grafanaDashboards.folder=Retention", "grafanaDashboards.folder", "grafana.folder"),
    ],
)
def test_chart_0_1_0_keys_are_refused_naming_the_new_one(given: str, old: str, new: str) -> None:
    assert f"{old} is now {new} (chart 0.2.0" in render_error((MINIMAL,), (given,))
