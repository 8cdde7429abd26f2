"""``python -m bench [NAME ...]``: run the benchmarks against a Kafka broker of their own.

The runner starts a single-node KRaft broker on free ports under a temporary folder,
runs the selected benchmarks (all of them by default), stops the broker (also on
error or Ctrl-C), prints a table and merges the results into ``bench/results.json``
(the entries of the benchmarks that ran are replaced, the others are kept), then
rewrites the table of today's figures in ``docs/BENCHMARKS.md`` from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from bench import (
    RESULT_KEYS,
    Context,
    Result,
    event_latency,
    ingest,
    kafka_producer,
    notifier,
    orchestrator,
    report,
    scoring,
)
from devstack.kafka import KafkaBroker
from devstack.procs import free_port

Benchmark = Callable[[Context], Coroutine[Any, Any, list[Result]]]

# name → benchmark. Every name a benchmark reports must be a key here, so that
# `python -m bench <name>` reproduces any line of results.json; a benchmark that
# reports several lines is registered under each of them and runs once.
BENCHMARKS: dict[str, Benchmark] = {
    "kafka_producer_raw": kafka_producer.run,
    "kafka_producer_publisher": kafka_producer.run,  # measured in the same run as _raw
    "ingest_batch_throughput": ingest.run_batch,
    "ingest_batch_two_workers": ingest.run_batch,  # its baseline is the 1-worker figure
    "ingest_single_latency_p50": ingest.run_latency,
    "ingest_single_latency_p99": ingest.run_latency,  # p50 and p99 of the same requests
    "notifier_email_throughput": notifier.run_email,
    "notifier_webhook_throughput": notifier.run_webhook,
    "scoring_throughput": scoring.run_throughput,
    "scoring_cpu_per_event": scoring.run_throughput,  # CPU per event of the same rounds
    "scoring_latency_p50": scoring.run_latency,
    "scoring_latency_p99": scoring.run_latency,  # p50 and p99 of the same events
    "scoring_latency_p50_at_250": scoring.run_latency,  # the same at a sustainable rate
    "scoring_latency_p99_at_250": scoring.run_latency,
    "scoring_state_bytes_1m": scoring.run_state,
    "scoring_state_rss_1m": scoring.run_state,  # bytes and memory of the same loads
    "orchestrator_timers_one_replica": orchestrator.run,
    # one replica / the bare loop's rate: a group of its own, a few minutes
    "orchestrator_timers_vs_bare_loop": orchestrator.run_vs_bare,
    "orchestrator_timers_two_replicas": orchestrator.run,  # its baseline is the 1-replica figure
    "orchestrator_timer_lateness_p50": orchestrator.run,
    "orchestrator_timer_lateness_p99": orchestrator.run,  # at Procrastinate's measured rate
    "orchestrator_timer_lateness_full_p50": orchestrator.run,  # at 80 % of one replica's rate
    "orchestrator_timer_lateness_full_p99": orchestrator.run,
    "event_to_notification_latency_p50": event_latency.run,
    "event_to_notification_latency_p99": event_latency.run,  # p50 and p99 of the same emails
}

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.json"
KAFKA_LIBS = REPO / ".stack" / "kafka" / "libs"


def command_for(name: str) -> str:
    return f".venv/bin/python -m bench {name}"


def select(names: list[str]) -> list[tuple[str, Benchmark]]:
    """The benchmarks to run, in registry order, each function once."""
    wanted = set(names) or set(BENCHMARKS)
    chosen: list[tuple[str, Benchmark]] = []
    for name, fn in BENCHMARKS.items():
        if name in wanted and all(fn is not other for _, other in chosen):
            chosen.append((name, fn))
    return chosen


def merge(existing: list[dict[str, Any]], fresh: list[Result]) -> list[dict[str, Any]]:
    """``existing`` with the entries of ``fresh`` replaced or added; unregistered names dropped."""
    by_name = {e.get("name"): e for e in existing if e.get("name") in BENCHMARKS}
    by_name.update({r.name: r.as_json() for r in fresh})
    return [by_name[name] for name in BENCHMARKS if name in by_name]


def load_results() -> list[dict[str, Any]]:
    try:
        data = json.loads(RESULTS.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError:
        print(f"warning: {RESULTS} is not valid JSON; starting afresh", file=sys.stderr)
        return []
    entries = data if isinstance(data, list) else []
    valid = [e for e in entries if isinstance(e, dict) and set(e) == set(RESULT_KEYS)]
    if len(valid) != len(entries) or not isinstance(data, list):
        print(f"warning: dropped malformed entries of {RESULTS}", file=sys.stderr)
    return [{key: e[key] for key in RESULT_KEYS} for e in valid]


def write_results(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        if tuple(entry) != RESULT_KEYS:
            raise ValueError(f"result entry with keys {list(entry)}, expected {RESULT_KEYS}")
    RESULTS.write_text(json.dumps(entries, indent=2) + "\n")


def table(results: list[Result]) -> str:
    def num(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"

    rows = [("benchmark", "value", "baseline value", "ratio", "unit")]
    rows += [
        (r.name, num(r.value), num(r.baseline_value), f"{r.ratio:.3f}", r.unit) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(row[c].rjust(widths[c]) for c in (1, 2, 3)), row[4]]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"{r.name}: {r.metric}\n    baseline: {r.baseline}" for r in results]
    return "\n".join(lines)


def _raise_on_sigterm() -> None:
    def handler(signum: int, _frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextmanager
def bench_broker(jvm_options: tuple[str, ...] = ()) -> Iterator[Context]:
    """A single-node broker on free ports under a temporary folder; stopped on exit.

    ``jvm_options``: more flags for the broker's JVM (a probe's -Xlog:gc, say)."""
    with tempfile.TemporaryDirectory(prefix="tenure-bench-", dir="/tmp") as tmp:
        port = free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        broker = KafkaBroker(
            libs=KAFKA_LIBS,
            home=Path(tmp) / "kafka",
            port=port,
            controller_port=controller_port,
            jvm_options=jvm_options,
        )
        try:
            started = time.monotonic()
            print(f"Starting a Kafka broker on {broker.bootstrap} (home {broker.home})", flush=True)
            try:
                broker.start()
            except Exception:
                log = broker.home / "broker.log"
                if log.exists():
                    print(log.read_text()[-4000:], file=sys.stderr)
                raise
            print(f"Broker up in {time.monotonic() - started:.1f} s", flush=True)
            yield Context(
                bootstrap=broker.bootstrap,
                broker_pid=broker.proc.pid if broker.proc is not None else None,
            )
        finally:
            print("\nStopping the broker", flush=True)
            broker.stop()


def run(names: list[str]) -> int:
    selected = select(names)
    results: list[Result] = []
    failed: list[str] = []
    _raise_on_sigterm()
    with bench_broker() as ctx:
        for name, fn in selected:
            print(f"\n== {name}", flush=True)
            began = time.monotonic()
            try:
                produced = asyncio.run(fn(ctx))
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            for result in produced:
                if result.name not in BENCHMARKS:
                    raise ValueError(f"{name} reported {result.name!r}, not in BENCHMARKS")
            results += [replace(r, command=command_for(r.name)) for r in produced]
            print(f"({name}: {time.monotonic() - began:.0f} s)", flush=True)
    entries = merge(load_results(), results)
    write_results(entries)
    report.update_all(entries)
    print()
    print(table(results))
    written = (RESULTS, report.DOCUMENT, report.OPERATIONS)
    print(f"\nWritten to {', '.join(str(p.relative_to(REPO)) for p in written)}")
    if failed:
        print(f"FAILED: {', '.join(failed)} (their previous entries, if any, were kept)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return run(args.names)


if __name__ == "__main__":
    sys.exit(main())
