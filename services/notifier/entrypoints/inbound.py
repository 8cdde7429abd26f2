"""What ``POST /v1/inbound/reply`` accepts: a shared-secret credential and a bounded body.

Inbound mail services post every received mail to a URL the operator gives them; they
authenticate with HTTP Basic credentials in that URL (``https://tenure:SECRET@host/...``)
or a bearer token, so the route accepts either, with ``TENURE_NOTIFIER_INBOUND_SECRET`` as
the password. The body is read up to ``TENURE_NOTIFIER_INBOUND_MAX_BYTES`` and no further
(413 beyond), then parsed as JSON (an object) or form data; anything else is a 4xx.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import orjson
from fastapi import HTTPException, Request

CHALLENGE = {"WWW-Authenticate": 'Basic realm="tenure-inbound", Bearer'}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def check_credential(authorization: str | None, secret: str) -> None:
    """Raise 401 unless ``authorization`` carries ``secret``: as the password of HTTP
    Basic credentials (any user name) or as a bearer token. Compared in constant time."""
    scheme, _, value = (authorization or "").partition(" ")
    given: str | None = None
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        given = decoded.partition(":")[2] if ":" in decoded else None
    if given is None or not hmac.compare_digest(given.encode(), secret.encode()):
        raise HTTPException(401, "missing or wrong inbound credential", headers=CHALLENGE)


async def read_bounded(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes`` (by its
    Content-Length when it gives one, else while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "Content-Length must be a number")
        if int(declared) > max_bytes:
            raise HTTPException(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fields(request: Request, max_bytes: int) -> dict[str, Any]:
    """The posted fields: a JSON object, or form data (urlencoded or multipart).

    4xx for everything else: 415 for another content type, 400 for JSON that does not
    parse (malformed, not UTF-8, nested deeper than orjson's limit) or is not an object,
    and for form data that does not parse; 413 for a body over ``max_bytes``.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json" and kind not in FORM_TYPES:
        raise HTTPException(415, "post JSON or form data")
    body = await read_bounded(request, max_bytes)
    if kind == "application/json":
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise HTTPException(400, "body must be a JSON object")
        return parsed

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    # Starlette's form parser over the bytes already read (it answers 400 itself to a
    # malformed multipart body); file parts (attachments) are dropped.
    async with Request(request.scope, replay).form() as form:
        return {name: value for name, value in form.multi_items() if isinstance(value, str)}
