"""A notifier killed in the middle of a burst sends no email twice, and loses none silently.

The notifier runs as a real process (``python -m notifier``) against the real Kafka,
PostgreSQL and SMTP sink; it is killed with SIGKILL while emails are being handed to the
sink, and a second one takes over. The sink answers recipients named ``slow…`` a quarter
of a second after storing the message, so at the kill some messages are stored but not
yet acknowledged: exactly the emails whose fate the notifier cannot know. Every
notification must end ``sent`` (one .eml), ``unknown`` (at most one .eml, reported on
``deliveries``) or ``dead``, and no notification id may have two .eml files.
"""

from __future__ import annotations

import asyncio
import collections
import email
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.db import create_engine
from common.kafka import KafkaPublisher, ensure_topics
from common.messages import Delivery
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.procs import free_port, spawn, stop, wait_for_port
from devstack.stack import REPO, Stack
from notifier.entrypoints.deliver import Deliverer
from tests.integration.test_notifier import (  # noqa: F401  (deliverer: a fixture)
    as_record,
    deliverer,
    find_records,
    mails_to,
    notification,
    outcomes,
    with_settings,
)

BURST = 300
LEASE_S = 2.0
POOL = 16  # the notifier's default SMTP pool
IN_FLIGHT = 64


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_notifier_crash")


@pytest.fixture(scope="module")
async def common(database_url: str, common_settings: CommonSettings) -> CommonSettings:
    common = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": f"it-crash-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(common, [Topic.DELIVERIES, Topic.NOTIFICATIONS])
    return common


def notifier(stack: Stack, common: CommonSettings, log: Path, port: int) -> Any:
    env = {
        **stack.env(),
        "TENURE_DATABASE_URL": common.database_url,
        "TENURE_TOPIC_PREFIX": common.topic_prefix,
        "TENURE_NOTIFIER_PORT": str(port),
        "TENURE_NOTIFIER_GROUP_ID": f"{common.topic_prefix}notifier",
        "TENURE_NOTIFIER_SENDING_LEASE_S": str(LEASE_S),
        "TENURE_NOTIFIER_RETRY_POLL_S": "0.2",
        # Fewer in flight than the default 256: the claims a killed worker leaves are
        # taken over one at a time by the retry worker, a quarter second each here.
        "TENURE_NOTIFIER_DELIVERY_CONCURRENCY": str(IN_FLIGHT),
    }
    proc = spawn([sys.executable, "-m", "notifier"], env=env, cwd=REPO, log_path=log)
    wait_for_port(port, timeout=60, proc=proc, what="notifier")
    return proc


async def statuses(common: CommonSettings, ids: list[str]) -> collections.Counter[str]:
    engine = create_engine(common.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT status, (reported_at IS NOT NULL) AS reported, count(*) FROM "
                    "deliveries WHERE notification_id = ANY(:ids) GROUP BY 1, 2"
                ),
                {"ids": ids},
            )
            found: collections.Counter[str] = collections.Counter()
            for status, reported, count in rows:
                found[status if reported or status not in TERMINAL else f"{status}?"] += count
            return found
    finally:
        await engine.dispose()


TERMINAL = ("sent", "unknown", "dead", "suppressed", "bounced")


def emails_per_notification(stack: Stack, ids: set[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in stack.mail_dir.glob("*.eml"):
        nid = email.message_from_bytes(path.read_bytes())["X-Tenure-Notification-Id"]
        if nid in ids:
            counts[nid] += 1
    return counts


@pytest.mark.timeout(180)
async def test_sigkill_during_a_burst_sends_no_email_twice(
    stack: Stack, common: CommonSettings, tmp_path: Path
) -> None:
    burst = [
        notification(recipient=f"slow-{uuid.uuid4().hex[:10]}@example.com") for _ in range(BURST)
    ]
    ids = [n.notification_id for n in burst]
    async with KafkaPublisher(common, client_id="it-crash") as publisher:
        for n in burst:
            await publisher.publish(Topic.NOTIFICATIONS, n.customer_id, n)

    first = notifier(stack, common, tmp_path / "first.log", free_port())
    try:
        # Kill it once it has sent some and has emails handed to the sink, unanswered.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = await statuses(common, ids)
            if now["sent"] >= BURST // 5 and now["handed"] >= POOL // 2:
                break
            assert first.poll() is None, f"notifier exited with {first.returncode}"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no sends in flight within 60 s: {now}")
    finally:
        stop(first, sig=signal.SIGKILL)
    at_kill = await statuses(common, ids)
    killed_at = time.monotonic()

    port = free_port()
    second = notifier(stack, common, tmp_path / "second.log", port)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = await statuses(common, ids)
            if sum(done[s] for s in TERMINAL) == BURST:
                break
            assert second.poll() is None, f"notifier exited with {second.returncode}"
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"not every notification finished: {done}")
        recovered_s = time.monotonic() - killed_at
        async with httpx.AsyncClient() as client:
            scraped = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop(second)

    sent_twice = {nid: c for nid, c in emails_per_notification(stack, set(ids)).items() if c > 1}
    assert sent_twice == {}, f"{len(sent_twice)} emails sent twice (kill at {at_kill})"
    assert set(done) <= {"sent", "unknown", "dead"}, done
    unknown = done["unknown"]
    # The kill caught emails handed to the sink: those are `unknown`, not every
    # notification claimed. (Handed: the hand-over stage, at most twice the SMTP pool,
    # and emails sent whose outcome was still on its way to Kafka and the log.)
    assert 1 <= unknown <= at_kill["handed"], (at_kill, done)
    counts = emails_per_notification(stack, set(ids))
    engine = create_engine(common.database_url, pool_size=1)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT notification_id, status FROM deliveries "
                    "WHERE notification_id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).all()
    await engine.dispose()
    by_status: dict[str, set[str]] = collections.defaultdict(set)
    for nid, status in rows:
        by_status[status].add(nid)
    assert all(counts[nid] == 1 for nid in by_status["sent"])
    assert all(counts[nid] <= 1 for nid in by_status["unknown"])
    # `unknown` is reported like any outcome: the customer's history shows it.
    published = await find_records(
        common, topic_name(Topic.DELIVERIES, common.topic_prefix), by_status["unknown"]
    )
    reported = {Delivery.model_validate(v).notification_id for _, v in published}
    assert reported == by_status["unknown"]
    assert all(Delivery.model_validate(v).status == "unknown" for _, v in published)
    line = 'tenure_notifier_taken_over_total{channel="email",outcome="unknown"}'
    assert f"{line} {float(unknown)}" in scraped
    print(
        f"\nat the kill: {dict(at_kill)}; after: {dict(done)}; emails stored for "
        f"{len(counts)} notifications, {sum(1 for nid in by_status['unknown'] if counts[nid])} "
        f"of the {unknown} unknown ones; all finished {recovered_s:.1f} s after the kill"
    )


@pytest.mark.parametrize(
    ("policy", "marketing", "outcome"),
    [
        ("transactional", True, "unknown"),
        ("transactional", False, "sent"),
        ("never", False, "unknown"),
        ("always", True, "sent"),
    ],
)
async def test_an_email_left_handed_is_unknown_or_sent_again_as_configured(
    deliverer: Deliverer,  # noqa: F811
    stack: Stack,
    common: CommonSettings,
    policy: str,
    marketing: bool,
    outcome: str,
) -> None:
    d = with_settings(deliverer, email_resend_after_crash=policy)
    n = notification()
    n = n.model_copy(update={"context": {**n.context, "marketing": marketing}})
    # As if a worker claimed it, marked it handed and died before the answer was logged.
    await d.log.claim(
        notification_id=n.notification_id,
        customer_id=n.customer_id,
        channel="email",
        payload=n.model_dump_json().encode(),
        now=d.clock.now(),
    )
    await d.log.handed(n.notification_id)
    await asyncio.sleep(d.settings.sending_lease_s + 0.2)
    assert await d.retry_due() == 1
    assert await d.log.status(n.notification_id) == outcome
    assert len(mails_to(stack, n.recipient or "")) == (1 if outcome == "sent" else 0)
    assert (await outcomes(common, n.notification_id))[n.notification_id] == [outcome]
