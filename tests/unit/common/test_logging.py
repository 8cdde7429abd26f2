"""Log lines: JSON for files and collectors, text for a person (TENURE_LOG_FORMAT, or
whether stderr is a terminal), and one line per HTTP request without the key's secret."""

from __future__ import annotations

import io
import logging

import httpx
import orjson
import pytest
from fastapi import FastAPI

from common.apikeys import generate
from common.http import RequestLog, ops_router
from common.logging import (
    JsonFormatter,
    TextFormatter,
    json_to_text,
    resolve_format,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_format_follows_the_setting_else_whether_the_stream_is_a_terminal() -> None:
    assert resolve_format(None, Terminal()) == "text"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("json", Terminal()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="json or text"):
        resolve_format("yaml", io.StringIO())


def record(**extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "tenure.requests", "levelname": "INFO", "levelno": 20, "msg": "request"}
    )
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_text_and_json_carry_the_same_fields_and_json_lines_turn_into_text() -> None:
    entry = record(route="/v1/events", status=202, key_id=None, color_message="\x1b[36m")
    as_json = JsonFormatter("ingest").format(entry)
    parsed = orjson.loads(as_json)
    assert parsed["service"] == "ingest" and parsed["route"] == "/v1/events"
    as_text = TextFormatter("ingest").format(entry)
    assert "INFO" in as_text and "ingest request" in as_text
    assert "route=/v1/events" in as_text and "status=202" in as_text
    assert not as_text.lstrip().startswith("{")
    assert "key_id" not in as_text and "\x1b" not in as_text  # no empty fields, no colours
    assert parsed["key_id"] is None
    assert json_to_text(as_json) == as_text
    assert (
        json_to_text("Traceback (most recent call last):") == "Traceback (most recent call last):"
    )


async def test_every_request_is_logged_with_its_route_status_duration_and_key_id_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    app.add_middleware(RequestLog)
    app.include_router(ops_router(metrics=False))

    @app.get("/v1/journeys/{journey_id}")
    async def journey(journey_id: str) -> dict[str, str]:
        return {"journey_id": journey_id}

    key, stored = generate("unit", ["operator:read"])
    secret = key.rsplit("_", 1)[1]
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.INFO, logger="tenure.requests"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/journeys/j-1", headers={"X-API-Key": key})).is_success
            await client.get("/nowhere", headers={"Authorization": f"Bearer {key}"})
            await client.get("/healthz")  # a probe: DEBUG, not shown at INFO
    lines = [r for r in caplog.records if r.name == "tenure.requests"]
    assert [(r.method, r.route, r.status, r.key_id) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/v1/journeys/{journey_id}", 200, stored.id),
        ("GET", "unmatched", 404, stored.id),
    ]
    assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]
    shown = "".join(JsonFormatter("t").format(r) + TextFormatter("t").format(r) for r in lines)
    assert secret not in shown and key not in shown
