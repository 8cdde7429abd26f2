"""``GET /v1/customers`` (``operator:read``): the at-risk list.

Scored customers with a live subscription (or none recorded), filtered by risk tier,
health band, CLV segment, plan, owner CSM, active signal, playbook in flight and
currency (each repeatable: any of its values; filters combine with AND), sorted by
churn probability, MRR at risk (MRR x churn probability), CLV or health, then by
customer id, paged by an opaque cursor. Each row has the top factors of its score.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases from
# evaluated annotations.
import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from pydantic import Field

from common.http import IDENTIFIER_PATTERN, NAME_PATTERN
from common.messages import ClvSegment, HealthBand, Tier
from orchestrator.adapters import at_risk as views
from orchestrator.domain.errors import InvalidRequest
from orchestrator.entrypoints.api.dependencies import ERRORS, Reader, Service, Settings
from orchestrator.entrypoints.api.portfolio_models import AtRiskCustomer, CustomerList, Factor

router = APIRouter()

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Plan = Annotated[str, Field(min_length=1, max_length=200)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
# Descending but for health, where the least healthy come first.
DEFAULT_ORDER: dict[str, views.Order] = {
    "churn_probability": "desc",
    "mrr_at_risk": "desc",
    "clv": "desc",
    "health": "asc",
}


def encode_cursor(sort: str, order: str, last: views.After) -> str:
    raw = orjson.dumps({"s": sort, "o": order, "k": last.key, "c": last.customer_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str) -> views.After:
    """The position ``cursor`` names; :class:`InvalidRequest` for anything but a cursor this
    list gave with the same sort and order."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = orjson.loads(raw)
        after = views.After(float(found["k"]), str(found["c"]))
        same = (found["s"], found["o"]) == (sort, order)
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InvalidRequest("cursor", "not a cursor this list gave") from None
    if not same:
        raise InvalidRequest(
            "cursor", f"it continues a list sorted by {found['s']} {found['o']}, not {sort} {order}"
        )
    return after


def factors(snapshot: dict[str, Any], top: int) -> list[Factor]:
    found = [Factor(**s) for s in snapshot.get("signals", ()) if s.get("contribution")]
    found.sort(key=lambda f: (-f.contribution, f.name))
    return found[:top]


def row_out(row: dict[str, Any], top: int) -> AtRiskCustomer:
    snapshot = row["snapshot"] or {}
    names = [s["name"] for s in snapshot.get("signals", ())]
    names += [s["name"] for s in snapshot.get("expansion_signals", ())]
    return AtRiskCustomer(
        **{k: row[k] for k in AtRiskCustomer.model_fields if k in row and k != "mrr"},
        mrr=float(row["mrr"]),
        health_score=snapshot.get("health_score"),
        clv=snapshot.get("clv"),
        active_signals=names,
        top_factors=factors(snapshot, top),
    )


@router.get("/v1/customers", response_model=CustomerList, responses=ERRORS)
async def at_risk_list(
    _: Reader,
    deps: Service,
    settings: Settings,
    risk_tier: Annotated[list[Tier] | None, Query(description="low, medium, high")] = None,
    health_band: Annotated[list[HealthBand] | None, Query()] = None,
    clv_segment: Annotated[list[ClvSegment] | None, Query()] = None,
    plan: Annotated[list[Plan] | None, Query()] = None,
    owner_csm: Annotated[list[Identifier] | None, Query(description="owner CSM id")] = None,
    signal: Annotated[list[Name] | None, Query(description="an active signal")] = None,
    playbook: Annotated[list[Name] | None, Query(description="a journey in flight")] = None,
    currency: Annotated[list[Currency] | None, Query()] = None,
    include_cancelled: bool = False,
    sort: views.Sort = "churn_probability",
    order: Annotated[views.Order | None, Query(description="default: desc, asc for health")] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> CustomerList:
    direction = order or DEFAULT_ORDER[sort]
    size = limit or settings.operator_page_size
    if size > settings.operator_page_max:
        raise InvalidRequest("limit", f"at most {settings.operator_page_max}")
    after = decode_cursor(cursor, sort, direction) if cursor else None
    filters = views.Filters(
        tiers=risk_tier or (),
        health_bands=health_band or (),
        clv_segments=clv_segment or (),
        plans=plan or (),
        owner_csms=owner_csm or (),
        signals=signal or (),
        playbooks=playbook or (),
        currencies=currency or (),
        include_cancelled=include_cancelled,
    )
    async with deps.engine.connect() as conn:
        found = await views.page(
            conn,
            filters,
            sort=sort,
            order=direction,
            limit=size,
            after=after,
            default_currency=deps.default_currency,
        )
    top = settings.operator_top_factors
    return CustomerList(
        sort=sort,
        order=direction,
        customers=[row_out(r, top) for r in found.rows],
        next_cursor=encode_cursor(sort, direction, found.last) if found.last else None,
    )
