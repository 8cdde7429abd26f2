"""Realistic event records for the benchmarks, serialised once before any timing.

Every record is an event of ``common.events`` serialised the way ingest publishes
it (``model_dump_json``, nulls included), keyed by its ``customer_id``. The six
kinds come round-robin from ``EXAMPLES``, with varied customer ids, ULID-like event
ids, users, timestamps, amounts and texts, so values are ~270-470 bytes (mean ~350)
rather than one repeated payload. The generator is seeded: every run sends the
same bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from statistics import mean
from typing import Any

import orjson

from common.events import EXAMPLES, parse_event

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FEATURES = ["reports.export_pdf", "dashboards.share", "workflows.automation", "api.bulk_import"]
_PLANS = ["starter-monthly", "pro-annual", "business-annual", "enterprise-2026"]
_DEVICES = [
    "web/Chrome 131.0.6778.86 macOS 15.1.1 (arm64)",
    "ios/TenureApp 4.12.0 (iPhone15,3; iOS 18.1.1)",
    "web/Firefox 133.0 Windows 11 23H2 (x86_64)",
]
_SOURCES = [
    "https://www.g2.com/compare/tenure-vs-churnzero-vs-gainsight",
    "https://www.capterra.com/customer-success-software/compare/",
    "https://www.linkedin.com/feed/update/urn:li:activity:72650119",
]
_COMMENTS = [
    "Exports take far too long since the last release, we are evaluating alternatives",
    "Great onboarding call, the team finally understands the automation builder",
    "Billing page keeps timing out when I try to download last quarter's invoices",
]


@dataclass(frozen=True)
class EventRecords:
    """``keys[i]``/``values[i]``: the pre-serialised key (customer id) and JSON value."""

    keys: list[bytes]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean_value_bytes(self) -> float:
        return mean(len(v) for v in self.values)

    def describe(self) -> str:
        sizes = [len(v) for v in self.values]
        return (
            f"{len(self):,} records, value {min(sizes)}-{max(sizes)} B "
            f"(mean {self.mean_value_bytes:.0f} B), {len(set(self.keys)):,} customers"
        )


def _ulid(rng: random.Random, at: datetime) -> str:
    bits = (int(at.timestamp() * 1000) << 80) | rng.getrandbits(80)
    return "".join(_CROCKFORD[(bits >> (5 * i)) & 31] for i in reversed(range(26)))


def _fields(rng: random.Random, kind: str, customer: str, at: datetime) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"evt_{_ulid(rng, at)}",
        "customer_id": customer,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    user = f"usr_{customer}_{rng.randrange(1, 40):02d}"
    if kind == "usage":
        event |= {
            "user_id": user,
            "feature": rng.choice(_FEATURES),
            "metric": "api_calls",
            "quantity": float(rng.randrange(1, 5000)),
            "value": round(rng.uniform(0, 300), 2),
        }
    elif kind == "payment":
        event |= {
            "invoice_id": f"inv_{customer}_{at:%Y%m}",
            "plan": rng.choice(_PLANS),
            "amount": round(rng.uniform(29, 4999), 2),
            "days_late": rng.randrange(1, 60),
        }
    elif kind == "login":
        event |= {"user_id": user, "device": rng.choice(_DEVICES)}
    elif kind == "support":
        event |= {
            "ticket_id": f"tkt_{rng.randrange(10**6, 10**7)}",
            "text": rng.choice(_COMMENTS),
            "score": rng.randrange(0, 11),
            "sentiment": round(rng.random(), 3),
        }
    elif kind == "profile":
        event |= {
            "first_name": rng.choice(["Ana", "Bruno", "Chiara", "Dmitri"]),
            "mrr": round(rng.uniform(29, 4999), 2),
        }
    elif kind == "intent":
        event |= {"source": rng.choice(_SOURCES), "sentiment": round(rng.random(), 3)}
    return event


@cache
def event_records(
    count: int,
    *,
    customers: int = 20_000,
    seed: int = 42,
    validate: int = 1_200,
    start: datetime | None = None,
) -> EventRecords:
    """``count`` events over ``customers`` customers, serialised as ingest would.

    Event times run from ``start`` (default 2026-11-01), one event every 7 s. Ingest refuses
    events older than 30 days or more than 5 minutes ahead of its clock: what goes
    through it is generated with :func:`recent_start`.

    Each record is the validated ``EXAMPLES`` event of its kind, dumped to its JSON
    form, with the varied fields swapped in and serialised with orjson (validating
    200,000 events one by one would take longer than the benchmark). The first
    ``validate`` records, every kind included, are checked to parse back through
    ``parse_event`` to byte-identical ``model_dump_json`` output.
    """
    rng = random.Random(seed)
    templates = {
        kind: parse_event(example).model_dump(mode="json") for kind, example in EXAMPLES.items()
    }
    kinds = list(templates)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    keys: list[bytes] = []
    values: list[bytes] = []
    for n in range(count):
        kind = kinds[n % len(kinds)]
        customer = f"cust-{rng.randrange(customers):06d}.eu-west-1"
        at = start + timedelta(seconds=n * 7 + rng.randrange(7))
        keys.append(customer.encode())
        values.append(orjson.dumps(templates[kind] | _fields(rng, kind, customer, at)))
    for value in values[:validate]:
        if parse_event(value).model_dump_json().encode() != value:
            raise ValueError(f"generated event does not round-trip: {value!r}")
    return EventRecords(keys, values)


def recent_start(count: int, *, now: datetime | None = None) -> datetime:
    """The ``start`` at which ``count`` events end before ``now`` (default: the clock)."""
    now = now or datetime.now(UTC)
    return (now - timedelta(seconds=count * 7 + 7)).replace(microsecond=0)
