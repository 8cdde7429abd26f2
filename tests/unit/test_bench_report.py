"""docs/BENCHMARKS.md's table of today's figures is written from bench/results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report

RESULTS = Path(report.__file__).with_name("results.json")


def entry(name: str, value: float, ratio: float, unit: str = "events/s") -> dict[str, object]:
    return {
        "name": name,
        "metric": "m",
        "value": value,
        "unit": unit,
        "baseline": "b",
        "baseline_value": value / ratio,
        "ratio": ratio,
        "command": "c",
    }


def test_the_committed_table_is_the_committed_results() -> None:
    entries = json.loads(RESULTS.read_text())
    assert report.block(report.DOCUMENT.read_text()) == report.render(entries)


def test_the_capacity_in_operations_md_is_the_committed_results() -> None:
    entries = json.loads(RESULTS.read_text())
    table = report.render_capacity(entries)
    assert report.block(report.OPERATIONS.read_text()) == table
    assert len(table.splitlines()) == 2 + len(report.CAPACITY)  # every capacity measured


def test_goals_are_judged_on_the_ratio_or_the_value() -> None:
    table = report.render(
        [
            entry("ingest_batch_throughput", 100.0, 0.4),
            entry("scoring_throughput", 100.0, 0.7),
            entry("ingest_single_latency_p99", 30.0, 3.0, unit="ms"),
            entry("kafka_producer_raw", 100.0, 1.0),
        ]
    )
    rows = table.splitlines()[2:]
    assert rows[0].endswith("| ratio ≥ 0.5: **missed** |")
    assert rows[1].endswith("| ratio ≥ 0.5: met |")
    assert rows[2].endswith("| < 25 ms: **missed** |")
    assert rows[3].endswith("|  |")


def test_update_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text(f"before\n{report.START}\nold\n{report.END}\nafter\n")
    report.update([entry("kafka_producer_raw", 5.0, 1.0)], doc)
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    with pytest.raises(ValueError, match="markers"):
        report.block("no markers here")
