"""Where the notifier's CPU goes on the throughput benchmark's path: a sampling profile.

    .venv/bin/python -m bench.notifier_profile [email|webhook] [--rounds 3]

Sets up what ``notifier_email_throughput`` does (its own broker, PostgreSQL, the sinks),
runs the notifier's measurement (:func:`bench.notifier.pipeline`) once to warm up, then
``--rounds`` times with a CPU-time sampler on, and prints the rate and CPU per
notification of each round, the share of the samples by stage of the path, and the
functions with the most samples. Not part of ``make bench``.

The sampler is the one of :mod:`bench.profile_ingest` (``setitimer(ITIMER_PROF)``: a
stack every ``INTERVAL_S`` of the process's CPU time, a few percent of overhead; idle
waits are not sampled). The notifier runs in this process, as in the benchmark; so do the
sampler's own rounds' setup (producing the records, starting the consumer), which fall
outside the timed part of each measurement but inside the sampling: they show as their
own stage.

A sample goes to the stage of its innermost frame that belongs to one (``STAGES``, by file
path). pydantic and the standard library's ``email`` package are transparent: their
samples go to the stage that called them (aiosmtplib parses addresses with ``email``), and
pydantic's called from the service layer itself (decoding the notification, building the
outcome) to a stage of their own.

It also counts the delivery log's statements (each a group commit of its writer: claims,
outcomes, ``handed`` marks) and the notifications they carried.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from bench import Context
from bench import notifier as bn
from bench.profile_ingest import INTERVAL_S, Frame, Stack, _where
from notifier.adapters.delivery_log import DeliveryLog

SERVICE = "the notifier's own code (service layer, entrypoints, links, messages)"
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("SMTP (aiosmtplib)", ("aiosmtplib/",)),
    ("HTTP (httpx, httpcore)", ("httpx/", "httpcore/", "h11/")),
    ("render (jinja2, the templates)", ("jinja2/", "/templates/", "notifier/domain/render.py")),
    ("message bytes (mailer.message_bytes: headers, quoted-printable)", ("mailer.py",)),
    ("link tokens (itsdangerous, hmac)", ("itsdangerous/", "/hmac.py", "signing.py")),
    (
        "delivery log (SQLAlchemy, asyncpg, group commit)",
        ("sqlalchemy/", "asyncpg/", "delivery_log.py", "batching.py", "suppressions.py"),
    ),
    ("publish the outcome (aiokafka producer)", ("aiokafka/producer/", "common/kafka/publisher")),
    ("consume (aiokafka consumer, the shared runner)", ("aiokafka/consumer/", "common/kafka/")),
    ("aiokafka, other (connections, records)", ("aiokafka/",)),
    ("the retry helper (tenacity, common.outage.ride_out)", ("tenacity/", "common/outage.py")),
    ("metrics (prometheus_client)", ("prometheus_client/", "notifier/metrics.py")),
    ("the benchmark's setup (records, consumer start)", ("bench/notifier.py",)),
    (SERVICE, ("notifier/", "common/")),
]


def _stage(stack: Stack) -> str:
    via_pydantic = False
    for file, _line, _name in stack:  # innermost first
        if "pydantic" in file:
            via_pydantic = True
            continue
        if "/email/" in file:
            continue
        for label, markers in STAGES:
            if any(marker in file for marker in markers):
                if via_pydantic and label == SERVICE:
                    return "pydantic (decode the notification, build the outcome)"
                return label
    return "pydantic, other" if via_pydantic else "event loop, other"


class Sampler:
    """Stacks of this process, one per ``INTERVAL_S`` of its CPU time, while on."""

    def __init__(self) -> None:
        self.samples: collections.Counter[Stack] = collections.Counter()
        self.on = False
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, INTERVAL_S, INTERVAL_S)

    def _sample(self, _sig: int, frame: FrameType | None) -> None:
        if not self.on:
            return
        stack: list[Frame] = []
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, code.co_firstlineno, code.co_name))
            frame = frame.f_back
        self.samples[tuple(stack)] += 1

    def close(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)


@contextmanager
def counting_statements() -> Iterator[collections.Counter[str]]:
    """Statements and rows of the delivery log's three writers, while in the block."""
    counts: collections.Counter[str] = collections.Counter()
    claim_many, set_many = DeliveryLog._claim_many, DeliveryLog._set_many

    async def claims(self: DeliveryLog, requests: list[Any]) -> Any:
        counts["claim statements"] += 1
        counts["claim rows"] += len(requests)
        return await claim_many(self, requests)

    async def sets(self: DeliveryLog, conn: Any, items: list[Any]) -> Any:
        kind = "handed" if items and items[0].status == "handed" else "outcome"
        counts[f"{kind} statements"] += 1
        counts[f"{kind} rows"] += len(items)
        return await set_many(self, conn, items)

    DeliveryLog._claim_many = claims  # type: ignore[method-assign]
    DeliveryLog._set_many = sets  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        DeliveryLog._claim_many = claim_many  # type: ignore[method-assign]
        DeliveryLog._set_many = set_many  # type: ignore[method-assign]


def report(samples: collections.Counter[Stack], top: int) -> None:
    total = sum(samples.values())
    if not total:
        print("no samples")
        return
    stages: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for stack, n in samples.items():
        stages[_stage(stack)] += n
        own[_where(stack[0])] += n
    print(f"\n{total:,} samples, one per {INTERVAL_S * 1000:.0f} ms of CPU\n\nstages:")
    for label, n in stages.most_common():
        print(f"  {100 * n / total:5.1f}%  {label}")
    print("\nown time (innermost Python frame):")
    for where, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {where}")


async def profile(ctx: Context, channel: str, rounds: int, top: int) -> None:
    sampler = Sampler()
    try:
        async with bn.environment(ctx) as env:
            warm = await bn.pipeline(env, channel)
            print(f"warm-up: {warm.rate:,.0f} {channel}s/s; {warm.describe()}", flush=True)
            for r in range(rounds):
                with counting_statements() as counts:
                    sampler.on = True
                    sample = await bn.pipeline(env, channel)
                    sampler.on = False
                print(f"round {r + 1}: {sample.rate:,.0f} {channel}s/s; {sample.describe()}")
                for kind in ("claim", "outcome", "handed"):
                    n, rows = counts[f"{kind} statements"], counts[f"{kind} rows"]
                    print(f"  {kind}: {n:,} statements, {rows / max(1, n):.1f} rows each")
    finally:
        sampler.close()
    report(sampler.samples, top)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier_profile")
    parser.add_argument("channel", nargs="?", choices=("email", "webhook"), default="email")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    from bench.__main__ import _raise_on_sigterm, bench_broker

    _raise_on_sigterm()
    with bench_broker() as ctx:
        asyncio.run(profile(ctx, args.channel, args.rounds, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
