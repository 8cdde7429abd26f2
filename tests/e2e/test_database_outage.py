"""A PostgreSQL outage of a minute under load: every service rides it out, nothing is lost.

The four services run as processes on a PostgreSQL of their own (the session's is shared
by other tests), beside the session's Kafka broker, on a clock where a simulated day lasts
6 s. Customers whose churn probability passes 0.70 start retention_offer journeys: offer
email (+0), CSM call webhook (+1 d), escalation webhook (+3 d, as nobody clicks). Once
the first offers are out, PostgreSQL is stopped for 60 s while more customers arrive;
then it is started again on the same socket.

Before the fix the orchestrator's consumer gave up after 5 database attempts and the
process exited with 1 within seconds, the notifier likewise while delivering. Now:
every process stays alive; ``/readyz`` of the orchestrator and the notifier says 503
during the outage and 200 after; their routes that need the database answer 503, not
500; ingest keeps accepting events; and afterwards every journey has sent each of its
three messages exactly once (counted at the SMTP sink and the webhook receiver).
"""

from __future__ import annotations

import asyncio
import email
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from common.apikeys import KeyRepository, generate
from common.db import create_engine
from devstack.postgres import EmbeddedPostgres
from devstack.stack import SERVICES, Ports, Stack
from notifier.domain.signing import issue_inbox_token
from notifier.settings import derive_inbox_key
from orchestrator.domain import decisions
from tests.e2e.journeys import fast_env, identify, new_customer, post

SCALE = 14_400.0  # a simulated day every 6 real seconds
OUTAGE_S = 60.0
BEFORE = 4  # customers whose journeys are under way when PostgreSQL stops
DURING = 6  # customers whose events arrive during the outage
STEPS = {"offer": "email", "retention_call": "webhook", "escalation": "webhook"}


@pytest.fixture(scope="module")
def outage(
    stack: Stack, request: pytest.FixtureRequest
) -> Iterator[tuple[Stack, EmbeddedPostgres, str]]:
    root = Path(tempfile.mkdtemp(prefix="tenure-test-outage-"))
    pg = EmbeddedPostgres(root / "pg")
    url = pg.start()
    # The session's broker, shared (a topic prefix of its own keeps the records apart).
    st = Stack(
        root=root,
        ports=Ports.free(),
        time_scale=SCALE,
        topic_prefix="outage.",
        database_url=url,
        _kafka=stack.kafka,
    )
    try:
        for folder in (st.mail_dir, st.webhook_dir, st.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        st.start_postgres()  # migrations only: the server is ours
        st.create_topics()
        st.start_sinks()
        key = operator_key(url)
        for name in SERVICES:
            st.start_service(name, fast_env(SCALE))
        st.wait_ready()
        yield st, pg, key
    finally:
        st.stop_services([n for n in reversed(list(st.procs)) if n != "sinks"])
        st.stop_services(["sinks"])
        pg.stop()
        if request.session.testsfailed:
            print(f"\nthe outage test's logs and data are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def operator_key(url: str) -> str:
    """A key with operator:read, made before the orchestrator loads its keys."""

    async def create() -> str:
        engine = create_engine(url, pool_size=1)
        try:
            full, new = generate("outage-test", ["operator:read"])
            await KeyRepository(engine).create(new)
            return full
        finally:
            await engine.dispose()

    return asyncio.run(create())


def inbox_token(st: Stack, customer: str) -> str:
    """An in-app inbox token as the product backend would sign it."""
    secret = SecretStr(st.env()["TENURE_NOTIFIER_LINK_SECRET"])
    key = derive_inbox_key(SecretStr(""), secret)
    return issue_inbox_token(customer, int(time.time()) + 3600, key)


def get(port: int, path: str, **headers: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def sent(st: Stack) -> Counter[tuple[str, str]]:
    """(notification id, channel) -> how many times it reached the sinks."""
    found: Counter[tuple[str, str]] = Counter()
    for path in st.mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        found[message["X-Tenure-Notification-Id"], "email"] += 1
    for path in st.webhook_dir.glob("*.json"):
        body = json.loads(json.loads(path.read_text())["body"])
        found[body["notification_id"], "webhook"] += 1
    return found


def journeys_of(st: Stack, customers: list[str]) -> dict[str, str]:
    """customer -> retention_offer journey id, from the messages the sinks received."""
    found = {}
    for path in st.webhook_dir.glob("*.json"):
        body = json.loads(json.loads(path.read_text())["body"])
        if body.get("playbook") == "retention_offer" and body["customer_id"] in customers:
            found[body["customer_id"]] = body["journey_id"]
    return found


def churning(st: Stack, customer: str) -> None:
    """What makes a customer's churn probability pass 0.70 (retention_offer starts)."""
    post(st, SCALE, customer, "support", "ticket_opened", ticket_id="t1", sentiment=0.1)
    post(st, SCALE, customer, "intent", "competitor_trial", source="g2")
    post(st, SCALE, customer, "intent", "alternative_search", source="google")


def alive(st: Stack) -> None:
    assert not st.dead(), f"processes exited: {st.dead()}; logs in {st.log_dir}"


def test_every_service_rides_out_a_minute_without_postgresql(
    outage: tuple[Stack, EmbeddedPostgres, str],
) -> None:
    st, pg, key = outage
    p = st.ports
    token = inbox_token(st, "c-inbox")
    before = [new_customer("outage-a") for _ in range(BEFORE)]
    during = [new_customer("outage-b") for _ in range(DURING)]
    # Known customers (their profiles projected), then churn signals: a journey that
    # starts before its customer's profile arrives has no address to send the offer to,
    # and after a backlog the consumer reads the topics in any interleaving.
    for customer in before + during:
        identify(st, SCALE, customer, plan="pro")
    time.sleep(2)
    for customer in before:
        churning(st, customer)
    deadline = time.monotonic() + 40
    while sum(1 for (_, ch) in sent(st) if ch == "email") < BEFORE // 2:
        assert time.monotonic() < deadline, f"no offers sent; logs in {st.log_dir}"
        time.sleep(0.2)
    assert get(p.orchestrator, "/readyz") == 200 and get(p.notifier, "/readyz") == 200

    pg.stop()
    stopped = time.monotonic()
    for customer in during:  # ingest needs no database: 202 all the same
        churning(st, customer)
    seen: dict[str, set[int]] = {"orchestrator": set(), "notifier": set(), "ingest": set()}
    answers: dict[str, set[int]] = {"customer": set(), "inbox": set()}
    while time.monotonic() - stopped < OUTAGE_S:
        alive(st)
        seen["orchestrator"].add(get(p.orchestrator, "/readyz"))
        seen["notifier"].add(get(p.notifier, "/readyz"))
        seen["ingest"].add(get(p.ingest, "/readyz"))
        answers["customer"].add(
            get(p.orchestrator, f"/v1/customers/{before[0]}", **{"X-API-Key": key})
        )
        answers["inbox"].add(get(p.notifier, "/v1/inbox", Authorization=f"Bearer {token}"))
        time.sleep(2)
    assert seen == {"orchestrator": {503}, "notifier": {503}, "ingest": {200}}
    assert answers == {"customer": {503}, "inbox": {503}}

    restarted = pg.start()
    assert restarted == st.database_url  # same socket: the services reconnect by themselves
    deadline = time.monotonic() + 20
    while get(p.orchestrator, "/readyz") != 200 or get(p.notifier, "/readyz") != 200:
        assert time.monotonic() < deadline, "not ready 20 s after PostgreSQL came back"
        time.sleep(0.5)
    assert get(p.orchestrator, f"/v1/customers/{before[0]}", **{"X-API-Key": key}) == 200

    customers = before + during
    deadline = time.monotonic() + 60
    while True:
        alive(st)
        journeys = journeys_of(st, customers)
        expected = {
            (decisions.notification_id(journey, step), channel)
            for journey in journeys.values()
            for step, channel in STEPS.items()
        }
        if len(journeys) == len(customers) and expected <= set(sent(st)):
            break
        assert time.monotonic() < deadline, (
            f"{len(journeys)} of {len(customers)} journeys, "
            f"{len(expected & set(sent(st)))} of {len(expected)} messages, missing "
            f"{sorted(expected - set(sent(st)))}; logs in {st.log_dir}"
        )
        time.sleep(0.5)
    time.sleep(2)  # a duplicate would come now, if at all
    duplicates = {k: n for k, n in sent(st).items() if n > 1}
    assert not duplicates, duplicates
    alive(st)
