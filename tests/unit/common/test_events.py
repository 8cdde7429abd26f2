from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.events import EVENT_MODELS, EXAMPLES, REDEMPTION_EXAMPLE, SupportEvent, parse_event

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_example_round_trips(kind: str) -> None:
    event = parse_event(EXAMPLES[kind])
    assert type(event) is EVENT_MODELS[kind]
    again = parse_event(event.model_dump_json())
    assert again == event


def test_old_version_fixture_still_parses() -> None:
    events = [parse_event(e) for e in json.loads((FIXTURES / "events_v1.json").read_text())]
    assert {e.kind for e in events} == set(EVENT_MODELS)
    payment = next(e for e in events if e.kind == "payment")
    assert payment.occurred_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # normalised to UTC


def errors_of(data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        parse_event(data)
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in caught.value.errors()]


def test_out_of_range_nps_names_field_and_rule() -> None:
    bad = {**EXAMPLES["support"], "score": 11}
    assert errors_of(bad) == [("support.score", "less_than_equal")]


def test_unknown_kind_lists_accepted_kinds() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event({**EXAMPLES["usage"], "kind": "telepathy"})
    message = str(caught.value)
    for kind in EVENT_MODELS:
        assert kind in message


def test_unknown_type_is_rejected() -> None:
    assert errors_of({**EXAMPLES["login"], "type": "logout"}) == [("login.type", "literal_error")]


def test_naive_timestamp_is_rejected() -> None:
    assert errors_of({**EXAMPLES["usage"], "occurred_at": "2026-11-20T10:15:00"}) == [
        ("usage.occurred_at", "timezone_aware")
    ]


@pytest.mark.parametrize("customer_id", ["", "-leading-dash", "a" * 129, "has space", "semi;colon"])
def test_customer_id_form(customer_id: str) -> None:
    assert errors_of({**EXAMPLES["usage"], "customer_id": customer_id}) == [
        ("usage.customer_id", "string_pattern_mismatch")
    ]


def test_unknown_field_is_rejected() -> None:
    assert errors_of({**EXAMPLES["usage"], "colour": "red"}) == [
        ("usage.colour", "extra_forbidden")
    ]


def test_events_are_frozen() -> None:
    event = parse_event(EXAMPLES["support"])
    assert isinstance(event, SupportEvent)
    with pytest.raises(ValidationError):
        event.score = 3  # type: ignore[misc]


def test_currency_and_amounts() -> None:
    assert errors_of({**EXAMPLES["payment"], "currency": "eur"}) == [
        ("payment.currency", "string_pattern_mismatch")
    ]
    assert errors_of({**EXAMPLES["payment"], "amount": -1}) == [
        ("payment.amount", "greater_than_equal")
    ]


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-01:00"])
def test_timestamp_beyond_utc_range_is_a_validation_error(instant: str) -> None:
    assert errors_of({**EXAMPLES["usage"], "occurred_at": instant}) == [
        ("usage.occurred_at", "value_error")
    ]


def test_a_redemption_is_a_usage_event_naming_its_reward() -> None:
    event = parse_event(REDEMPTION_EXAMPLE)
    assert event.kind == "usage" and event.type == "reward_redeemed"
    assert event.reward == "training"
    assert parse_event(event.model_dump_json()) == event


def test_a_redemption_without_its_reward_names_the_field() -> None:
    bad = {k: v for k, v in REDEMPTION_EXAMPLE.items() if k != "reward"}
    assert errors_of(bad) == [("usage.reward", "value_error")]
    # the field stays optional for every other usage type
    assert parse_event(EXAMPLES["usage"]).reward is None
