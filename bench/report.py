"""Today's figures in ``docs/BENCHMARKS.md`` and the capacity table of
``docs/operations.md``, written from ``bench/results.json``.

``make bench`` (``python -m bench``) rewrites the tables between the two markers below
after every run, so the documents and the results file never disagree; a unit test
checks that the committed tables match the committed results. Goals live here, beside
the benchmarks they judge: a goal is a bound on the ratio or on the value of one entry.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START = "<!-- figures: written by `make bench` from bench/results.json; do not edit by hand -->"
END = "<!-- end of figures -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCUMENT = DOCS / "BENCHMARKS.md"
OPERATIONS = DOCS / "operations.md"


@dataclass(frozen=True)
class Goal:
    """``field`` (ratio or value) compared with ``bound`` by ``op`` (``>=`` or ``<``)."""

    field: str
    op: str
    bound: float

    def met(self, entry: Mapping[str, Any]) -> bool:
        compare: Callable[[float, float], bool] = {">=": operator.ge, "<": operator.lt}[self.op]
        return compare(float(entry[self.field]), self.bound)

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "<"
        bound = f"{self.bound:g}"
        return f"ratio {sign} {bound}" if self.field == "ratio" else f"{sign} {bound} {unit}"


GOALS: dict[str, Goal] = {
    "ingest_batch_throughput": Goal("ratio", ">=", 0.5),
    "ingest_single_latency_p99": Goal("value", "<", 25.0),
    "notifier_email_throughput": Goal("ratio", ">=", 0.5),
    "notifier_webhook_throughput": Goal("ratio", ">=", 0.5),
    "scoring_throughput": Goal("ratio", ">=", 0.5),
    "orchestrator_timers_one_replica": Goal("ratio", ">=", 1.0),
    "orchestrator_timers_two_replicas": Goal("ratio", ">=", 1.6),
    "orchestrator_timers_vs_bare_loop": Goal("ratio", ">=", 0.5),
    "orchestrator_timer_lateness_full_p99": Goal("value", "<", 2.0),
    # the latency objective of the alert rules (decisions.md, "Operations ... (issue 16)")
    "event_to_notification_latency_p99": Goal("value", "<", 60_000.0),
}


# What one process of a service does, by the entry that measures it (operations.md).
CAPACITY: dict[str, str] = {
    "ingest_batch_throughput": "events/s through one ingest worker, batches of 500",
    "ingest_batch_two_workers": "events/s through two ingest workers (one host)",
    "ingest_single_latency_p99": "p99 of a single-event POST at a steady load",
    "scoring_throughput": "events/s scored by one scoring worker",
    "orchestrator_timers_one_replica": "timers/s fired by one orchestrator replica",
    "orchestrator_timers_two_replicas": "timers/s fired by two orchestrator replicas",
    "notifier_email_throughput": "emails/s sent by one notifier (local SMTP sink)",
    "notifier_webhook_throughput": "webhooks/s sent by one notifier (local receiver)",
}


def _number(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:,.3g}"


def render(entries: list[dict[str, Any]]) -> str:
    """The table of ``entries`` (results.json), one row each, in their order."""
    lines = [
        "| name | value | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for e in entries:
        goal = GOALS.get(e["name"])
        judged = (
            ""
            if goal is None
            else f"{goal.text(e['unit'])}: {'met' if goal.met(e) else '**missed**'}"
        )
        lines.append(
            f"| `{e['name']}` | {_number(e['value'])} {e['unit']} | "
            f"{_number(e['baseline_value'])} | {e['ratio']:.3g} | {judged} |"
        )
    return "\n".join(lines)


def render_capacity(entries: list[dict[str, Any]]) -> str:
    """The capacity table: the entries of :data:`CAPACITY`, with their commands."""
    by_name = {e["name"]: e for e in entries}
    lines = ["| what | measured | command |", "|---|---:|---|"]
    for name, what in CAPACITY.items():
        if name in by_name:
            e = by_name[name]
            lines.append(f"| {what} | {_number(e['value'])} {e['unit']} | `{e['command']}` |")
    return "\n".join(lines)


def block(text: str) -> str:
    """What stands between the markers of ``text``; ValueError if they are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError("the figure markers are missing")
    return text[start + len(START) : end].strip("\n")


def update(
    entries: list[dict[str, Any]],
    document: Path = DOCUMENT,
    render: Callable[[list[dict[str, Any]]], str] = render,
) -> None:
    """Rewrite the table between the markers of ``document``."""
    text = document.read_text()
    block(text)  # the markers are there
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    document.write_text(f"{before}{START}\n{render(entries)}\n{END}{after}")


def update_all(entries: list[dict[str, Any]]) -> None:
    """Both documents: the figures in BENCHMARKS.md, the capacity in operations.md."""
    update(entries, DOCUMENT, render)
    update(entries, OPERATIONS, render_capacity)
