"""Logging for every service: JSON lines for machines, readable lines for a person.

``TENURE_LOG_FORMAT`` chooses (``json`` or ``text``); unset, a terminal gets text and
anything else (a file, a pipe, a log collector) JSON. Both carry the same fields: the
instant, level, service, logger, message and every ``extra`` the call gave.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["json", "text"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Shown in the line's head, or not for a person (uvicorn's copy of its message in colour).
_TEXT_SKIPS = {"ts", "level", "service", "pid", "logger", "msg", "exc", "color_message"}


def _entry(record: logging.LogRecord, service: str, formatter: logging.Formatter) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "service": service,
        "pid": record.process,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            entry[key] = value
    if record.exc_info:
        entry["exc"] = formatter.formatException(record.exc_info)
    return entry


def text_line(entry: dict[str, Any]) -> str:
    """One log entry (the JSON form's fields) as a line a person reads: time, level,
    service, message, then ``key=value`` for every other field that has a value, the
    traceback below."""
    ts = str(entry.get("ts", ""))
    clock = ts[11:23] if len(ts) >= 23 else ts
    fields = " ".join(
        f"{key}={value}"
        for key, value in entry.items()
        if key not in _TEXT_SKIPS and value is not None
    )
    line = (
        f"{clock} {str(entry.get('level', '')).upper():<7} {entry.get('service', '')}"
        f" {entry.get('msg', '')}"
    )
    if fields:
        line = f"{line}  {fields}"
    if entry.get("exc"):
        line = f"{line}\n{entry['exc']}"
    return line


def json_to_text(line: str) -> str:
    """A JSON log line rendered by :func:`text_line`; any other line unchanged (a crash's
    traceback printed by the interpreter, a library writing to stderr)."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    return text_line(entry) if isinstance(entry, dict) and "msg" in entry else line


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_entry(record, self.service, self), default=str).decode()


class TextFormatter(logging.Formatter):
    """The same fields as :class:`JsonFormatter`, as :func:`text_line` shows them."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return text_line(_entry(record, self.service, self))


def resolve_format(chosen: str | None, stream: IO[str]) -> LogFormat:
    """``chosen`` if set, else ``text`` for a terminal and ``json`` for anything else."""
    if chosen in ("json", "text"):
        return chosen  # type: ignore[return-value]
    if chosen is not None:
        raise ValueError(f"log format must be json or text, not {chosen!r}")
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(service: str, level: str = "INFO", fmt: str | None = None) -> None:
    """Route every logger of the process to stderr in ``fmt`` (None: as
    :func:`resolve_format` decides for stderr). Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if resolve_format(fmt, sys.stderr) == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
