"""What a dashboard is made of: a :class:`Dashboard` is rows of :class:`Panel`, each
panel one or more PromQL :class:`Query` (built with :mod:`devstack.dashboards.promql`).

Plain frozen data, no Grafana in it: :mod:`devstack.dashboards.grafana` lays it out as
Grafana's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel; ``alerts`` are the alert rules whose thresholds it draws."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    alerts: tuple[str, ...] = ()
    kind: str = "timeseries"
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    file: str = field(default="")

    @property
    def filename(self) -> str:
        return self.file or f"{self.uid}.json"
