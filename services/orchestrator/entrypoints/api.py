"""The orchestrator's HTTP API: health, metrics and the operator API under ``/v1/``.

Every ``/v1/`` route needs an API key (``X-API-Key`` or ``Authorization: Bearer``):
reading routes the scope ``operator:read``, the routes that change a journey or a
playbook the scope ``operator:admin`` (scopes do not imply one another). 401 without
a valid key, 403 with a key that lacks the scope.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' dependency
# aliases (``Reader``, ``Admin``, local to create_api) from evaluated annotations.
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from common.apikeys import ApiKey, Authenticator, Scope
from common.db import database_ready
from common.http import (
    IDENTIFIER_PATTERN,
    NAME_PATTERN,
    AccessDenied,
    answer_outages,
    check_access,
    docs_routes,
    ops_router,
    readiness_router,
)
from orchestrator.adapters import journeys as repo
from orchestrator.adapters import operator as views
from orchestrator.domain import attribution as A
from orchestrator.domain.journey import IllegalTransition, State
from orchestrator.domain.playbook import Playbook
from orchestrator.entrypoints.consumers import lift_retention_first
from orchestrator.entrypoints.deps import Deps
from orchestrator.entrypoints.privacy_api import privacy_router
from orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)


class Problem(BaseModel):
    error: str


class Profile(BaseModel):
    email: str | None = None
    first_name: str | None = None
    time_zone: str | None = None
    plan: str | None = None
    mrr: float | None = None
    consent_email: bool | None = None
    consent_in_app: bool | None = None
    owner_csm_id: str | None = None
    owner_csm_email: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict, description="The profile as sent.")
    profile_at: datetime | None = None


class Learned(BaseModel):
    """What the orchestrator learned besides the profile (scores, signals, deliveries,
    payments)."""

    segment: str | None = None
    loyalty_tier: str | None = Field(
        None,
        description="The tier of the latest score snapshot (bronze until the points of "
        "silver); null only before scoring published one.",
    )
    plan: str | None = None
    plan_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    products: list[str] = []


class Score(BaseModel):
    as_of: datetime
    risk_score: float
    tier: str
    churn_probability: float
    events_counted_at_as_of: int | None = Field(
        None,
        description="Events scoring had counted for the customer when it computed this "
        "snapshot (at as_of). A snapshot is published only when the score or its "
        "explanation changes, so later events that changed nothing are not in it.",
    )
    explanation: dict[str, Any] = Field(
        description="The latest score snapshot as scoring published it: signals with their "
        "values, thresholds and contributions, red flags, health, CLV, loyalty."
    )


class Signal(BaseModel):
    name: str
    kind: str = Field(description="churn or expansion")
    group: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    contribution: float | None = None


class Transition(BaseModel):
    at: datetime
    event: str
    from_state: str | None
    to_state: str
    detail: dict[str, Any] = {}


class Journey(BaseModel):
    journey_id: str
    customer_id: str
    playbook: str
    state: str
    arm: str | None = None
    variant: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    exit_reason: str | None = None
    paused_by: str | None = None
    history: list[Transition] = []


class Outcome(BaseModel):
    status: str
    at: datetime
    detail: str | None = None


class Message(BaseModel):
    notification_id: str
    journey_id: str | None = None
    playbook: str | None = None
    step: str | None = None
    channel: str
    template: str | None = None
    variant: str | None = None
    recipient: str | None = None
    created_at: datetime
    queued_at: datetime | None = Field(None, description="Written to the outbox.")
    published_at: datetime | None = Field(None, description="Published to Kafka by the relay.")
    delivery_status: str | None = Field(None, description="The notifier's delivery log.")
    delivery_attempts: int | None = None
    outcomes: list[Outcome] = Field(
        default=[], description="Every outcome reported: sent, opened, clicked, replied..."
    )


class Customer360(BaseModel):
    customer_id: str
    profile: Profile | None
    learned: Learned | None
    score: Score | None
    active_signals: list[Signal]
    journeys: list[Journey]
    messages: list[Message]


Money = dict[str, float]


class PlaybookSummary(BaseModel):
    name: str
    lane: str
    goal: str
    priority: int
    paused: bool
    steps: list[str]
    journeys: dict[str, int] = Field(description="Journeys by state.")
    revenue: Money = Field(
        default={},
        description="Revenue attributed to the treatment arm's journeys, by currency.",
    )


class Arm(BaseModel):
    """Results of a group of journeys: an arm (treatment, control) or a variant."""

    journeys: int
    converted: int = Field(
        description="Journeys with a conversion of the goal attributed (a payment) or an "
        "exit for a conversion reason, inside the attribution window."
    )
    conversion_rate: float | None
    revenue: Money = Field(default={}, description="Revenue attributed, by currency.")
    revenue_per_journey: Money | None = Field(
        default=None, description="Revenue / journeys, by currency."
    )
    messages_sent: int = Field(
        default=0, description="Customer messages sent (email, in-app); CSM tasks not counted."
    )
    revenue_per_message: Money | None = Field(
        default=None, description="Revenue / messages sent, by currency; null without messages."
    )


class PlaybookDetail(BaseModel):
    name: str
    paused: bool
    paused_at: datetime | None
    definition: dict[str, Any]
    journeys: dict[str, int] = Field(description="Journeys by state.")
    conversion_reasons: list[str] = Field(
        description="Exit reasons that count as a conversion (within the attribution window)."
    )
    arms: dict[str, Arm] = Field(description="treatment and control (the holdout).")
    variants: dict[str, Arm] = Field(
        default={}, description="The treatment arm by A/B variant (playbooks with variants)."
    )
    revenue: Money = Field(
        default={},
        description="Revenue attributed to the treatment arm's journeys, by currency.",
    )
    revenue_per_message: Money | None = Field(
        default=None, description="Treatment revenue / customer messages sent, by currency."
    )
    uplift: float | None = Field(
        description="Conversion rate of treatment minus that of control (absolute)."
    )
    relative_uplift: float | None = Field(description="uplift / control conversion rate.")
    revenue_per_journey_uplift: Money | None = Field(
        default=None,
        description="Revenue per treatment journey minus revenue per control journey.",
    )
    incremental_revenue: Money | None = Field(
        default=None,
        description="revenue_per_journey_uplift x treatment journeys: revenue the messages "
        "added over the holdout.",
    )


class PlaybookPause(BaseModel):
    playbook: str
    paused: bool
    journeys_changed: int


def _signals(snapshot: dict[str, Any]) -> list[Signal]:
    found = [Signal(kind="churn", **s) for s in snapshot.get("signals", ())]
    found += [Signal(kind="expansion", **s) for s in snapshot.get("expansion_signals", ())]
    return found


def _journey(row: dict[str, Any]) -> Journey:
    return Journey(
        **{k: v for k, v in row.items() if k != "history"},
        history=[Transition(**t) for t in row.get("history", [])],
    )


def conversion_reasons(playbook: Playbook, loss_reasons: tuple[str, ...]) -> list[str]:
    """The exit reasons of ``playbook`` (exits and wait steps) that are not a loss."""
    reasons = {exit_.reason for exit_ in playbook.exits}
    for step in playbook.steps:
        wait_reason = getattr(getattr(step, "wait", None), "reason", None)
        if isinstance(wait_reason, str):
            reasons.add(wait_reason)
    return sorted(reasons - set(loss_reasons))


def _money(value: Mapping[str, Decimal] | None) -> Money | None:
    return None if value is None else {cur: float(v) for cur, v in sorted(value.items())}


def _arm(tally: A.Tally) -> Arm:
    return Arm(
        journeys=tally.journeys,
        converted=tally.converted,
        conversion_rate=A.rate(tally),
        revenue=_money(tally.revenue) or {},
        revenue_per_journey=_money(A.per(tally.revenue, tally.journeys)),
        messages_sent=tally.messages,
        revenue_per_message=_money(A.per(tally.revenue, tally.messages)),
    )


def tallies(
    playbook: Playbook, found: views.Results
) -> tuple[dict[str, A.Tally], dict[str, A.Tally]]:
    """The results by arm, and the treatment arm's by variant."""
    customer_steps = {s.id for s in playbook.steps if s.channel != "webhook"}
    by_arm: dict[str, A.Tally] = {}
    by_variant: dict[str, A.Tally] = {}

    def add(into: dict[str, A.Tally], key: str, more: A.Tally) -> None:
        old = into.get(key, A.Tally())
        into[key] = A.Tally(
            journeys=old.journeys + more.journeys,
            converted=old.converted + more.converted,
            revenue=A.add_money(old.revenue, more.revenue),
            messages=old.messages + more.messages,
        )

    for group in found.groups:
        revenue = {
            cur: total
            for (arm, variant, cur), (total, _) in found.revenue.items()
            if (arm, variant) == (group.arm, group.variant)
        }
        messages = sum(
            n
            for (arm, variant, step), n in found.sent.items()
            if (arm, variant) == (group.arm, group.variant) and step in customer_steps
        )
        tally = A.Tally(group.journeys, group.converted, revenue, messages)
        add(by_arm, group.arm, tally)
        if group.arm == "treatment" and group.variant is not None:
            add(by_variant, group.variant, tally)
    return by_arm, by_variant


def create_api(
    deps: Deps | None = None,
    *,
    settings: OrchestratorSettings | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The app: ``/healthz`` and ``/metrics`` always; ``/readyz`` (ready when PostgreSQL
    answers) and the operator API when ``deps`` is given. A route that needs the database
    answers 503 while it is unavailable.

    ``authenticator`` tells keys apart (a :class:`common.apikeys.KeyCache` in production);
    without one, every ``/v1/`` request gets 401.
    """
    config = settings or OrchestratorSettings()
    app = FastAPI(
        title="Tenure orchestrator",
        version="1",
        description="Operator and CSM API: customer 360, playbooks and their results, "
        "and pausing or cancelling journeys and playbooks.",
        **docs_routes(config.docs),
    )
    app.include_router(ops_router(metrics=config.metrics_port is None))
    if deps is None:
        return app
    app.include_router(readiness_router(lambda: database_ready(deps.engine)))
    answer_outages(app)
    limit = config.operator_list_limit
    auth: Authenticator | None = authenticator

    @app.exception_handler(AccessDenied)
    async def _denied(_: Request, exc: AccessDenied) -> JSONResponse:
        return JSONResponse(Problem(error=exc.error).model_dump(), exc.status, exc.headers)

    def needs(scope: Scope) -> Callable[[Request], Awaitable[ApiKey]]:
        async def check(request: Request) -> ApiKey:
            if auth is None:
                raise AccessDenied(
                    401, "no API keys are configured", {"WWW-Authenticate": "Bearer"}
                )
            return await check_access(auth, request.headers, scope)

        return check

    Reader = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_READ))]
    Admin = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_ADMIN))]
    # Every identifier is bounded (422 outside), so no query sees a NUL byte or a megabyte.
    CustomerId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["acme-42"])]
    JourneyId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
    PlaybookName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["retention_offer"])]
    errors: dict[int | str, dict[str, Any]] = {s: {"model": Problem} for s in (401, 403, 404, 409)}

    def not_found(what: str) -> JSONResponse:
        return JSONResponse(Problem(error=f"{what} not found").model_dump(), 404)

    app.include_router(privacy_router(deps, needs, not_found, errors))

    def playbook_or_none(name: str) -> Playbook | None:
        return deps.playbooks.get(name)

    @app.get("/v1/customers/{customer_id}", response_model=Customer360, responses=errors)
    async def customer_360(customer_id: CustomerId, _: Reader) -> Customer360 | JSONResponse:
        async with deps.engine.connect() as conn:
            profile = await views.profile(conn, customer_id)
            learned = await views.learned_state(conn, customer_id)
            score = await views.score(conn, customer_id)
            journeys = await views.journeys_with_history(conn, customer_id, limit)
            messages = await views.messages(conn, customer_id, limit)
        if profile is None and score is None and not journeys and not messages:
            return not_found(f"customer {customer_id}")
        snapshot = dict((score or {}).get("snapshot") or {})
        # Shown under its own name: it is the count at as_of, not the count now.
        events_at_as_of = snapshot.pop("events_counted", None)
        known = {k: v for k, v in (learned or {}).items() if k in Learned.model_fields}
        # A tier-change signal comes only when the tier changes, never for the first
        # (bronze) one; every snapshot carries the tier, and the latest is current.
        if snapshot.get("loyalty_tier"):
            known["loyalty_tier"] = snapshot["loyalty_tier"]
        return Customer360(
            customer_id=customer_id,
            profile=Profile(
                **{k: v for k, v in profile.items() if k in Profile.model_fields},
                traits=profile.get("profile") or {},
            )
            if profile
            else None,
            learned=Learned(**known) if learned or known else None,
            score=Score(
                as_of=score["as_of"],
                risk_score=score["risk_score"],
                tier=score["tier"],
                churn_probability=score["churn_probability"],
                events_counted_at_as_of=events_at_as_of,
                explanation=snapshot,
            )
            if score
            else None,
            active_signals=_signals(snapshot),
            journeys=[_journey(j) for j in journeys],
            messages=[Message(**m) for m in messages],
        )

    @app.get("/v1/journeys/{journey_id}", response_model=Journey, responses=errors)
    async def get_journey(journey_id: JourneyId, _: Reader) -> Journey | JSONResponse:
        async with deps.engine.connect() as conn:
            found = await views.journey(conn, journey_id)
        return _journey(found) if found else not_found(f"journey {journey_id}")

    @app.get("/v1/playbooks", response_model=list[PlaybookSummary], responses=errors)
    async def list_playbooks(_: Reader) -> list[PlaybookSummary]:
        async with deps.engine.connect() as conn:
            counts = await views.journeys_by_state(conn)
            paused = await views.paused(conn)
            revenue = await views.revenue_by_playbook(conn)
        return [
            PlaybookSummary(
                name=p.name,
                lane=p.lane,
                goal=p.goal,
                priority=p.priority,
                paused=p.name in paused,
                steps=[s.id for s in p.steps],
                journeys=counts.get(p.name, {}),
                revenue=_money(revenue.get(p.name, {})) or {},
            )
            for p in sorted(deps.playbooks.values(), key=lambda p: p.name)
        ]

    @app.get("/v1/playbooks/{name}", response_model=PlaybookDetail, responses=errors)
    async def get_playbook(name: PlaybookName, _: Reader) -> PlaybookDetail | JSONResponse:
        playbook = playbook_or_none(name)
        if playbook is None:
            return not_found(f"playbook {name}")
        reasons = conversion_reasons(playbook, config.operator_loss_reasons)
        async with deps.engine.connect() as conn:
            counts = await views.journeys_by_state(conn, name)
            paused = await views.paused(conn)
            found = await views.results(
                conn, name, goal_reasons=reasons, window=playbook.attribution_window
            )
        by_arm, by_variant = tallies(playbook, found)
        treatment = by_arm.get("treatment", A.Tally())
        holdout = A.compare(treatment, by_arm.get("control", A.Tally()))
        return PlaybookDetail(
            name=name,
            paused=name in paused,
            paused_at=paused.get(name),
            definition=playbook.model_dump(mode="json"),
            journeys=counts.get(name, {}),
            conversion_reasons=reasons,
            arms={arm: _arm(tally) for arm, tally in sorted(by_arm.items())},
            variants={v: _arm(tally) for v, tally in sorted(by_variant.items())},
            revenue=_money(treatment.revenue) or {},
            revenue_per_message=_money(A.per(treatment.revenue, treatment.messages)),
            uplift=holdout.uplift,
            relative_uplift=holdout.relative_uplift,
            revenue_per_journey_uplift=_money(holdout.revenue_per_journey_uplift),
            incremental_revenue=_money(holdout.incremental_revenue),
        )

    async def change_journey(
        journey_id: str,
        key: ApiKey,
        action: Callable[..., Awaitable[State]],
    ) -> Journey | JSONResponse:
        try:
            async with deps.engine.begin() as conn:
                now = deps.clock.now()
                await action(conn, journey_id, now, by="operator")
                if action is repo.cancel_journey:
                    # A cancelled retention journey no longer holds expansion back.
                    customer = await repo.journey_customer(conn, journey_id)
                    await lift_retention_first(conn, deps, customer, now)
        except repo.JourneyNotFound:
            return not_found(f"journey {journey_id}")
        except IllegalTransition as exc:
            return JSONResponse(Problem(error=str(exc)).model_dump(), 409)
        log.info(
            "operator changed a journey",
            extra={"journey_id": journey_id, "action": action.__name__, "key_id": key.id},
        )
        async with deps.engine.connect() as conn:
            found = await views.journey(conn, journey_id)
        assert found is not None
        return _journey(found)

    @app.post("/v1/journeys/{journey_id}/pause", response_model=Journey, responses=errors)
    async def pause_journey(journey_id: JourneyId, key: Admin) -> Journey | JSONResponse:
        return await change_journey(journey_id, key, repo.pause_journey)

    @app.post("/v1/journeys/{journey_id}/resume", response_model=Journey, responses=errors)
    async def resume_journey(journey_id: JourneyId, key: Admin) -> Journey | JSONResponse:
        return await change_journey(journey_id, key, repo.resume_journey)

    @app.post("/v1/journeys/{journey_id}/cancel", response_model=Journey, responses=errors)
    async def cancel_journey(journey_id: JourneyId, key: Admin) -> Journey | JSONResponse:
        return await change_journey(journey_id, key, repo.cancel_journey)

    async def change_playbook(
        name: str, key: ApiKey, action: Callable[..., Awaitable[int]], paused: bool
    ) -> PlaybookPause | JSONResponse:
        if playbook_or_none(name) is None:
            return not_found(f"playbook {name}")
        async with deps.engine.begin() as conn:
            changed = await action(conn, name, deps.clock.now(), by="operator")
        log.info(
            "operator changed a playbook",
            extra={"playbook": name, "paused": paused, "key_id": key.id},
        )
        return PlaybookPause(playbook=name, paused=paused, journeys_changed=changed)

    @app.post("/v1/playbooks/{name}/pause", response_model=PlaybookPause, responses=errors)
    async def pause_playbook(name: PlaybookName, key: Admin) -> PlaybookPause | JSONResponse:
        return await change_playbook(name, key, repo.pause_playbook, True)

    @app.post("/v1/playbooks/{name}/resume", response_model=PlaybookPause, responses=errors)
    async def resume_playbook(name: PlaybookName, key: Admin) -> PlaybookPause | JSONResponse:
        return await change_playbook(name, key, repo.resume_playbook, False)

    return app
