"""Routes about one customer: the customer 360 (``operator:read``), and the data rights:
``GET /v1/customers/{id}/export`` (``operator:read``, GDPR art. 15 and 20: everything
Tenure keeps about the customer in PostgreSQL, as one JSON document) and
``DELETE /v1/customers/{id}`` (``operator:admin``, art. 17: erase the customer; see
:mod:`orchestrator.adapters.privacy` for what is removed, anonymised and kept)."""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from orchestrator.adapters import operator as views
from orchestrator.domain.errors import CustomerNotFound
from orchestrator.entrypoints.api.dependencies import (
    ERRORS,
    Admin,
    CustomerId,
    Reader,
    Service,
    Settings,
)
from orchestrator.entrypoints.api.models import (
    Customer360,
    ErasureOut,
    Learned,
    Message,
    Profile,
    Score,
)
from orchestrator.entrypoints.api.results import journey_out, signals
from orchestrator.service_layer.privacy import erase_customer, export_customer

router = APIRouter()


@router.get("/v1/customers/{customer_id}", response_model=Customer360, responses=ERRORS)
async def customer_360(
    customer_id: CustomerId, _: Reader, deps: Service, settings: Settings
) -> Customer360:
    limit = settings.operator_list_limit
    async with deps.engine.connect() as conn:
        profile = await views.profile(conn, customer_id)
        learned = await views.learned_state(conn, customer_id)
        score = await views.score(conn, customer_id)
        journeys = await views.journeys_with_history(conn, customer_id, limit)
        messages = await views.messages(conn, customer_id, limit)
    if profile is None and score is None and not journeys and not messages:
        raise CustomerNotFound(f"customer {customer_id} not found")
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
        active_signals=signals(snapshot),
        journeys=[journey_out(j) for j in journeys],
        messages=[Message(**m) for m in messages],
    )


@router.get("/v1/customers/{customer_id}/export", response_model=dict[str, Any], responses=ERRORS)
async def export(customer_id: CustomerId, _: Reader, deps: Service) -> JSONResponse:
    document = await export_customer(customer_id, engine=deps.engine, clock=deps.clock)
    if document is None:
        raise CustomerNotFound(f"customer {customer_id} not found")
    return JSONResponse(document)


@router.delete("/v1/customers/{customer_id}", response_model=ErasureOut, responses=ERRORS)
async def erase(customer_id: CustomerId, key: Admin, deps: Service) -> ErasureOut:
    erased = await erase_customer(
        customer_id,
        engine=deps.engine,
        clock=deps.clock,
        topic_prefix=deps.topic_prefix,
        requested_by=f"api-key:{key.id}",
    )
    return ErasureOut(**vars(erased), scoring="pending")
