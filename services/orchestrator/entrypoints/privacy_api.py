"""The operator API's data-protection routes: export a customer's data, erase a customer.

``GET /v1/customers/{id}/export`` (``operator:read``): everything Tenure keeps about the
customer in PostgreSQL, as one JSON document (GDPR art. 15 and 20).
``DELETE /v1/customers/{id}`` (``operator:admin``): erase the customer (art. 17); see
:mod:`orchestrator.adapters.privacy` for what is removed, anonymised and kept.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases below
# from evaluated annotations.
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from common.apikeys import ApiKey, Scope
from common.http import IDENTIFIER_PATTERN
from orchestrator.entrypoints.deps import Deps
from orchestrator.service_layer.privacy import erase_customer, export_customer


class ErasureOut(BaseModel):
    """An erasure, as recorded."""

    erasure_id: str
    customer_id: str
    erased_at: datetime
    requested_by: str
    removed: dict[str, int] = Field(
        description="Rows removed or anonymised in each store (0: nothing was kept there)."
    )
    scoring: str = Field(
        description="'pending' until the scoring worker confirms it dropped the customer's "
        "state (a tombstone on the scores topic); the erasure then completes by itself."
    )


def privacy_router(
    deps: Deps,
    needs: Callable[[Scope], Callable[[Request], Awaitable[ApiKey]]],
    problem: Callable[[str], JSONResponse],
    errors: dict[int | str, dict[str, Any]],
) -> APIRouter:
    """The routes; ``needs(scope)`` checks the key, ``problem(what)`` answers 404,
    ``errors`` are the error answers every operator route declares."""
    router = APIRouter()
    Reader = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_READ))]
    Admin = Annotated[ApiKey, Depends(needs(Scope.OPERATOR_ADMIN))]
    CustomerId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["acme-42"])]

    @router.get(
        "/v1/customers/{customer_id}/export", response_model=dict[str, Any], responses=errors
    )
    async def export(customer_id: CustomerId, _: Reader) -> JSONResponse:
        document = await export_customer(customer_id, engine=deps.engine, clock=deps.clock)
        if document is None:
            return problem(f"customer {customer_id}")
        return JSONResponse(document)

    @router.delete("/v1/customers/{customer_id}", response_model=ErasureOut, responses=errors)
    async def erase(customer_id: CustomerId, key: Admin) -> ErasureOut:
        erased = await erase_customer(
            customer_id,
            engine=deps.engine,
            clock=deps.clock,
            topic_prefix=deps.topic_prefix,
            requested_by=f"api-key:{key.id}",
        )
        return ErasureOut(**vars(erased), scoring="pending")

    return router
