"""Every kind of Kafka client over TLS and SASL/SCRAM, against a real broker with SSL
(mutual TLS), SASL_SSL and SASL_PLAINTEXT (SCRAM-SHA-512) listeners and a CA made for the
session (``secure_kafka`` in tests/conftest.py); and a wrong password, an unknown CA or a missing
client certificate stopping the start-up check, and each service's process, at once with
one line naming the setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from common.kafka import (
    DeadLetters,
    FencedProducer,
    KafkaPublisher,
    KafkaSecurityError,
    Record,
    Sequential,
    TransactionalPublisher,
    check_connection,
    ensure_topics,
    follow,
    make_consumer,
    read_topic,
    run_consumer,
)
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import REPO, Stack
from tests.secure_kafka import SecureKafka

FAIL_FAST_S = 15.0


def prefixed(settings: CommonSettings) -> CommonSettings:
    return settings.model_copy(update={"topic_prefix": f"sec-{uuid.uuid4().hex[:6]}."})


async def publish_with_every_producer(settings: CommonSettings) -> set[bytes]:
    """One record from each producer (plain, transactional, fenced) on ``signals``."""
    values = {b'{"by":"plain"}', b'{"by":"transactional"}', b'{"by":"fenced"}'}
    async with KafkaPublisher(settings, client_id="sec-plain") as plain:
        await plain.publish(Topic.SIGNALS, "c-1", b'{"by":"plain"}')
    async with TransactionalPublisher(
        settings,
        client_id="sec-tx",
        transactional_id=f"{settings.topic_prefix}tx",
        transaction_timeout_ms=10_000,
        commit_reserve_s=1.0,
        max_group_records=100,
        committers=1,
    ) as transactional:
        await transactional.publish(Topic.SIGNALS, "c-2", b'{"by":"transactional"}')
    fenced = FencedProducer(
        settings, client_id="sec-fenced", transactional_id=f"{settings.topic_prefix}relay"
    )
    await fenced.start()
    try:
        await fenced.publish_batch([(Topic.SIGNALS, "c-3", b'{"by":"fenced"}', [])])
    finally:
        await fenced.stop()
    return values


async def consume_with_run_consumer(settings: CommonSettings, n: int) -> list[Record]:
    """The first ``n`` records of ``signals`` through the one consumer loop (a group)."""
    seen: list[Record] = []
    stop = asyncio.Event()

    async def handle(record: Record) -> None:
        seen.append(record)
        if len(seen) >= n:
            stop.set()

    consumer = make_consumer(settings, [Topic.SIGNALS], group_id=f"{settings.topic_prefix}g")
    await consumer.start()
    try:
        async with KafkaPublisher(settings, client_id="sec-dlq") as publisher:
            await asyncio.wait_for(
                run_consumer(
                    consumer,
                    handle,
                    DeadLetters(publisher, consumer_name="sec"),
                    stop=stop,
                    name="sec consumer",
                    strategy=Sequential(),
                ),
                60,
            )
    finally:
        await consumer.stop()
    return seen


async def round_trip(settings: CommonSettings) -> None:
    await check_connection(settings)
    await ensure_topics(settings, [Topic.SIGNALS, Topic.SCORES])  # the admin client
    values = await publish_with_every_producer(settings)
    consumed = await consume_with_run_consumer(settings, len(values))
    assert {r.value for r in consumed} == values
    records, _ = await read_topic(settings, topic_name(Topic.SIGNALS, settings.topic_prefix))
    assert {r.value for r in records} == values
    follower = make_consumer(settings, [Topic.SIGNALS], group_id=None)
    await follower.start()
    try:
        followed: set[bytes] = set()
        async with asyncio.timeout(30):
            async for record in follow(follower, timeout_s=0.5):
                followed.add(record.value)
                if followed == values:
                    break
    finally:
        await follower.stop()


async def test_every_client_round_trips_over_sasl_ssl(secure_kafka: SecureKafka) -> None:
    await round_trip(prefixed(secure_kafka.settings("SASL_SSL")))


async def test_every_client_round_trips_over_sasl_plaintext(secure_kafka: SecureKafka) -> None:
    await round_trip(prefixed(secure_kafka.settings("SASL_PLAINTEXT")))


async def test_every_client_round_trips_over_mutual_tls(secure_kafka: SecureKafka) -> None:
    await round_trip(prefixed(secure_kafka.settings("SSL")))


async def refused(settings: CommonSettings) -> str:
    began = time.monotonic()
    with pytest.raises(KafkaSecurityError) as caught:
        await check_connection(settings)
    assert time.monotonic() - began < FAIL_FAST_S
    assert "\n" not in str(caught.value)
    return str(caught.value)


async def test_a_wrong_password_is_refused_at_once_naming_the_settings(
    secure_kafka: SecureKafka,
) -> None:
    message = await refused(secure_kafka.settings("SASL_SSL", kafka_sasl_password="wrong"))
    assert message.startswith(
        "Kafka refused the SASL credentials (TENURE_KAFKA_SASL_USERNAME/TENURE_KAFKA_SASL_PASSWORD)"
    )
    message = await refused(secure_kafka.settings("SASL_SSL", kafka_sasl_username="nobody"))
    assert "TENURE_KAFKA_SASL_USERNAME" in message


async def test_a_wrong_password_over_sasl_plaintext_is_refused_at_once(
    secure_kafka: SecureKafka,
) -> None:
    message = await refused(secure_kafka.settings("SASL_PLAINTEXT", kafka_sasl_password="wrong"))
    assert message.startswith(
        "Kafka refused the SASL credentials (TENURE_KAFKA_SASL_USERNAME/TENURE_KAFKA_SASL_PASSWORD)"
    ), message


async def test_an_unknown_ca_is_refused_at_once_naming_the_setting(
    secure_kafka: SecureKafka,
) -> None:
    other = secure_kafka.files / "other-ca.pem"
    for protocol in ("SASL_SSL", "SSL"):
        message = await refused(secure_kafka.settings(protocol, kafka_ssl_cafile=other))
        assert message.startswith("the broker's certificate at 127.0.0.1:"), message
        assert f"is not trusted by TENURE_KAFKA_SSL_CAFILE ({other})" in message


async def test_ensure_topics_says_why_kafka_refused_it(secure_kafka: SecureKafka) -> None:
    """The topics Job: a wrong password stops it with the same line, not "Unable to
    bootstrap"."""
    settings = prefixed(secure_kafka.settings("SASL_SSL", kafka_sasl_password="wrong"))
    began = time.monotonic()
    with pytest.raises(KafkaSecurityError, match=r"^Kafka refused the SASL credentials"):
        await ensure_topics(settings, [Topic.SIGNALS])
    assert time.monotonic() - began < FAIL_FAST_S


async def test_a_missing_client_certificate_other_mechanism_or_wrong_protocol_is_refused(
    secure_kafka: SecureKafka,
) -> None:
    no_cert = secure_kafka.settings("SSL", kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    assert "refused the client certificate (TENURE_KAFKA_SSL_CERTFILE" in await refused(no_cert)
    sasl_port = secure_kafka.material.tls.sasl_ssl_port
    plain = secure_kafka.settings("PLAINTEXT", kafka_bootstrap=f"127.0.0.1:{sasl_port}")
    assert "TENURE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in await refused(plain)
    sha256 = secure_kafka.settings("SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256")
    assert "does not enable TENURE_KAFKA_SASL_MECHANISM=SCRAM-SHA-256" in await refused(sha256)
    missing = secure_kafka.settings("SASL_SSL", kafka_ssl_cafile=Path("/nonexistent/ca.pem"))
    assert "TENURE_KAFKA_SSL_CAFILE: no such file" in await refused(missing)


async def test_an_unreachable_cluster_is_an_outage_not_a_configuration_error(
    secure_kafka: SecureKafka,
) -> None:
    """Nobody listening: the check returns (each client waits the outage out as before)."""
    settings = secure_kafka.settings("SASL_SSL", kafka_bootstrap="127.0.0.1:1")
    await asyncio.wait_for(check_connection(settings), FAIL_FAST_S)


@pytest.mark.parametrize("service", ["ingest", "scoring", "orchestrator", "notifier"])
@pytest.mark.parametrize("fault", ["password", "ca"])
def test_a_service_stops_at_start_up_with_one_line_naming_the_setting(
    stack: Stack, secure_kafka: SecureKafka, tmp_path: Path, service: str, fault: str
) -> None:
    bad = (
        {"kafka_sasl_password": "wrong"}
        if fault == "password"
        else {"kafka_ssl_cafile": secure_kafka.files / "other-ca.pem"}
    )
    client = {**secure_kafka.material.client("SASL_SSL"), **bad}
    env = {
        **os.environ,
        **stack.env(),
        **{f"TENURE_{k.upper()}": str(v) for k, v in client.items()},
        "TENURE_SCORING_DATA_DIR": str(tmp_path / "scoring"),
    }
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", service],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr[-2000:]
    assert took < FAIL_FAST_S, took
    last = done.stderr.strip().splitlines()[-1]
    expected = (
        "(TENURE_KAFKA_SASL_USERNAME/TENURE_KAFKA_SASL_PASSWORD)"
        if fault == "password"
        else "is not trusted by TENURE_KAFKA_SSL_CAFILE"
    )
    assert last.startswith(f"{service}: "), last
    assert expected in last, last
    assert "Traceback" not in done.stderr
