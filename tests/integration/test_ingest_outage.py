"""Broker outage: ingest answers 503 (never 202) while Kafka is down, and recovers by itself.

A broker of its own (the session broker stays up for the other tests) is stopped in the
middle of a stream of events and started again, once or several times in a row; the
ingest app is not restarted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from common.apikeys import ApiKey, FakeAuthenticator, Scope
from common.events import EXAMPLES
from common.kafka import ensure_topics, read_topic
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.kafka import KafkaBroker
from devstack.procs import free_port
from devstack.stack import REPO
from ingest.api import create_app
from ingest.bootstrap import make_publisher
from ingest.settings import IngestSettings

PUBLISH_TIMEOUT_S = 2.0
KEY = "outage-key"


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(
        libs=REPO / ".stack" / "kafka" / "libs",
        home=tmp_path_factory.mktemp("outage") / "kafka",
        port=free_port(),
        controller_port=free_port(),
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture()
def broker(module_broker: KafkaBroker) -> KafkaBroker:
    """The module's broker (one start for the three tests, each on topics of its own),
    running: a test that failed mid-outage may have left it stopped."""
    if module_broker.proc is None or module_broker.proc.poll() is not None:
        module_broker.start()
    return module_broker


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_outage_gives_503_then_recovers_and_kafka_holds_exactly_the_202s(
    broker: KafkaBroker, kill: bool
) -> None:
    common = CommonSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"outage-{uuid.uuid4().hex[:6]}.",
        topic_partitions=3,
    )
    await ensure_topics(common, Topic.events())
    settings = IngestSettings(
        common=common,
        keys_from_database=False,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        retry_after_s=3,
    )
    answers: dict[str, int] = {}
    phases: dict[str, str] = {}

    publisher = make_publisher(
        settings, transactional_id=f"outage-{uuid.uuid4().hex[:6]}", request_timeout_ms=3000
    )
    async with publisher:
        app = create_app(
            settings,
            publisher=publisher,
            authenticator=FakeAuthenticator({KEY: ApiKey.static("k", [Scope.EVENTS_WRITE])}),
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://i", timeout=30
        ) as client:

            async def send(phase: str) -> tuple[int, float, httpx.Response]:
                event_id = f"{phase}-{uuid.uuid4().hex[:8]}"
                event = {
                    **EXAMPLES["login"],
                    "event_id": event_id,
                    "customer_id": f"c-{len(answers) % 13}",
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                started = time.monotonic()
                response = await client.post("/v1/events", json=event, headers={"X-API-Key": KEY})
                answers[event_id] = response.status_code
                phases[event_id] = phase
                return response.status_code, time.monotonic() - started, response

            for _ in range(30):
                status, _, _ = await send("before")
                assert status == 202

            # A stream of concurrent requests runs across the moment the broker stops, so
            # that transactions are in flight when it goes.
            crossing = asyncio.gather(*(send("crossing") for _ in range(40)))
            await asyncio.sleep(0.005)
            await asyncio.to_thread(broker.stop, kill=kill)
            for status, _, _ in await crossing:
                assert status in (202, 503)
            down = [await send("down") for _ in range(5)]
            for status, elapsed, response in down:
                assert status == 503
                assert response.headers["Retry-After"] == "3"
                assert elapsed < PUBLISH_TIMEOUT_S + 1.0  # bounded, whatever the broker does
            assert (await client.get("/readyz")).status_code == 503

            await asyncio.to_thread(broker.start)
            deadline = time.monotonic() + 90
            while True:  # the same app, never restarted
                status, _, _ = await send("recovering")
                if status == 202:
                    break
                assert status == 503
                assert time.monotonic() < deadline, "ingest did not recover within 90 s"
                await asyncio.sleep(0.5)
            for _ in range(30):
                status, _, _ = await send("after")
                assert status == 202
            assert (await client.get("/readyz")).status_code == 200

    refused = await assert_kafka_holds_exactly_the_202s(common, answers)
    assert publisher.outcomes["unknown"] == 0
    assert publisher.outcomes["committed"] > 0
    crossing = [e for e, p in phases.items() if p == "crossing"]
    print(f"\ncrossing the stop: {sum(answers[e] == 202 for e in crossing)} of {len(crossing)} 202")
    accepted = len(answers) - len(refused)
    print(f"503 answers: {len(refused)}, 202 answers: {accepted}, all and only 202s in Kafka")


async def assert_kafka_holds_exactly_the_202s(
    common: CommonSettings, answers: dict[str, int], ambiguous_events: int = 0
) -> set[str]:
    """Every event answered 202 is on the login topic once, and no other; the 503s.

    ``ambiguous_events``: events of transactions whose commit got no answer, or an error
    after a broker restart, when the broker may have committed it all the same. Those
    were answered 503 and may be in Kafka (a retry is a duplicate that consumers drop by
    ``event_id``: docs/decisions.md); at most that many refused events may be found.
    """
    await asyncio.sleep(3)  # give aborted batches of the outage time to land, if they would
    topic = topic_name(Topic.EVENTS_LOGIN, common.topic_prefix)
    records, _ = await read_topic(common, topic, timeout_s=60)
    in_kafka = [orjson.loads(r.value)["event_id"] for r in records]

    accepted = {e for e, s in answers.items() if s == 202}
    refused = {e for e, s in answers.items() if s == 503}
    assert accepted | refused == set(answers)  # nothing but 202 and 503
    assert len(in_kafka) == len(set(in_kafka)), "an event was written twice"
    # read_committed: what a consumer sees is exactly what ingest acknowledged.
    written_refused = set(in_kafka) & refused
    assert accepted <= set(in_kafka), f"missing: {sorted(accepted - set(in_kafka))}"
    assert len(written_refused) <= ambiguous_events, (
        f"written although refused: {sorted(written_refused)}, "
        f"only {ambiguous_events} in transactions of unknown outcome"
    )
    assert set(in_kafka) <= accepted | refused
    return refused


RESTARTS = 3
SENDERS = 8
CLEAN_WINDOW_S = 5.0
RECOVERY_BOUND_S = 20.0


async def test_after_repeated_restarts_under_load_ingest_returns_to_no_errors(
    broker: KafkaBroker,
) -> None:
    """Issue 13 item 10: after broker restarts in a row, ingest used to keep answering 503
    to 10-28 % of events (producers left broken by the restarts were kept) until it was
    restarted itself. Now each restart is followed, within seconds, by a window of
    ``CLEAN_WINDOW_S`` without a single error; and Kafka holds exactly the 202s."""
    common = CommonSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"restarts-{uuid.uuid4().hex[:6]}.",
        topic_partitions=3,
    )
    await ensure_topics(common, Topic.events())
    settings = IngestSettings(
        common=common, keys_from_database=False, publish_timeout_s=PUBLISH_TIMEOUT_S
    )
    answers: dict[str, int] = {}
    log: list[tuple[float, int]] = []  # (when answered, status)
    publisher = make_publisher(
        settings, transactional_id=f"restarts-{uuid.uuid4().hex[:6]}", request_timeout_ms=3000
    )
    async with publisher:
        app = create_app(
            settings,
            publisher=publisher,
            authenticator=FakeAuthenticator({KEY: ApiKey.static("k", [Scope.EVENTS_WRITE])}),
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://i", timeout=30
        ) as client:
            stop = asyncio.Event()

            async def sender(n: int) -> None:  # ~15 events a second each
                i = 0
                while not stop.is_set():
                    event_id = f"r{n}-{i}"
                    event = {
                        **EXAMPLES["login"],
                        "event_id": event_id,
                        "customer_id": f"c-{i % 17}",
                        "occurred_at": datetime.now(UTC).isoformat(),
                    }
                    i += 1
                    response = await client.post(
                        "/v1/events", json=event, headers={"X-API-Key": KEY}
                    )
                    answers[event_id] = response.status_code
                    log.append((time.monotonic(), response.status_code))
                    await asyncio.sleep(0.05)

            senders = [asyncio.create_task(sender(n)) for n in range(SENDERS)]

            async def clean_window_by(limit: float) -> float:
                """When a window of CLEAN_WINDOW_S without errors (and with answers) ended:
                the last CLEAN_WINDOW_S, looked at every 0.2 s; it must start before
                ``limit``."""
                since = time.monotonic()
                while True:
                    await asyncio.sleep(0.2)
                    now = time.monotonic()
                    window = [s for t, s in log if t >= now - CLEAN_WINDOW_S]
                    if now - since >= CLEAN_WINDOW_S and window and all(s == 202 for s in window):
                        return now
                    errors = sum(s != 202 for s in window)
                    assert now - CLEAN_WINDOW_S < limit, (
                        f"still {errors} errors in {len(window)} answers "
                        f"({100 * errors / max(1, len(window)):.0f} %) {RECOVERY_BOUND_S:.0f} s "
                        f"after the broker came back; transactions: {dict(publisher.outcomes)}"
                    )

            try:
                await clean_window_by(time.monotonic() + 30)  # warmed up
                for restart in range(RESTARTS):
                    await asyncio.to_thread(broker.stop, kill=restart % 2 == 1)
                    await asyncio.sleep(1)
                    await asyncio.to_thread(broker.start)
                    back = time.monotonic()
                    clean = await clean_window_by(back + RECOVERY_BOUND_S)
                    print(
                        f"\nrestart {restart + 1}: no error for {CLEAN_WINDOW_S:.0f} s, "
                        f"{clean - back:.1f} s after the broker was back"
                    )
            finally:
                stop.set()
                await asyncio.gather(*senders)

    # A sender waits for its answer before its next event: a transaction holds one
    # event per sender at most.
    ambiguous = publisher.outcomes["unknown"] + publisher.outcomes["failed"]
    refused = await assert_kafka_holds_exactly_the_202s(
        common, answers, ambiguous_events=ambiguous * SENDERS
    )
    print(
        f"{len(answers)} events, {len(refused)} answered 503, "
        f"producers replaced: {publisher.replaced}, transactions: {dict(publisher.outcomes)}"
    )
