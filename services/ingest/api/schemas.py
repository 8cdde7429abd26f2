"""The API's bodies as documented in its OpenAPI document (and checked against it by
the schemathesis test), with the examples the document shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.events import EXAMPLES, REDEMPTION_EXAMPLE, Event


class Accepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


class FieldError(BaseModel):
    field: str
    rule: str
    message: str


class Problem(BaseModel):
    error: str
    errors: list[FieldError] = []


class EventResult(BaseModel):
    index: int
    event_id: str | None = None
    status: Literal["accepted", "rejected", "unavailable"]
    errors: list[FieldError] = []


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    unavailable: int
    results: list[EventResult]


class Batch(BaseModel):
    """The body of POST /v1/batch (for the document: the service validates it event by
    event, so that one bad event does not refuse the others)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1)


def request_body(ref: str, examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its JSON body itself: the schema ``ref``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref}, "examples": examples}},
        }
    }


EVENT_EXAMPLES = {k: {"summary": f"a {k} event", "value": v} for k, v in EXAMPLES.items()}
EVENT_EXAMPLES["reward_redeemed"] = {
    "summary": "a loyalty redemption (a usage event)",
    "value": REDEMPTION_EXAMPLE,
}
BATCH_EXAMPLES = {
    "batch": {
        "summary": "two events",
        "value": {"events": [EXAMPLES["login"], EXAMPLES["support"]]},
    }
}
