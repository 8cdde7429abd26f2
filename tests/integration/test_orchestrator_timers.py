"""Timer leases and crash safety on the real PostgreSQL and Kafka of the test stack.

The last test is the one of issue 5: two real orchestrator processes fire 10,000 due
timers while they are killed with SIGKILL, in turn, in the middle of their work.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from common.clock import FakeClock
from common.db import create_engine
from common.kafka import FencedProducer, ensure_topics, read_topic
from common.messages import Notification
from common.outage import DatabaseUnavailable
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.procs import free_port, spawn, stop
from devstack.stack import REPO, Stack
from orchestrator.adapters import timer_store
from orchestrator.adapters.timer_store import Lease
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.relay import recover, relay_once
from orchestrator.entrypoints.timers import fire_due

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STEP = "retention_call"  # a CSM task: sent whatever the customer's consent


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_orchestrator_timers")


@pytest.fixture(scope="module")
async def env(database_url: str, common_settings: CommonSettings):
    settings = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-tim-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(settings)
    engine = create_engine(database_url)
    clock = FakeClock(T0)
    deps = Deps(
        engine=engine,
        playbooks=load_playbooks(SHIPPED),
        clock=clock,
        topic_prefix=settings.topic_prefix,
    )
    yield settings, deps
    await engine.dispose()


async def seed(deps: Deps, n: int, *, step: str = STEP, due: datetime = T0) -> list[str]:
    """``n`` active retention_offer journeys, each with one timer due at ``due``."""
    run = uuid.uuid4().hex[:8]
    async with deps.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO journeys (journey_id, customer_id, playbook, state, variant,"
                " started_at) SELECT :run || '-j' || i, :run || '-c' || i, 'retention_offer',"
                " 'active', 'discount_30_3_months', :t0 FROM generate_series(1, :n) i"
            ),
            {"run": run, "n": n, "t0": due},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO timers (journey_id, step, due_at, status)"
                " SELECT :run || '-j' || i, :step, :due, 'pending' FROM generate_series(1, :n) i"
            ),
            {"run": run, "n": n, "step": step, "due": due},
        )
    return [f"{run}-j{i}" for i in range(1, n + 1)]


async def timer_rows(deps: Deps, journeys: list[str]) -> list[sa.Row[Any]]:
    async with deps.engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT journey_id, step, status, attempts, lease_owner, last_error FROM timers"
                " WHERE journey_id = ANY(:j) ORDER BY id"
            ),
            {"j": journeys},
        )
        return list(result.all())


async def outbox_ids(deps: Deps, journeys: list[str]) -> list[str]:
    async with deps.engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT o.payload FROM outbox o WHERE o.key = ANY("
                "SELECT customer_id FROM journeys WHERE journey_id = ANY(:j)) ORDER BY o.id"
            ),
            {"j": journeys},
        )
        return [Notification.model_validate_json(r.payload).notification_id for r in result]


async def test_a_lease_keeps_other_replicas_off_until_it_runs_out(env) -> None:
    _, deps = env
    journeys = await seed(deps, 5)
    hung = Lease(owner=f"hung-{uuid.uuid4().hex[:6]}", seconds=1.0, max_attempts=5)
    other = Lease(owner=f"other-{uuid.uuid4().hex[:6]}", seconds=30.0, max_attempts=5)
    async with deps.engine.begin() as conn:
        claimed = [c.id for c in await timer_store.claim(conn, hung, deps.clock.now(), 100)]
    assert len(claimed) >= 5  # the hung replica holds them, and then hangs

    assert await fire_due(deps, limit=100, lease=other) == 0
    assert {r.status for r in await timer_rows(deps, journeys)} == {"pending"}

    await asyncio.sleep(1.2)  # the lease runs out (on the database's clock)
    assert await fire_due(deps, limit=100, lease=other) >= 5
    rows = await timer_rows(deps, journeys)
    assert [(r.status, r.lease_owner, r.attempts) for r in rows] == [("fired", other.owner, 2)] * 5

    # The hung replica wakes up and tries to fire what it had claimed: nothing is its own.
    async with deps.engine.begin() as conn:
        assert await timer_store.take_leased(conn, hung, claimed) == []
    assert sorted(await outbox_ids(deps, journeys)) == sorted(
        decisions.notification_id(j, STEP) for j in journeys
    )


async def test_a_replica_hung_inside_its_fire_transaction_loses_its_timers(env) -> None:
    _, deps = env
    journeys = await seed(deps, 3)
    hung = Lease(owner=f"hung-{uuid.uuid4().hex[:6]}", seconds=1.0, max_attempts=5)
    other = Lease(owner=f"other-{uuid.uuid4().hex[:6]}", seconds=30.0, max_attempts=5)
    async with deps.engine.begin() as conn:
        claimed = [c.id for c in await timer_store.claim(conn, hung, deps.clock.now(), 100)]
    stuck = await deps.engine.connect()
    try:
        await stuck.begin()
        assert len(await timer_store.take_leased(stuck, hung, claimed)) >= 3  # rows locked
        assert await fire_due(deps, limit=100, lease=other) == 0  # leased and locked
        await asyncio.sleep(2.0)  # the replica hangs, idle in its transaction
        assert await fire_due(deps, limit=100, lease=other) >= 3
        with pytest.raises(DatabaseUnavailable):  # the server ended the hung session
            await stuck.execute(sa.text("SELECT 1"))
    finally:
        await stuck.invalidate()
        await stuck.close()
    rows = await timer_rows(deps, journeys)
    assert [(r.status, r.lease_owner) for r in rows] == [("fired", other.owner)] * 3


async def test_a_timer_that_cannot_fire_is_retried_after_its_lease_then_marked_failed(env) -> None:
    _, deps = env
    good = await seed(deps, 3)
    bad = await seed(deps, 1, step="no_such_step")
    lease = Lease(owner=f"r-{uuid.uuid4().hex[:6]}", seconds=0.3, max_attempts=2)

    assert await fire_due(deps, limit=100, lease=lease) == 3  # the bad one does not block them
    [first] = await timer_rows(deps, bad)
    assert (first.status, first.attempts) == ("pending", 1)
    assert "no_such_step" in first.last_error
    assert await fire_due(deps, limit=100, lease=lease) == 0  # still leased: no hot retry loop

    await asyncio.sleep(0.4)
    assert await fire_due(deps, limit=100, lease=lease) == 0
    [second] = await timer_rows(deps, bad)
    assert (second.status, second.attempts) == ("failed", 2)
    assert [r.status for r in await timer_rows(deps, good)] == ["fired"] * 3
    assert len(await outbox_ids(deps, good + bad)) == 3


async def test_a_batch_of_csm_tasks_sends_no_statement_for_customer_messages(env) -> None:
    """CSM tasks (webhook steps) are no customer messages: firing a batch of them alone
    writes no journey_messages row and sends no statement for them (one fewer per batch)."""
    _, deps = env
    journeys = await seed(deps, 4)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    sa.event.listen(deps.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await fire_due(deps, limit=100, lease=Lease("csm", 30.0, 5)) >= 4
    finally:
        sa.event.remove(deps.engine.sync_engine, "before_cursor_execute", record)
    assert [r.status for r in await timer_rows(deps, journeys)] == ["fired"] * 4
    assert len(await outbox_ids(deps, journeys)) == 4
    assert any(s.startswith("INSERT INTO outbox") for s in sent)
    assert not [s for s in sent if s.startswith("INSERT INTO journey_messages")]


async def test_the_outbox_refuses_a_second_row_for_the_same_step(env) -> None:
    _, deps = env
    [journey] = await seed(deps, 1)
    assert await fire_due(deps, limit=100, lease=Lease("x", 30.0, 5)) >= 1
    async with deps.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT topic, key, payload, headers FROM outbox WHERE key = :c"),
                {"c": journey.replace("-j", "-c")},
            )
        ).one()
        with pytest.raises(sa.exc.IntegrityError, match="outbox_one_per_notification"):
            await conn.execute(
                sa.text(
                    "INSERT INTO outbox (topic, key, payload, headers)"
                    " VALUES (:t, :k, :p, CAST(:h AS jsonb))"
                ),
                {"t": row.topic, "k": row.key, "p": row.payload, "h": _json(row.headers)},
            )


def _json(value: object) -> str:
    import json

    return json.dumps(value)


class Killed(Exception):
    pass


class DiesAfterKafkaCommit:
    """A relay's producer whose process dies right after Kafka committed the batch."""

    def __init__(self, inner: FencedProducer) -> None:
        self.inner = inner

    async def publish_batch(self, records):
        await self.inner.publish_batch(records)
        raise Killed


async def test_a_batch_on_kafka_but_not_marked_is_found_by_the_next_relay_not_resent(env) -> None:
    settings, deps = env
    journeys = await seed(deps, 3)
    assert await fire_due(deps, limit=100, lease=Lease("r", 30.0, 5)) >= 3
    mine = {decisions.notification_id(j, STEP) for j in journeys}
    relay_id = f"{settings.topic_prefix}relay-{uuid.uuid4().hex[:6]}"

    first = FencedProducer(settings, client_id="first", transactional_id=relay_id)
    await first.start()
    await recover(deps.engine, settings)  # the checkpoint: the topic's end before it publishes
    with pytest.raises(Killed):
        await relay_once(deps.engine, DiesAfterKafkaCommit(first), limit=1000)
    async with deps.engine.connect() as conn:
        unmarked = await conn.execute(
            sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        )
        assert unmarked.scalar() >= 3  # PostgreSQL never saw the mark

    second = FencedProducer(settings, client_id="second", transactional_id=relay_id)
    await second.start()  # fences the first
    try:
        assert await recover(deps.engine, settings) >= 3
        assert await relay_once(deps.engine, second, limit=1000) == 0  # nothing left to send
    finally:
        await second.stop()
        await first.stop()
    counts = collections.Counter(
        nid for nid, _ in await read_notifications(settings, 0) if nid in mine
    )
    assert counts == {nid: 1 for nid in mine}


# --- two real replicas, SIGKILLed in turn ---------------------------------------------

TIMERS = 10_000
KILLS = 5
CLAIM = 25  # timers a replica claims at once in this test
LEASE_S = 5.0


def replica(stack: Stack, settings: CommonSettings, log_dir: Path, name: str):
    env = {
        **stack.env(),
        "TENURE_DATABASE_URL": settings.database_url,
        "TENURE_TOPIC_PREFIX": settings.topic_prefix,
        "TENURE_ORCHESTRATOR_PORT": str(free_port()),
        "TENURE_ORCHESTRATOR_GROUP_ID": f"{settings.topic_prefix}orchestrator",
        "TENURE_ORCHESTRATOR_TIMER_LEASE_S": str(LEASE_S),
        # Small claims: with the default of 400 two replicas fire the 10,000 timers before
        # a killed one is back, and the kills stop landing while work is left.
        "TENURE_ORCHESTRATOR_TIMER_BATCH": str(CLAIM),
    }
    return spawn(
        [sys.executable, "-m", "orchestrator"],
        env=env,
        cwd=REPO,
        log_path=log_dir / f"{name}.log",
    )


async def scalar(deps: Deps, query: str, **params: object) -> Any:
    async with deps.engine.connect() as conn:
        return (await conn.execute(sa.text(query), params)).scalar()


async def wait_for_any(deps: Deps, procs: dict[str, Any], where: str) -> str | None:
    """The first replica of ``procs`` with timers matching ``where`` (``:me`` its lease
    owner pattern), or None once none is pending."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            me = f"%:{proc.pid}:%"
            if await scalar(deps, f"SELECT count(*) FROM timers WHERE {where}", me=me):
                return name
            assert proc.poll() is None, f"replica {name} exited with {proc.returncode}"
        if not await scalar(deps, "SELECT count(*) FROM timers WHERE status = 'pending'"):
            return None
        await asyncio.sleep(0.02)
    raise AssertionError(f"no replica matched {where!r} within 60 s")


async def read_notifications(settings: CommonSettings, expected: int) -> list[tuple[str, bytes]]:
    """Every record of the notifications topic, as (notification id header, value)."""
    topic = topic_name(Topic.NOTIFICATIONS, settings.topic_prefix)
    deadline = time.monotonic() + 120
    while True:
        records, _ = await read_topic(settings, topic, timeout_s=120)
        seen = [(dict(r.headers)["notification_id"].decode(), r.value) for r in records]
        if len(seen) >= expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(1)


@pytest.mark.timeout(900)  # 10,000 timers on a shared 2-core machine: minutes when it is busy
async def test_two_replicas_fire_10000_timers_through_sigkills(
    env, stack: Stack, tmp_path: Path
) -> None:
    settings, deps = env
    journeys = await seed(deps, TIMERS, due=T0 - timedelta(days=1))
    expected = {decisions.notification_id(j, STEP) for j in journeys}
    procs = {
        "a": replica(stack, settings, tmp_path, "a-0"),
        "b": replica(stack, settings, tmp_path, "b-0"),
    }
    kills: list[dict[str, int]] = []
    rng = random.Random(5)
    try:
        for k in range(KILLS):
            # Let the replicas work a little (one has fired a batch), then kill, at a random
            # moment, whichever holds a lease: in the middle of a claimed batch. (Always the
            # same one in turn would wait for a replica that may have got no work: on a
            # quiet machine the other can fire everything first.)
            fired = await wait_for_any(deps, procs, "status = 'fired' AND lease_owner LIKE :me")
            if fired is None:
                break  # nothing left
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            name = await wait_for_any(
                deps,
                procs,
                "status = 'pending' AND lease_owner LIKE :me AND lease_until > clock_timestamp()",
            )
            if name is None:
                break
            proc = procs[name]
            leased = await scalar(
                deps,
                "SELECT count(*) FROM timers WHERE status = 'pending' AND lease_owner LIKE :me",
                me=f"%:{proc.pid}:%",
            )
            pending = await scalar(deps, "SELECT count(*) FROM timers WHERE status = 'pending'")
            stop(proc, sig=signal.SIGKILL)
            kills.append({"leased": leased, "pending": pending})
            procs[name] = replica(stack, settings, tmp_path, f"{name}-{k + 1}")

        deadline = time.monotonic() + 720
        while time.monotonic() < deadline:
            left = await scalar(
                deps,
                "SELECT (SELECT count(*) FROM timers WHERE status = 'pending')"
                " + (SELECT count(*) FROM outbox WHERE published_at IS NULL)",
            )
            if left == 0:
                break
            for name, proc in procs.items():
                assert proc.poll() is None, f"replica {name} exited with {proc.returncode}"
            await asyncio.sleep(0.5)
        assert left == 0, f"{left} timers or outbox rows still pending"
    finally:
        for proc in procs.values():
            stop(proc)

    assert len(kills) >= 3, f"only {len(kills)} kills landed while work was left: {kills}"
    assert all(k["pending"] > 0 for k in kills)

    statuses = await timer_rows(deps, journeys)
    assert collections.Counter(r.status for r in statuses) == {"fired": TIMERS}
    taken_over = sum(1 for r in statuses if r.attempts > 1)
    assert taken_over > 0  # leases of killed replicas ran out and others fired their timers

    outbox = await outbox_ids(deps, journeys)
    assert len(outbox) == TIMERS and set(outbox) == expected  # each step fired exactly once

    # The topic also holds the notifications of the tests above (their outbox rows were
    # published by these replicas' relays): only this test's ids are counted.
    records = [(nid, v) for nid, v in await read_notifications(settings, TIMERS) if nid in expected]
    counts = collections.Counter(nid for nid, _ in records)
    assert set(counts) == expected  # 0 lost
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates == 0  # the relay's takeover finds what a killed leader published
    print(
        f"\nkills={kills} timers taken over after a kill={taken_over}"
        f" records on topic={len(records)} distinct={len(counts)} duplicates={duplicates}"
    )
