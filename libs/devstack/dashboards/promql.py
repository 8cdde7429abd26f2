"""The PromQL the panels are written in: ``rate``, ``increase``, ``quantile`` of a
histogram, the delivery failure ratio, p50 and p99 pairs, and :func:`q` that makes a
query of an expression and its legend. ``$__rate_interval`` is Grafana's, replaced when
a query is sent to Prometheus (:func:`devstack.dashboards.grafana.as_promql`)."""

from __future__ import annotations

from devstack.dashboards.model import Query

RATE = "$__rate_interval"
JOBS = "ingest|scoring|orchestrator|notifier"
REQUESTS = 'route!~"/metrics.*|/healthz"'
"""The HTTP requests that count: scrapes and health checks left out."""


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def rate(metric: str, by: str = "", selector: str = "") -> str:
    """``sum by (by) (rate(metric{selector}[$__rate_interval]))``."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{selector}}}[{RATE}]))".replace("{}", "")


def increase(metric: str, by: str = "", selector: str = "") -> str:
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(increase({metric}{{{selector}}}[{RATE}]))".replace("{}", "")


def quantile(phi: float, histogram: str, by: str = "", selector: str = "") -> str:
    """The ``phi`` quantile of a histogram over the rate interval, by ``by``."""
    keys = ", ".join(["le", *([by] if by else [])])
    inner = f"sum by ({keys}) (rate({histogram}_bucket{{{selector}}}[{RATE}]))".replace("{}", "")
    return f"histogram_quantile({phi}, {inner})"


def failure_ratio(channels: str, by: str = "channel") -> str:
    """Failed attempts / attempts (failed + sent): the delivery alerts' ratio."""
    sel = f'channel=~"{channels}"'
    failed = rate("tenure_notifier_send_failures_total", by, sel)
    sent = rate("tenure_notifier_notifications_total", by, f'{sel},outcome="sent"')
    return f"{failed} / ({failed} + ({sent} or 0 * {failed}))"


def p50_p99(histogram: str, what: str, by: str = "", selector: str = "") -> tuple[Query, ...]:
    label = f" {{{{{by}}}}}" if by else ""
    return (
        q(quantile(0.5, histogram, by, selector), f"{what}{label} p50"),
        q(quantile(0.99, histogram, by, selector), f"{what}{label} p99"),
    )
