"""The scoring worker as a process, on the real broker.

A scripted customer history in → the expected signal changes and final snapshot out;
time-driven signals without new events; aborted transactional writes never counted
(read_committed); SIGKILL in the middle of a stream → state recovered from the
changelog, nothing counted twice (compared with an uninterrupted run).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from common.clock import ScaledClock
from common.kafka import ensure_topics
from common.settings import CommonSettings
from common.topics import Topic, dlq_name, events_topic, topic_name
from devstack.procs import free_port, spawn, stop
from devstack.stack import REPO, Stack

SCALE = 3600.0  # an hour of the worker's clock per real second
DAY = timedelta(days=1)


@dataclass
class Env:
    stack: Stack
    settings: CommonSettings
    clock: ScaledClock
    root: Path

    def worker(self, app_id: str, data_dir: Path, **extra: str) -> subprocess.Popen[bytes]:
        env = {
            **self.stack.env(),
            "TENURE_TOPIC_PREFIX": self.settings.topic_prefix,
            "TENURE_TIME_SCALE": str(SCALE),
            "TENURE_CLOCK_EPOCH": self.clock.epoch.isoformat(),
            "TENURE_LOG_FORMAT": "text",
            "TENURE_SCORING_APP_ID": app_id,
            "TENURE_SCORING_DATA_DIR": str(data_dir),
            "TENURE_SCORING_METRICS_PORT": str(free_port()),
            "TENURE_SCORING_SWEEP_INTERVAL_S": "0.5",
            **extra,
        }
        log = self.root / f"{app_id}-{time.monotonic_ns()}.log"
        return spawn([sys.executable, "-m", "scoring"], env=env, cwd=REPO, log_path=log)

    def name(self, topic: Topic) -> str:
        return topic_name(topic, self.settings.topic_prefix)


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    prefix = f"sc{uuid.uuid4().hex[:6]}."
    settings = stack.common_settings().model_copy(update={"topic_prefix": prefix})
    asyncio.run(ensure_topics(settings))
    clock = ScaledClock(scale=SCALE, epoch=datetime.now(UTC))
    yield Env(stack, settings, clock, tmp_path_factory.mktemp("scoring"))


@pytest.fixture(scope="module")
def worker(env: Env) -> Iterator[subprocess.Popen[bytes]]:
    proc = env.worker("it-scoring", env.root / "main-worker")
    try:
        yield proc
    finally:
        stop(proc)


def event(clock: ScaledClock, customer: str, kind: str, type_: str, ago: timedelta, **fields: Any):
    body = {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer,
        "occurred_at": (clock.now() - ago).isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }
    return body


async def produce(settings: CommonSettings, events: list[dict[str, Any]], **options: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **options)
    await producer.start()
    try:
        for body in events:
            topic = topic_name(events_topic(body["kind"]), settings.topic_prefix)
            await producer.send(
                topic, key=body["customer_id"].encode(), value=json.dumps(body).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def read_until(
    settings: CommonSettings,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout: float,
    *,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` from the start, until ``done(records)`` or the timeout."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for items in batch.values():
                records.extend(items)
            if done(records):
                return records
        raise AssertionError(f"{topic}: condition not met in {timeout:.0f}s ({len(records)} read)")
    finally:
        await consumer.stop()


def values(records: list[Any], customer: str | None = None) -> list[dict[str, Any]]:
    out = [json.loads(r.value) for r in records if r.value is not None]
    return [v for v in out if customer is None or v.get("customer_id") == customer]


def snapshot_with(customer: str, check: Callable[[dict[str, Any]], bool]):
    def done(records: list[Any]) -> bool:
        snaps = values(records, customer)
        return bool(snaps) and check(snaps[-1])

    return done


async def test_a_scripted_history_gives_the_expected_changes_and_snapshot(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    c = env.clock
    cid = f"hist-{uuid.uuid4().hex[:6]}"
    # Phase 1, on three topics (no order between them): who the customer is, and an NPS of 4.
    await produce(
        env.settings,
        [
            event(c, cid, "profile", "identify", 40 * DAY, plan="pro", mrr=99.0),
            event(c, cid, "payment", "subscription_started", 40 * DAY, plan="pro", mrr_after=99.0),
            event(c, cid, "support", "nps_response", 3 * DAY, score=4),
        ],
    )
    await read_until(
        env.settings,
        env.name(Topic.SCORES),
        snapshot_with(cid, lambda s: s["plan"] == "pro" and s["tier"] == "medium"),
        timeout=90,
    )
    # Phase 2, on one topic and partition (in order): the competition signals.
    trial = event(c, cid, "intent", "competitor_trial", 10 * DAY)
    await produce(
        env.settings,
        [
            trial,
            event(c, cid, "intent", "alternative_search", 5 * DAY),
            trial,  # sent twice: counted once
            event(c, cid, "intent", "contract_review", 2 * DAY),
            event(c, cid, "intent", "referral", 1 * DAY),
        ],
    )
    scores = await read_until(
        env.settings,
        env.name(Topic.SCORES),
        snapshot_with(cid, lambda s: s["loyalty_points"] == 125),
        timeout=60,
    )
    signals = await read_until(
        env.settings,
        env.name(Topic.SIGNALS),
        lambda rs: any(v["name"] == "contract_review" for v in values(rs, cid)),
        timeout=30,
    )
    changes = [
        (v["change"], v["name"], v.get("current"))
        for v in values(signals, cid)
        if v["change"] in ("signal_on", "signal_off", "tier_changed")
    ]
    assert sorted(changes[:3], key=str) == [
        ("signal_on", "nps_low", None),
        ("signal_on", "usage_reduced", None),  # 0 of the plan's 10 features in 30 days
        ("tier_changed", "tier", "medium"),
    ]
    assert changes[3:] == [
        ("signal_on", "competitor_trial", None),
        ("tier_changed", "tier", "high"),
        ("signal_on", "alternative_search", None),
        ("signal_on", "contract_review", None),
    ]
    segment = [v for v in values(signals, cid) if v["change"] == "segment_changed"]
    assert [(v["previous"], v["current"]) for v in segment] == [(None, "medium")]
    final = values(scores, cid)[-1]
    assert final["events_counted"] == 7  # 8 sent, one twice
    assert final["tier"] == "high"
    assert final["churn_probability"] >= 0.90
    assert {f["name"] for f in final["red_flags"]} == {
        "trial_and_search",
        "contract_and_search",
        "detractor_low_usage",
    }
    explained = {s["name"]: s for s in final["signals"]}
    assert set(explained) == {
        "nps_low",
        "usage_reduced",
        "competitor_trial",
        "alternative_search",
        "contract_review",
    }
    assert explained["nps_low"]["value"] == 4 and explained["nps_low"]["threshold"] == 7
    assert explained["competitor_trial"]["contribution"] == 9.0
    assert final["risk_score"] == pytest.approx(sum(s["contribution"] for s in final["signals"]))
    assert final["clv"] == pytest.approx(99 * 0.8 * 20 * 1.2)
    assert final["clv_segment"] == "medium"
    assert final["feature_adoption"] == 0.0
    assert final["health_band"] in ("low", "at_risk")


async def test_a_time_driven_signal_turns_on_without_a_new_event(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    cid = f"late-{uuid.uuid4().hex[:6]}"
    # 7 days late now: "more than 7 days" becomes true minutes of the worker's clock later
    overdue = event(env.clock, cid, "payment", "invoice_overdue", timedelta(0), days_late=7)
    overdue["invoice_id"] = "inv-1"
    sent_at = env.clock.now()
    await produce(env.settings, [overdue])
    signals = await read_until(
        env.settings,
        env.name(Topic.SIGNALS),
        lambda rs: any(v["name"] == "payment_late" for v in values(rs, cid)),
        timeout=90,
    )
    [late] = [v for v in values(signals, cid) if v["name"] == "payment_late"]
    assert late["change"] == "signal_on" and late["value"] > 7
    assert (
        datetime.fromisoformat(late["occurred_at"]) > sent_at
    )  # the clock's time, not the event's


async def test_dead_letters_with_the_error_and_the_worker_goes_on(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    cid = f"dlq-{uuid.uuid4().hex[:6]}"
    topic = env.name(Topic.EVENTS_INTENT)
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=cid.encode(), value=b'{"kind": "intent"}')
    finally:
        await producer.stop()
    await produce(env.settings, [event(env.clock, cid, "intent", "competitor_trial", DAY)])
    dead = await read_until(
        env.settings,
        dlq_name(topic),
        lambda rs: any(r.key == cid.encode() for r in rs),
        timeout=60,
    )
    [record] = [r for r in dead if r.key == cid.encode()]
    headers = dict(record.headers)
    assert b"event_id" in headers["dlq.error"] and headers["dlq.topic"] == topic.encode()
    await read_until(
        env.settings,
        env.name(Topic.SCORES),
        snapshot_with(cid, lambda s: s["events_counted"] == 1),
        timeout=60,
    )


async def test_an_aborted_transaction_is_never_counted_and_a_committed_one_is(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    cid = f"txn-{uuid.uuid4().hex[:6]}"
    topic = env.name(Topic.EVENTS_INTENT)
    aborted = event(env.clock, cid, "intent", "competitor_trial", DAY)
    committed = event(env.clock, cid, "intent", "alternative_search", DAY)
    producer = AIOKafkaProducer(
        bootstrap_servers=env.settings.kafka_bootstrap, transactional_id=f"it-{cid}"
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, key=cid.encode(), value=json.dumps(aborted).encode())
        await producer.abort_transaction()
        await producer.begin_transaction()
        await producer.send_and_wait(topic, key=cid.encode(), value=json.dumps(committed).encode())
        await producer.commit_transaction()
    finally:
        await producer.stop()
    # The aborted record is in the log: a read_uncommitted reader sees both.
    raw = await read_until(env.settings, topic, lambda rs: len(values(rs, cid)) == 2, timeout=30)
    assert {v["type"] for v in values(raw, cid)} == {"competitor_trial", "alternative_search"}
    scores = await read_until(
        env.settings,
        env.name(Topic.SCORES),
        snapshot_with(cid, lambda s: s["events_counted"] >= 1),
        timeout=60,
    )
    final = values(scores, cid)[-1]
    assert final["events_counted"] == 1
    assert [s["name"] for s in final["signals"]] == ["alternative_search"]


def at(instant: datetime, cid: str, kind: str, type_: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": cid,
        "occurred_at": instant.isoformat(),
        "kind": kind,
        "type": type_,
        **fields,
    }


async def test_a_cohort_with_enough_churn_changes_another_customers_clv(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    tag = uuid.uuid4().hex[:6]
    plan = f"cohort-{tag}"  # a plan of this test alone
    now = env.clock.now()
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - DAY).replace(day=1)
    cids = [f"co-{tag}-{i:02d}" for i in range(30)]  # 30 customer-months: the model's minimum
    # who they are first (their profile long before), then last month's activity, on two
    # topics (no order between them): half of them cancel during last month, churn 0.5
    profiles = [
        at(last_month - 20 * DAY, cid, "profile", "identify", plan=plan, mrr=29.0) for cid in cids
    ]
    await produce(env.settings, profiles)
    await read_until(
        env.settings,
        env.name(Topic.SCORES),
        lambda rs: {v["customer_id"] for v in values(rs)} >= set(cids),
        timeout=90,
    )
    events = [at(last_month + DAY, cid, "login", "login", user_id="u1") for cid in cids]
    events += [
        at(last_month + 5 * DAY, cid, "payment", "subscription_cancelled") for cid in cids[:15]
    ]
    await produce(env.settings, events)
    other = f"co-{tag}-other"
    await produce(
        env.settings,
        [at(now - timedelta(hours=1), other, "profile", "identify", plan=plan, mrr=29.0)],
    )
    scores = await read_until(
        env.settings,
        env.name(Topic.SCORES),
        # the rates settle once every customer's events are summed (in any order)
        snapshot_with(other, lambda s: s["clv_monthly_churn"] == pytest.approx(0.5)),
        timeout=120,
    )
    final = values(scores, other)[-1]
    assert final["clv_rates_observed"]
    assert final["clv_monthly_churn"] == pytest.approx(0.5)  # 15 lost of 30 at the start
    assert final["clv_expansion_rate"] == 0.0
    assert final["clv"] == pytest.approx(29 * 0.8 * 2 * 1.0)  # not the default 556.8
    assert final["clv_segment"] == "low"


async def test_every_worker_follows_the_published_cohort_stats(
    env: Env, worker: subprocess.Popen[bytes]
) -> None:
    # Counts published for a plan this worker never aggregated (as another worker of the
    # group would): its rules must read them from the compacted cohort-stats topic.
    plan = f"followed-{uuid.uuid4().hex[:6]}"
    stats = {"customers_at_start": 40, "customers_lost": 10, "mrr_at_start": 4000.0}
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{env.settings.topic_prefix}scoring.cohort-stats",
            key=plan.encode(),
            value=json.dumps({**stats, "expansion_mrr": 400.0}).encode(),
        )
    finally:
        await producer.stop()
    cid = f"follow-{uuid.uuid4().hex[:6]}"
    await produce(
        env.settings,
        [event(env.clock, cid, "profile", "identify", timedelta(hours=1), plan=plan, mrr=100.0)],
    )
    scores = await read_until(
        env.settings,
        env.name(Topic.SCORES),
        snapshot_with(cid, lambda s: s["clv_rates_observed"]),
        timeout=60,
    )
    final = values(scores, cid)[-1]
    assert final["clv_monthly_churn"] == pytest.approx(0.25)  # 10 of 40
    assert final["clv_expansion_rate"] == pytest.approx(0.1)  # 400 / 4,000
    assert final["clv"] == pytest.approx(100 * 0.8 * 4 * 1.1)


def history_of(clock: ScaledClock, customers: int, per_customer: int) -> list[dict[str, Any]]:
    """A deterministic mix of events: every kind the rules count, spread over 20 days."""
    shapes: list[tuple[str, str, dict[str, Any]]] = [
        ("login", "login", {"user_id": "u1"}),
        ("usage", "feature_used", {"feature": "reports", "user_id": "u2"}),
        ("usage", "quota_consumed", {"metric": "documents", "quantity": 40}),
        ("intent", "competitor_visit", {}),
        ("support", "ticket_opened", {"sentiment": 0.2}),
        ("support", "nps_response", {"score": 6}),
        ("intent", "referral", {}),
        ("login", "login", {"user_id": "u3"}),
    ]
    out = []
    for i in range(per_customer):
        for c in range(customers):
            kind, type_, fields = shapes[(i + c) % len(shapes)]
            ago = timedelta(hours=(per_customer - i) * 20 * 24 / per_customer)
            out.append(event(clock, f"kill-{c:03d}", kind, type_, ago, **fields))
    return out


def latest_by_key(records: list[Any]) -> dict[str, dict[str, Any]]:
    """The last state of each of this test's customers (the topics hold other tests' too)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        key = r.key.decode().strip('"')  # the table's keys are JSON strings
        if r.value is not None and key.startswith("kill-"):
            latest[key] = json.loads(r.value)
    return latest


COMPARED = ("events_counted", "counters", "latest", "levels", "loyalty_points", "users", "features")


async def test_sigkill_mid_stream_recovers_from_the_changelog_and_counts_nothing_twice(
    env: Env,
) -> None:
    customers, per_customer = 40, 30
    events = history_of(env.clock, customers, per_customer)
    tag = uuid.uuid4().hex[:6]
    victim, reference = f"it-kill-{tag}", f"it-ref-{tag}"
    fast = {"TENURE_SCORING_SESSION_TIMEOUT_S": "8"}
    ref_proc = env.worker(reference, env.root / reference, **fast)
    proc = env.worker(victim, env.root / f"{victim}-1", **fast)
    changelog = f"{victim}-customer-state-changelog"
    try:
        half = len(events) // 2
        await produce(env.settings, events[:half])
        # wait until the victim is in the middle of the stream, then kill it
        await read_until(env.settings, changelog, lambda rs: len(rs) >= 100, timeout=120)
        stop(proc, sig=signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        before = latest_by_key(await read_until(env.settings, changelog, bool, timeout=10))
        assert sum(s["events_counted"] for s in before.values()) < len(events)
        await produce(env.settings, events[half:])
        # a fresh data folder: RocksDB files are gone, the state must come from the changelog
        proc = env.worker(victim, env.root / f"{victim}-2", **fast)

        last: dict[str, int] = {}

        def complete(records: list[Any]) -> bool:
            states = latest_by_key(records)
            last.clear()
            last.update({k: s["events_counted"] for k, s in states.items()})
            return len(states) == customers and all(
                s["events_counted"] >= per_customer for s in states.values()
            )

        try:
            recovered = latest_by_key(
                await read_until(env.settings, changelog, complete, timeout=180)
            )
        except AssertionError as exc:
            short = {k: n for k, n in sorted(last.items()) if n != per_customer}
            raise AssertionError(
                f"{exc}; {len(last)} customers, not at {per_customer}: {short}"
            ) from exc
        uninterrupted = latest_by_key(
            await read_until(
                env.settings, f"{reference}-customer-state-changelog", complete, timeout=120
            )
        )
    finally:
        stop(proc)
        stop(ref_proc)
    assert {s["events_counted"] for s in recovered.values()} == {per_customer}
    for customer, state in uninterrupted.items():
        mine = recovered[customer]
        assert {k: mine[k] for k in COMPARED} == {k: state[k] for k in COMPARED}, customer
        assert sorted(mine["seen"]) == sorted(state["seen"])


async def test_every_event_of_a_batch_is_acked_so_commits_and_rebalances_go_on(env: Env) -> None:
    """Events are taken in batches and each batch is acked once handled: a worker that
    starts on a backlog (large batches) commits offsets past every event it scored, and
    when a second worker joins its group the rebalance completes (faust waits for every
    event it handed out to be acked first: one left unacked stalled it for ever) and
    new events are scored."""
    tag = uuid.uuid4().hex[:6]
    group = f"it-commits-{tag}"
    bodies = [
        event(
            env.clock, f"off-{tag}-{i % 25}", "login", "login", timedelta(hours=i % 40), user_id="u"
        )
        for i in range(600)
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=env.settings.kafka_bootstrap, acks="all", linger_ms=20
    )
    await producer.start()
    try:
        topic = env.name(Topic.EVENTS_LOGIN)
        sent = [
            await producer.send(topic, key=b["customer_id"].encode(), value=json.dumps(b).encode())
            for b in bodies
        ]
        written = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    needed: dict[TopicPartition, int] = {}
    for meta in written:
        tp = TopicPartition(meta.topic, meta.partition)
        needed[tp] = max(needed.get(tp, 0), meta.offset + 1)
    proc = env.worker(group, env.root / group)
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap)
    await admin.start()
    try:
        # 200 events: seconds of work; before the fix (faust's gap), one transaction per
        # commit interval took 110-123 s
        deadline = time.monotonic() + 45
        while True:
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group not formed yet (the worker is starting)
                committed = {}
            behind = {
                tp: (committed[tp].offset if tp in committed else None, want)
                for tp, want in needed.items()
                if tp not in committed or committed[tp].offset < want
            }
            if not behind:
                break
            assert time.monotonic() < deadline, f"committed (got, wanted): {behind}"
            await asyncio.sleep(1)
        second = env.worker(group, env.root / f"{group}-2")
        await asyncio.sleep(5)  # the second worker joins: the group rebalances
        late = [
            event(env.clock, f"late-{tag}-{i}", "login", "login", timedelta(0), user_id="u")
            for i in range(12)
        ]
        await produce(env.settings, late)
        wanted = {b["customer_id"] for b in late}
        await read_until(
            env.settings,
            env.name(Topic.SCORES),
            lambda rs: wanted <= {v.get("customer_id") for v in values(rs)},
            timeout=120,
        )
    finally:
        await admin.close()
        stop(proc)
        if "second" in locals():
            stop(second)


async def test_commits_reach_the_end_of_topics_written_in_transactions(env: Env) -> None:
    """Ingest writes every event in a Kafka transaction, so an events partition holds a
    commit marker after each transaction's records: offsets with no record. A worker that
    scored every event must commit past them (to the partition's end, or one short of it
    when a marker is last): else its group's lag grows for ever and a restart scores
    everything again (seen in `make run`: lag 272 -> 338 in 50 s while events were scored)."""
    tag = uuid.uuid4().hex[:6]
    group = f"it-txn-commits-{tag}"
    topic = env.name(Topic.EVENTS_LOGIN)
    producer = AIOKafkaProducer(
        bootstrap_servers=env.settings.kafka_bootstrap, transactional_id=f"txn-{tag}"
    )
    await producer.start()
    try:
        for t in range(40):  # 40 transactions of 5 events: a marker after every 5 records
            async with producer.transaction():
                for i in range(5):
                    body = event(
                        env.clock,
                        f"txn-{tag}-{(t * 5 + i) % 25}",
                        "login",
                        "login",
                        timedelta(hours=t),
                        user_id="u",
                    )
                    await producer.send(
                        topic, key=body["customer_id"].encode(), value=json.dumps(body).encode()
                    )
    finally:
        await producer.stop()
    proc = env.worker(group, env.root / group)
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(env.settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        # 200 events: seconds of work; before the fix (faust's gap), one transaction per
        # commit interval took 110-123 s
        deadline = time.monotonic() + 45
        while True:
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except KafkaError:
                committed = {}
            behind = {
                tp: (committed[tp].offset if tp in committed else None, end)
                for tp, end in ends.items()
                if end > 0 and (tp not in committed or committed[tp].offset < end - 1)
            }
            if not behind:
                break
            assert time.monotonic() < deadline, f"committed (got, end of partition): {behind}"
            await asyncio.sleep(1)
    finally:
        await consumer.stop()
        await admin.close()
        stop(proc)
