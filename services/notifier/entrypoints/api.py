"""The notifier's HTTP API.

- ``/t/click/{token}``, ``/t/open/{token}``: tracked links and the open pixel. Tokens
  name the notification only (signed, dated): the rest is read from the delivery log. An
  expired or unknown one still redirects (or shows the pixel) but records nothing.
- ``/u/{token}``: one-click unsubscribe (RFC 8058): ``POST`` with the form field
  ``List-Unsubscribe=One-Click`` unsubscribes; ``GET`` shows a page whose button posts it
  (a GET never unsubscribes, so link scanners cannot unsubscribe anyone).
- ``/v1/inbox``: the in-app inbox for product frontends: list, mark read, dismiss, and a
  server-sent-events stream of new messages. Every route needs a per-customer token
  (``Authorization: Bearer <token>``, or ``?token=`` where headers cannot be set, as with
  ``EventSource``) and only ever touches that customer's messages.
- ``/healthz``, ``/metrics``; ``/readyz`` (ready when PostgreSQL answers). A route that
  needs the database answers 503 with ``Retry-After`` while it is unavailable.
"""

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from common.clock import Clock
from common.db import database_ready
from common.http import (
    BIGINT_MAX,
    RequestLog,
    answer_outages,
    docs_routes,
    ops_router,
    readiness_router,
)
from common.kafka import Publisher
from common.messages import Delivery, DeliveryStatus, Notification
from common.topics import Topic
from notifier import metrics
from notifier.adapters.delivery_log import DeliveryLog
from notifier.adapters.inbox import Inbox, InboxEvents, InboxMessage
from notifier.adapters.suppressions import Suppressions
from notifier.bootstrap import inbox_events as make_inbox_events
from notifier.bootstrap import stores
from notifier.domain.signing import (
    BadSignature,
    LinkTokens,
    TokenExpired,
    verify_inbox_token,
    verify_reply_address,
)
from notifier.entrypoints import inbound
from notifier.links import Links
from notifier.settings import NotifierSettings

PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
ONE_CLICK = ("List-Unsubscribe", "One-Click")
REPLY_ADDRESS = re.compile(r"reply\+[A-Za-z0-9._-]+@[A-Za-z0-9.-]+", re.IGNORECASE)
# Bounds of what the routes take (422 outside them), well above what Tenure issues: a
# tracking or unsubscribe token is a few hundred characters, an inbox token under 300.
MAX_LINK_TOKEN = 2048
MAX_INBOX_TOKEN = 1024
LinkToken = Annotated[str, Path(max_length=MAX_LINK_TOKEN)]
# Lines of the event stream end with LF alone (the SSE format allows CRLF, CR or LF).
SEP = "\n"
MessageId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="An inbox message's id.")]


class Detail(BaseModel):
    """The body of an error answer."""

    detail: str


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route declares in the OpenAPI document (besides 422)."""
    # JSON whatever the route's own answer is (the unsubscribe pages are HTML)
    json = {"application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}}
    return {status: {"model": Detail, "content": json} for status in statuses}


STREAM_EVENT: dict[str, Any] = {
    "description": "One event of the stream (OpenAPI 3.1: the schema of each event).",
    "type": "object",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"const": "message"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["id", "title", "body", "created_at", "read_at"],
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "body": {"type": "string"},
                    "playbook": {"type": ["string", "null"]},
                    "step": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "read_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
        "retry": {"type": "integer"},
    },
}


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'</head><body style="font-family: sans-serif; max-width: 480px; margin: 2em auto">'
        f"{body}</body></html>"
    )


def create_api(
    settings: NotifierSettings,
    publisher: Publisher,
    clock: Clock,
    *,
    suppressions: Suppressions | None = None,
    inbox: Inbox | None = None,
    log: DeliveryLog | None = None,
    inbox_events: InboxEvents | None = None,
    stop: asyncio.Event | None = None,
) -> FastAPI:
    """The notifier's ASGI app. Nothing connects until a request needs the database."""
    app = FastAPI(title="Tenure notifier", version="1", **docs_routes(settings.docs))
    app.add_middleware(RequestLog)
    app.include_router(ops_router(metrics=settings.metrics_port is None))
    links = Links(settings)
    if suppressions is None or inbox is None or log is None:
        built = stores(settings)
        suppressions = suppressions or built.suppressions
        inbox = inbox or built.inbox
        log = log or built.log
    suppression_list: Suppressions = suppressions
    messages: Inbox = inbox
    delivery_log: DeliveryLog = log
    app.include_router(readiness_router(lambda: database_ready(delivery_log.engine)))
    answer_outages(app)
    stopping = stop or asyncio.Event()
    announced = inbox_events or make_inbox_events(settings, messages, stop=stopping)

    async def report(data: dict[str, Any], status: DeliveryStatus, **extra: Any) -> None:
        await publisher.publish(
            Topic.DELIVERIES,
            data["c"],
            Delivery(
                notification_id=data["n"],
                customer_id=data["c"],
                journey_id=data.get("j"),
                playbook=data.get("p"),
                step=data.get("s"),
                channel=data.get("ch", "email"),
                status=status,
                occurred_at=clock.now(),
                **extra,
            ),
        )
        metrics.TRACKED.labels(status=status).inc()

    # -- tracking ---------------------------------------------------------------------
    def about(n: Notification) -> dict[str, Any]:
        return {
            "n": n.notification_id,
            "c": n.customer_id,
            "j": n.journey_id,
            "p": n.playbook,
            "s": n.step,
            "ch": n.channel,
        }

    async def linked(token: str, tokens: LinkTokens, what: str) -> Notification | None:
        """The notification a link token names, looked up in the delivery log; None for a
        link that expired or names no known notification. Raises 404 for any other token."""
        try:
            notification_id = tokens.verify(token)
        except TokenExpired:
            metrics.LINKS_REFUSED.labels(kind=what, reason="expired").inc()
            return None
        except BadSignature:
            metrics.LINKS_REFUSED.labels(kind=what, reason="invalid").inc()
            raise HTTPException(404, f"unknown {what} link") from None
        raw = await delivery_log.notification(notification_id)
        if raw is None:  # signed by us, but the delivery log does not know it
            metrics.LINKS_REFUSED.labels(kind=what, reason="unknown").inc()
            return None
        return Notification.model_validate_json(raw)

    @app.get(
        "/t/click/{token}",
        status_code=302,
        response_class=RedirectResponse,
        responses={302: {"description": "To the landing page."}, **answers(404)},
    )
    async def click(token: LinkToken) -> RedirectResponse:
        # An expired link still leads to the offer; only the click is not recorded.
        n = await linked(token, links.track, "tracking")
        if n is not None:
            await report(about(n), "clicked")
        return RedirectResponse(settings.landing_url, status_code=302)

    @app.get(
        "/t/open/{token}",
        response_class=Response,
        responses={200: {"content": {"image/gif": {}}}, **answers(404)},
    )
    async def open_pixel(token: LinkToken) -> Response:
        n = await linked(token, links.track, "tracking")
        if n is not None:
            await report(about(n), "opened")
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    # -- one-click unsubscribe (RFC 8058) ----------------------------------------------
    async def unsubscribing(token: str) -> Notification:
        n = await linked(token, links.unsubscribe, "unsubscribe")
        if n is None:
            raise HTTPException(
                410,
                "this unsubscribe link has expired or its message is unknown; use the link "
                "of a more recent email",
            )
        if n.channel != "email" or not n.recipient:
            raise HTTPException(404, "unknown unsubscribe link")
        return n

    @app.get("/u/{token}", response_class=HTMLResponse, responses=answers(404, 410))
    async def unsubscribe_page(token: LinkToken) -> HTMLResponse:
        n = await unsubscribing(token)
        return _page(
            "Unsubscribe",
            f"<p>Stop marketing email to <strong>{html.escape(n.recipient or '')}</strong>?</p>"
            f'<form method="post"><input type="hidden" name="{ONE_CLICK[0]}" '
            f'value="{ONE_CLICK[1]}"><button type="submit">Unsubscribe</button></form>',
        )

    @app.post("/u/{token}", response_class=HTMLResponse, responses=answers(400, 404, 410))
    async def unsubscribe(token: LinkToken, request: Request) -> HTMLResponse:
        n = await unsubscribing(token)
        form = await request.form()
        if form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            raise HTTPException(
                400, "body must carry List-Unsubscribe=One-Click (RFC 8058), as form data"
            )
        new = await suppression_list.add(
            n.recipient or "",
            customer_id=n.customer_id,
            reason="unsubscribed",
            notification_id=n.notification_id,
        )
        # Published on every accepted request: a retried POST after a failed publish
        # still reaches the orchestrator (its handling is idempotent).
        await report({**about(n), "ch": "email"}, "unsubscribed", detail="one-click unsubscribe")
        metrics.UNSUBSCRIBES.labels(new=str(new).lower()).inc()
        return _page("Unsubscribed", "<p>You are unsubscribed from marketing email.</p>")

    # -- replies (an inbound mail webhook) ------------------------------------------------
    @app.post("/v1/inbound/reply", responses=answers(400, 401, 404, 413, 415))
    async def inbound_reply(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        """Called by the inbound mail service of ``reply_domain`` for each received mail.

        Needs ``INBOUND_SECRET`` (HTTP Basic password or bearer token: 401 without it;
        the route answers 404 when none is configured). Takes JSON or form data of at most
        ``INBOUND_MAX_BYTES`` and looks for signed reply addresses in ``to``,
        ``recipient`` or ``envelope``; each valid one publishes ``replied``.
        """
        secret = settings.inbound_secret.get_secret_value()
        if not secret:
            raise HTTPException(404, "inbound replies are not configured")
        inbound.check_credential(authorization, secret)
        fields = await inbound.fields(request, settings.inbound_max_bytes)
        text = " ".join(str(fields.get(name, "")) for name in ("to", "recipient", "envelope", "To"))
        replied: list[str] = []
        for address in REPLY_ADDRESS.findall(text):
            try:
                notification_id = verify_reply_address(address, links.reply_keys)
            except BadSignature:
                continue
            raw = await delivery_log.notification(notification_id)
            if raw is None or notification_id in replied:
                continue
            n = Notification.model_validate_json(raw)
            await report(about(n), "replied")
            replied.append(notification_id)
        if not replied:
            raise HTTPException(404, "no signed reply address of a known notification")
        return {"replied": replied}

    # -- in-app inbox --------------------------------------------------------------------
    def customer_of(
        authorization: Annotated[str | None, Header(max_length=MAX_INBOX_TOKEN + 7)] = None,
        token: Annotated[str | None, Query(max_length=MAX_INBOX_TOKEN)] = None,
    ) -> str:
        raw = token
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                raw = value.strip()
        if not raw:
            raise HTTPException(401, "missing inbox token", headers={"WWW-Authenticate": "Bearer"})
        try:
            return verify_inbox_token(
                raw,
                settings.inbox_key(),
                now=int(time.time()),
                max_ttl_s=settings.inbox_token_max_ttl_s,
            )
        except BadSignature as exc:
            metrics.INBOX_REQUESTS.labels(action="auth", answer="unauthorized").inc()
            raise HTTPException(
                401, f"invalid inbox token: {exc}", headers={"WWW-Authenticate": "Bearer"}
            ) from None

    Customer = Annotated[str, Depends(customer_of)]

    @app.get("/v1/inbox", responses=answers(401))
    async def list_inbox(
        customer: Customer,
        after: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
        unread_only: bool = False,
    ) -> dict[str, Any]:
        found = await messages.list(
            customer, after_id=after, limit=settings.inbox_page_size, include_read=not unread_only
        )
        metrics.INBOX_REQUESTS.labels(action="list", answer="ok").inc()
        return {
            "messages": [m.as_json() for m in found],
            "unread": sum(1 for m in found if m.read_at is None),
        }

    async def mark(customer: str, message_id: int, action: str) -> dict[str, Any]:
        marks: dict[str, tuple[str, DeliveryStatus]] = {
            "read": ("read_at", "read"),
            "dismiss": ("dismissed_at", "dismissed"),
        }
        column, status = marks[action]
        result = await messages.mark(customer, message_id, column=column, at=clock.now())
        if result is None:
            metrics.INBOX_REQUESTS.labels(action=action, answer="not_found").inc()
            raise HTTPException(404, "no such message")
        message, changed = result
        if changed:
            await report(
                {
                    "n": message.notification_id,
                    "c": message.customer_id,
                    "j": message.journey_id,
                    "p": message.playbook,
                    "s": message.step,
                    "ch": "in_app",
                },
                status,
            )
        metrics.INBOX_REQUESTS.labels(action=action, answer="ok").inc()
        return message.as_json()

    @app.post("/v1/inbox/{message_id}/read", responses=answers(401, 404))
    async def read(customer: Customer, message_id: MessageId) -> dict[str, Any]:
        return await mark(customer, message_id, "read")

    @app.post("/v1/inbox/{message_id}/dismiss", responses=answers(401, 404))
    async def dismiss(customer: Customer, message_id: MessageId) -> dict[str, Any]:
        return await mark(customer, message_id, "dismiss")

    @app.get(
        "/v1/inbox/stream",
        response_class=EventSourceResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": STREAM_EVENT}}},
            **answers(401),
        },
    )
    async def stream(
        customer: Customer,
        last_event_id: Annotated[
            int | None,
            Header(
                ge=0,
                le=BIGINT_MAX,
                description="The id of the last message received (an EventSource sends it "
                "when it reconnects): the stream goes on after it. Without it, the stream "
                "starts after the newest message.",
            ),
        ] = None,
    ) -> EventSourceResponse:
        """New messages of the token's customer as server-sent events (``event: message``,
        ``id`` the message id, ``data`` the message as JSON), and a keep-alive comment
        every ``inbox_heartbeat_s``."""
        if last_event_id is not None:
            cursor = last_event_id
        else:
            cursor = await messages.last_id(customer)
        metrics.INBOX_REQUESTS.labels(action="stream", answer="ok").inc()
        # sse-starlette ends the stream (and closes the generator) when the client goes.
        return EventSourceResponse(
            events(customer, cursor),
            ping=settings.inbox_heartbeat_s,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
            sep=SEP,
        )

    async def events(customer: str, cursor: int) -> AsyncIterator[ServerSentEvent]:
        """New messages as they are committed: woken by NOTIFY (see InboxEvents), read from
        the table after ``cursor``; read again after a quiet heartbeat all the same."""
        metrics.INBOX_STREAMS.inc()
        try:
            async with announced.subscribe(customer) as woken:
                yield ServerSentEvent(retry=3000, sep=SEP)
                while not stopping.is_set():
                    woken.clear()  # before the read: a message committed during it wakes us
                    found: list[InboxMessage] = await messages.list(
                        customer, after_id=cursor, limit=settings.inbox_page_size
                    )
                    for message in found:
                        cursor = message.id
                        data = orjson.dumps(message.as_json()).decode()
                        yield ServerSentEvent(data, event="message", id=str(message.id), sep=SEP)
                    if len(found) == settings.inbox_page_size:
                        continue  # more to read
                    await _woken(woken, stopping, settings.inbox_heartbeat_s)
        finally:
            metrics.INBOX_STREAMS.dec()

    return app


async def _woken(woken: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``woken`` or ``stop`` for at most ``timeout_s``; whether either was set."""
    waiters = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stop.wait())]
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)
