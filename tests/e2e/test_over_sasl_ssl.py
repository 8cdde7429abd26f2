"""The retention flow end to end with every service on SASL_SSL.

A stack of its own (its database on the session's PostgreSQL server, its topics on the
session's broker with SSL and SASL_SSL listeners and a throwaway CA: the fixture
``secure_kafka``, tests/secure_kafka.py, shared with tests/integration/test_kafka_security.py
under a topic prefix of its own); every process is
given only the SASL_SSL listener, with the CA file and a SCRAM-SHA-512 login, so a
client that left the security options out could not connect at all. Events posted over
HTTP -> scoring (faust, broker_credentials) -> orchestrator -> notifier -> the offer
email and the CSM call on day 1.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.kafka import check_connection
from devstack.stack import SERVICES, Ports, Stack
from tests.conftest import E2E_TIME_SCALE
from tests.e2e.journeys import new_customer
from tests.e2e.test_retention_offer import (
    DAY_S,
    churning_customer,
    emails_to,
    wait_for,
    webhooks_for,
)
from tests.secure_kafka import SecureKafka


@pytest.fixture(scope="module")
def sasl_stack(
    stack: Stack, secure_kafka: SecureKafka, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="tenure-test-sasl-"))
    secure = Stack(
        root=root,
        ports=Ports.free(),
        time_scale=E2E_TIME_SCALE,
        topic_prefix="sasl.",
        database_url=stack.new_database("tenure_sasl"),
        kafka_client=secure_kafka.material.client("SASL_SSL"),
        _kafka=secure_kafka.broker,  # the session's TLS broker (a topic prefix of its own)
    )
    try:
        for folder in (secure.mail_dir, secure.webhook_dir, secure.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        secure.start_postgres()  # migrations only: the database is new_database's
        secure.create_topics()  # by ensure_topics over SASL_SSL
        secure.start_sinks()
        secure.start_services(SERVICES)
        yield secure
    finally:  # not secure.stop(): the broker is the session's
        secure.stop_services([n for n in reversed(list(secure.procs)) if n != "sinks"])
        secure.stop_services(["sinks"])
        if request.session.testsfailed:
            print(f"\nthe SASL_SSL stack's logs are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def test_the_services_are_given_only_the_sasl_ssl_listener(sasl_stack: Stack) -> None:
    env = sasl_stack.env()
    assert env["TENURE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["TENURE_KAFKA_BOOTSTRAP"] != sasl_stack.kafka.bootstrap  # not PLAINTEXT's
    assert env["TENURE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    await check_connection(sasl_stack.common_settings())
    assert sasl_stack.dead() == {}


def test_retention_offer_and_csm_call_over_sasl_ssl(sasl_stack: Stack) -> None:
    customer = new_customer("sasl-silent")  # in the treatment arm
    address = f"{customer}@example.com"
    churning_customer(sasl_stack, customer)
    offer = wait_for(lambda: emails_to(sasl_stack.mail_dir, address), 60, "the offer email")[0]
    assert "offer" in offer["Subject"].lower()
    call = wait_for(
        lambda: [
            h
            for h in webhooks_for(sasl_stack.webhook_dir, customer)
            if h["body"]["step"] == "retention_call"
        ],
        4 * DAY_S,
        "the CSM call on day 1",
    )[0]
    assert call["path"] == "/csm"
    assert call["body"]["explanation"]["churn_probability"] >= 0.90
    time.sleep(1)
    assert len(emails_to(sasl_stack.mail_dir, address)) == 1  # sent once
    assert sasl_stack.dead() == {}
