"""Routes about playbooks: the list and one playbook's results (``operator:read``); pause
and resume a playbook (``operator:admin``). 404 for a playbook that is not shipped."""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
import logging

from fastapi import APIRouter

from orchestrator.adapters import operator as views
from orchestrator.domain import attribution as A
from orchestrator.domain.errors import PlaybookNotFound
from orchestrator.entrypoints.api.dependencies import (
    ERRORS,
    Admin,
    PlaybookName,
    Reader,
    Service,
    Settings,
)
from orchestrator.entrypoints.api.models import PlaybookDetail, PlaybookPause, PlaybookSummary
from orchestrator.entrypoints.api.results import arm_out, conversion_reasons, money, tallies
from orchestrator.service_layer import operator

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/v1/playbooks", response_model=list[PlaybookSummary], responses=ERRORS)
async def list_playbooks(_: Reader, deps: Service) -> list[PlaybookSummary]:
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
            revenue=money(revenue.get(p.name, {})) or {},
        )
        for p in sorted(deps.playbooks.values(), key=lambda p: p.name)
    ]


@router.get("/v1/playbooks/{name}", response_model=PlaybookDetail, responses=ERRORS)
async def get_playbook(
    name: PlaybookName, _: Reader, deps: Service, settings: Settings
) -> PlaybookDetail:
    playbook = deps.playbooks.get(name)
    if playbook is None:
        raise PlaybookNotFound(f"playbook {name} not found")
    reasons = conversion_reasons(playbook, settings.operator_loss_reasons)
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
        arms={arm: arm_out(tally) for arm, tally in sorted(by_arm.items())},
        variants={v: arm_out(tally) for v, tally in sorted(by_variant.items())},
        revenue=money(treatment.revenue) or {},
        revenue_per_message=money(A.per(treatment.revenue, treatment.messages)),
        uplift=holdout.uplift,
        relative_uplift=holdout.relative_uplift,
        revenue_per_journey_uplift=money(holdout.revenue_per_journey_uplift),
        incremental_revenue=money(holdout.incremental_revenue),
    )


@router.post("/v1/playbooks/{name}/pause", response_model=PlaybookPause, responses=ERRORS)
async def pause_playbook(name: PlaybookName, key: Admin, deps: Service) -> PlaybookPause:
    changed = await operator.pause_playbook(
        name, stores=deps.stores, context=deps.context, by="operator"
    )
    log.info(
        "operator changed a playbook", extra={"playbook": name, "paused": True, "key_id": key.id}
    )
    return PlaybookPause(playbook=name, paused=True, journeys_changed=changed)


@router.post("/v1/playbooks/{name}/resume", response_model=PlaybookPause, responses=ERRORS)
async def resume_playbook(name: PlaybookName, key: Admin, deps: Service) -> PlaybookPause:
    changed = await operator.resume_playbook(
        name, stores=deps.stores, context=deps.context, by="operator"
    )
    log.info(
        "operator changed a playbook", extra={"playbook": name, "paused": False, "key_id": key.id}
    )
    return PlaybookPause(playbook=name, paused=False, journeys_changed=changed)
