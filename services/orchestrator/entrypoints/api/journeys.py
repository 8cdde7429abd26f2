"""Routes about one journey: read it (``operator:read``); pause, resume or cancel it
(``operator:admin``). 404 for an unknown journey, 409 when its state forbids the action."""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter

from common.apikeys import ApiKey
from orchestrator.adapters import operator as views
from orchestrator.domain.errors import JourneyNotFound
from orchestrator.entrypoints.api.dependencies import ERRORS, Admin, JourneyId, Reader, Service
from orchestrator.entrypoints.api.models import Journey
from orchestrator.entrypoints.api.results import journey_out
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer import operator

log = logging.getLogger(__name__)

router = APIRouter()


async def _read(deps: Deps, journey_id: str) -> Journey:
    async with deps.engine.connect() as conn:
        found = await views.journey(conn, journey_id)
    if found is None:
        raise JourneyNotFound(f"journey {journey_id} not found")
    return journey_out(found)


@router.get("/v1/journeys/{journey_id}", response_model=Journey, responses=ERRORS)
async def get_journey(journey_id: JourneyId, _: Reader, deps: Service) -> Journey:
    return await _read(deps, journey_id)


async def _change(
    deps: Deps, journey_id: str, key: ApiKey, action: Callable[..., Awaitable[object]]
) -> Journey:
    await action(journey_id, stores=deps.stores, context=deps.context, by="operator")
    log.info(
        "operator changed a journey",
        extra={"journey_id": journey_id, "action": action.__name__, "key_id": key.id},
    )
    return await _read(deps, journey_id)


@router.post("/v1/journeys/{journey_id}/pause", response_model=Journey, responses=ERRORS)
async def pause_journey(journey_id: JourneyId, key: Admin, deps: Service) -> Journey:
    return await _change(deps, journey_id, key, operator.pause_journey)


@router.post("/v1/journeys/{journey_id}/resume", response_model=Journey, responses=ERRORS)
async def resume_journey(journey_id: JourneyId, key: Admin, deps: Service) -> Journey:
    return await _change(deps, journey_id, key, operator.resume_journey)


@router.post("/v1/journeys/{journey_id}/cancel", response_model=Journey, responses=ERRORS)
async def cancel_journey(journey_id: JourneyId, key: Admin, deps: Service) -> Journey:
    return await _change(deps, journey_id, key, operator.cancel_journey)
