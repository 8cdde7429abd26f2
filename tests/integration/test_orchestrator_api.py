"""The operator API on the real PostgreSQL of the test stack, with keys made in it.

Journeys are started by the orchestrator's own consumers and fired by its timer worker
(FakeClock), and the outcomes come through the outcome projection, so the customer 360
shows what the system really recorded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from common.apikeys import KeyCache, KeyRepository, generate
from common.clock import FakeClock
from common.db import create_engine
from common.events import EXAMPLES
from common.kafka import Record, encode
from common.messages import Delivery, ScoreSnapshot, SignalExplanation
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import Stack
from orchestrator.domain import decisions
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.entrypoints.api import create_api
from orchestrator.entrypoints.consumers import router
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.outcomes import outcome_handler
from orchestrator.entrypoints.timers import fire_due
from tests.e2e.journeys import new_customer

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PREFIX = "it-api."


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_orchestrator_api")


@pytest.fixture(scope="module")
async def env(database_url: str, common_settings: CommonSettings):
    settings = common_settings.model_copy(
        update={"database_url": database_url, "topic_prefix": PREFIX}
    )
    engine = create_engine(database_url)
    clock = FakeClock(T0)
    deps = Deps(engine=engine, playbooks=load_playbooks(SHIPPED), clock=clock, topic_prefix=PREFIX)
    repository = KeyRepository(engine)
    keys = {}
    for name, scopes in {
        "reader": ["operator:read"],
        "admin": ["operator:admin"],
        "both": ["operator:read", "operator:admin"],
        "writer": ["events:write"],
    }.items():
        full, new = generate(name, scopes)
        await repository.create(new)
        keys[name] = full
    cache = KeyCache(repository)
    await cache.refresh()
    app = create_api(deps, authenticator=cache)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield settings, deps, clock, client, keys
    await engine.dispose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def record(topic: Topic, key: str, value: object) -> Record:
    return Record(
        topic=topic_name(topic, PREFIX),
        partition=0,
        offset=0,
        key=key,
        value=encode(value),
        headers=(),
        timestamp_ms=0,
    )  # type: ignore[arg-type]


async def start_retention_journey(deps: Deps, customer: str) -> str:
    handle = router(deps)
    profile = {
        **EXAMPLES["profile"],
        "customer_id": customer,
        "event_id": str(uuid.uuid4()),
        "email": f"{customer}@example.com",
        "first_name": "Ada",
        "consent": {"email_marketing": True, "in_app": True},
    }
    await handle(record(Topic.EVENTS_PROFILE, customer, profile))
    snapshot = ScoreSnapshot(
        customer_id=customer,
        as_of=T0,
        risk_score=72.5,
        tier="high",
        churn_probability=0.91,
        signals=(
            SignalExplanation(
                name="competitor_trial",
                group="competition",
                value=1,
                threshold=1,
                contribution=15.0,
            ),
        ),
    )
    await handle(record(Topic.SCORES, customer, snapshot))
    async with deps.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    sa.text("SELECT journey_id FROM journeys WHERE customer_id = :c"),
                    {"c": customer},
                )
            ).scalar_one()
        )


async def test_every_route_needs_a_key_with_its_scope(env) -> None:
    _, _, _, client, keys = env
    reads = ["/v1/playbooks", "/v1/playbooks/retention_offer", "/v1/customers/nobody"]
    writes = ["/v1/playbooks/retention_offer/pause", "/v1/journeys/none/cancel"]
    for path in reads:
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert (
            await client.get(path, headers=auth("tnr_0123456789ab_" + "x" * 43))
        ).status_code == 401
        for key in ("admin", "writer"):
            denied = await client.get(path, headers={"X-API-Key": keys[key]})
            assert denied.status_code == 403, (path, key)
            assert denied.json() == {"error": "this API key lacks the operator:read scope"}
    for path in writes:
        assert (await client.post(path)).status_code == 401, path
        for key in ("reader", "writer"):
            denied = await client.post(path, headers=auth(keys[key]))
            assert denied.status_code == 403, (path, key)
            assert "operator:admin" in denied.json()["error"]
    assert (await client.get("/v1/playbooks", headers=auth(keys["both"]))).status_code == 200
    assert (await client.get("/healthz")).status_code == 200  # ops routes stay open


async def test_customer_360_shows_profile_score_signals_journey_and_messages(env) -> None:
    _, deps, clock, client, keys = env
    clock.set(T0)
    customer = new_customer("c")
    journey_id = await start_retention_journey(deps, customer)
    while await fire_due(deps, limit=50):
        pass
    offer_id = decisions.notification_id(journey_id, "offer")
    outcomes = outcome_handler(deps)
    for status, minutes in (("sent", 1), ("opened", 5), ("opened", 9), ("clicked", 7)):
        delivery = Delivery(
            notification_id=offer_id,
            customer_id=customer,
            journey_id=journey_id,
            playbook="retention_offer",
            step="offer",
            channel="email",
            status=status,
            occurred_at=T0 + timedelta(minutes=minutes),
        )
        await outcomes(record(Topic.DELIVERIES, customer, delivery))

    response = await client.get(f"/v1/customers/{customer}", headers=auth(keys["reader"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["profile"]["email"] == f"{customer}@example.com"
    assert body["profile"]["first_name"] == "Ada"
    assert body["profile"]["consent_email"] is True
    assert body["score"]["churn_probability"] == 0.91 and body["score"]["tier"] == "high"
    assert body["score"]["explanation"]["signals"][0]["name"] == "competitor_trial"
    assert [(s["name"], s["kind"], s["contribution"]) for s in body["active_signals"]] == [
        ("competitor_trial", "churn", 15.0)
    ]
    [journey] = body["journeys"]
    assert (journey["journey_id"], journey["playbook"], journey["state"]) == (
        journey_id,
        "retention_offer",
        "active",
    )
    assert [h["event"] for h in journey["history"]] == ["start", "step_sent"]
    [message] = body["messages"]
    assert (message["notification_id"], message["step"], message["channel"]) == (
        offer_id,
        "offer",
        "email",
    )
    assert message["recipient"] == f"{customer}@example.com"
    assert message["published_at"] is None  # no relay ran in this test
    # One row per status, the first time it was seen, in the order they happened.
    assert [o["status"] for o in message["outcomes"]] == ["sent", "opened", "clicked"]

    assert (
        await client.get("/v1/customers/c-never-seen", headers=auth(keys["reader"]))
    ).status_code == 404


async def test_an_unknown_delivery_is_shown_in_the_customer_history_and_ends_nothing(
    env,
) -> None:
    # `unknown`: an email handed to the mail server by a notifier that died before the
    # answer (docs/decisions.md, notifier). Both consumers of `deliveries` take it.
    _, deps, clock, client, keys = env
    clock.set(T0)
    customer = new_customer("c")
    journey_id = await start_retention_journey(deps, customer)
    while await fire_due(deps, limit=50):
        pass
    offer_id = decisions.notification_id(journey_id, "offer")
    delivery = Delivery(
        notification_id=offer_id,
        customer_id=customer,
        journey_id=journey_id,
        playbook="retention_offer",
        step="offer",
        channel="email",
        status="unknown",
        occurred_at=T0 + timedelta(minutes=1),
        detail="in flight when a notifier stopped",
    )
    raw = record(Topic.DELIVERIES, customer, delivery)
    await router(deps)(raw)
    await outcome_handler(deps)(raw)
    body = (await client.get(f"/v1/customers/{customer}", headers=auth(keys["reader"]))).json()
    [message] = body["messages"]
    assert message["outcomes"] == [
        {"status": "unknown", "at": message["outcomes"][0]["at"], "detail": delivery.detail}
    ]
    [journey] = body["journeys"]
    assert journey["state"] == "active"


async def test_admin_pauses_resumes_and_cancels_a_journey(env) -> None:
    _, deps, clock, client, keys = env
    clock.set(T0)
    journey_id = await start_retention_journey(deps, new_customer("c"))
    admin = auth(keys["admin"])

    paused = await client.post(f"/v1/journeys/{journey_id}/pause", headers=admin)
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    assert (await client.post(f"/v1/journeys/{journey_id}/pause", headers=admin)).status_code == 409
    assert await fire_due(deps, limit=50) == 0  # a paused journey fires nothing

    resumed = await client.post(f"/v1/journeys/{journey_id}/resume", headers=admin)
    assert resumed.json()["state"] == "active"
    cancelled = await client.post(f"/v1/journeys/{journey_id}/cancel", headers=admin)
    assert cancelled.json()["state"] == "cancelled"
    assert [h["event"] for h in cancelled.json()["history"]] == [
        "start",
        "pause",
        "resume",
        "cancel",
    ]
    assert (
        await client.post(f"/v1/journeys/{journey_id}/cancel", headers=admin)
    ).status_code == 409
    assert (await client.post("/v1/journeys/no-such/cancel", headers=admin)).status_code == 404
    async with deps.engine.connect() as conn:
        statuses = (
            await conn.execute(
                sa.text("SELECT DISTINCT status FROM timers WHERE journey_id = :j"),
                {"j": journey_id},
            )
        ).scalars()
        assert set(statuses) == {"cancelled"}


async def test_pausing_a_playbook_pauses_its_journeys_until_resumed(env) -> None:
    _, deps, clock, client, keys = env
    clock.set(T0)
    journey_id = await start_retention_journey(deps, new_customer("c"))
    admin, reader = auth(keys["admin"]), auth(keys["reader"])

    pause = await client.post("/v1/playbooks/retention_offer/pause", headers=admin)
    assert pause.status_code == 200
    assert pause.json()["paused"] is True and pause.json()["journeys_changed"] >= 1
    journey = (await client.get(f"/v1/journeys/{journey_id}", headers=reader)).json()
    assert (journey["state"], journey["paused_by"]) == ("paused", "playbook")
    listed = {p["name"]: p for p in (await client.get("/v1/playbooks", headers=reader)).json()}
    assert listed["retention_offer"]["paused"] is True
    assert listed["onboarding"]["paused"] is False
    assert listed["retention_offer"]["journeys"].get("paused", 0) >= 1

    resume = await client.post("/v1/playbooks/retention_offer/resume", headers=admin)
    assert resume.json()["paused"] is False and resume.json()["journeys_changed"] >= 1
    journey = (await client.get(f"/v1/journeys/{journey_id}", headers=reader)).json()
    assert journey["state"] == "active"
    missing = await client.post("/v1/playbooks/no_such/pause", headers=admin)
    assert missing.status_code == 404


async def test_playbook_detail_counts_conversions_and_uplift_against_the_holdout(env) -> None:
    _, deps, _, client, keys = env
    playbook = load_playbooks(SHIPPED)["upsell_results"]
    window = playbook.attribution_window
    # 10 treatment journeys: 4 upgraded within the window, 1 upgraded too late, 1
    # cancelled, 4 still active; 5 control journeys: 1 upgraded within the window.
    rows = []
    for i in range(10):
        ended = {0: "in", 1: "in", 2: "in", 3: "in", 4: "late", 5: "lost"}.get(i)
        rows.append(("treatment", ended))
    rows += [("control", "in")] + [("control", None)] * 4
    async with deps.engine.begin() as conn:
        for n, (arm, ended) in enumerate(rows):
            jid = f"upres-{uuid.uuid4().hex[:8]}"
            start = T0 - timedelta(days=40)
            state, reason, ended_at = "active", None, None
            if ended in ("in", "late"):
                state, reason = "exited", "upgraded"
                ended_at = start + window + timedelta(days=1 if ended == "in" else 3)
            elif ended == "lost":
                state, reason, ended_at = "exited", "cancelled", start + timedelta(days=2)
            await conn.execute(
                sa.text(
                    "INSERT INTO journeys (journey_id, customer_id, playbook, state, arm,"
                    " started_at, ended_at, exit_reason) VALUES (:j, :c, 'upsell_results',"
                    " :s, :a, :t, :e, :r)"
                ),
                {
                    "j": jid,
                    "c": f"{jid}-c{n}",
                    "s": state,
                    "a": arm,
                    "t": start,
                    "e": ended_at,
                    "r": reason,
                },
            )
            # Its only step happened two days after the start: the window runs from there.
            await conn.execute(
                sa.text(
                    "INSERT INTO journey_transitions (journey_id, from_state, to_state, event,"
                    " at, detail) VALUES (:j, 'active', 'active', :ev, :at,"
                    ' \'{"step": "first_month_free"}\')'
                ),
                {
                    "j": jid,
                    "ev": "step_sent" if arm == "treatment" else "step_skipped",
                    "at": start + timedelta(days=2),
                },
            )

    response = await client.get("/v1/playbooks/upsell_results", headers=auth(keys["reader"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["definition"]["name"] == "upsell_results"
    assert [s["id"] for s in body["definition"]["steps"]] == ["first_month_free"]
    assert "upgraded" in body["conversion_reasons"]
    assert "cancelled" not in body["conversion_reasons"]
    assert body["journeys"] == {"active": 8, "exited": 7}
    treatment, control = body["arms"]["treatment"], body["arms"]["control"]
    assert (treatment["journeys"], treatment["converted"]) == (10, 4)
    assert treatment["conversion_rate"] == 0.4
    assert (control["journeys"], control["converted"], control["conversion_rate"]) == (5, 1, 0.2)
    assert treatment["messages_sent"] == 10 and control["messages_sent"] == 0
    assert treatment["revenue"] == {} and body["revenue_per_message"] == {}
    assert body["uplift"] == pytest.approx(0.2)
    assert body["relative_uplift"] == pytest.approx(1.0)
    assert (await client.get("/v1/playbooks/nope", headers=auth(keys["reader"]))).status_code == 404


async def test_a_key_created_after_the_cache_was_loaded_works_at_once(env) -> None:
    """Issue 13 item 16: the operator API reloads the keys for a key it does not know."""
    _, deps, _, client, _ = env
    full, new = generate("new-operator", ["operator:read"])
    await KeyRepository(deps.engine).create(new)
    assert (await client.get("/v1/playbooks", headers=auth(full))).status_code == 200
    tampered = full[:-1] + ("A" if full[-1] != "A" else "B")
    assert (await client.get("/v1/playbooks", headers=auth(tampered))).status_code == 401
