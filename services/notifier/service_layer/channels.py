"""One handler per channel, routed by :data:`CHANNELS`: how a notification is sent.

Each takes the notification, its signed links and keyword-only dependencies, and
returns once the channel took the message. It raises
:class:`~notifier.errors.Suppressed` when the message must not be sent (consent withheld,
address suppressed), :class:`~notifier.domain.render.RenderError` or
:class:`~notifier.domain.messages.NoRoute` when it cannot be made, and what its port
raises when the channel refused it (:mod:`notifier.errors`). The outcome is decided by
:func:`notifier.service_layer.delivery.attempt`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol, TypeAlias

import orjson

from common.messages import Channel, Notification
from notifier import metrics
from notifier.domain import messages
from notifier.errors import Bounced, PermanentSendError, SendError, Suppressed
from notifier.service_layer.context import Dependencies


class Unchecked:
    """The suppression list was not read with the claim (a retry): read it when sending."""


UNCHECKED = Unchecked()


@contextlib.asynccontextmanager
async def reaching(channel: str, endpoint: str) -> AsyncIterator[None]:
    """Around one call of a channel's port: its outcome becomes the endpoint's
    availability (``metrics.ENDPOINT_UP``). A transient :class:`SendError` is down; a
    bounce, an answer about the recipient, is up; another permanent refusal (an HTTP
    4xx, a URL the guard refuses) says nothing about the endpoint's availability."""
    try:
        yield
    except Bounced:
        metrics.endpoint_reached(channel, endpoint, True)
        raise
    except PermanentSendError:
        raise
    except SendError:
        metrics.endpoint_reached(channel, endpoint, False)
        raise
    metrics.endpoint_reached(channel, endpoint, True)


# The address's suppression as read with the claim: a reason, None (not suppressed), or
# UNCHECKED (not read yet).
Suppression: TypeAlias = str | Unchecked | None


async def send_email(
    n: Notification,
    links: messages.Links,
    *,
    deps: Dependencies,
    suppressed: Suppression,
) -> None:
    """Render and hand the email to the mail server, unless the address is suppressed or
    marketing consent withheld. An email the crash policy would not send twice is marked
    ``handed`` in the log just before it goes out."""
    if not n.recipient:
        raise PermanentSendError("no email address")
    if messages.is_marketing(n):
        if messages.withheld_consent(n, "email_marketing"):
            raise Suppressed("no email-marketing consent")
        reason = (
            await deps.suppressions.reason(n.recipient)
            if isinstance(suppressed, Unchecked)
            else suppressed
        )
        if reason is not None:
            raise Suppressed(f"address suppressed: {reason}")
    email = deps.renderer.email(n.template, messages.template_context(n, links))
    headers = messages.email_headers(
        n, links.unsubscribe_url, links.reply_to, message_id_domain=deps.message_domain
    )
    if deps.resent_after_crash(n):
        async with reaching("email", deps.mail_endpoint):
            await deps.mailer.send(to=n.recipient, email=email, headers=headers)
    else:
        async with deps.handover:
            await deps.log.handed(n.notification_id)
            async with reaching("email", deps.mail_endpoint):
                await deps.mailer.send(to=n.recipient, email=email, headers=headers)


async def store_in_app(
    n: Notification,
    links: messages.Links,
    *,
    deps: Dependencies,
    suppressed: Suppression,
) -> None:
    """Render the in-app message and put it in the customer's inbox (idempotent)."""
    if messages.is_marketing(n) and messages.withheld_consent(n, "in_app"):
        raise Suppressed("no in-app consent")
    message = deps.renderer.in_app(n.template, messages.template_context(n, links))
    await deps.inbox.store(
        notification_id=n.notification_id,
        customer_id=n.customer_id,
        journey_id=n.journey_id,
        playbook=n.playbook,
        step=n.step,
        title=message.title,
        body=message.body,
        created_at=deps.clock.now(),
    )


async def post_webhook(
    n: Notification,
    links: messages.Links,
    *,
    deps: Dependencies,
    suppressed: Suppression,
) -> None:
    """Post the CSM task to the endpoint its route names, signed, with the notification id
    as the webhook id (receivers de-duplicate on it)."""
    routes = deps.routes
    route = messages.route_for(n, routes)
    endpoint = routes[route]
    title = deps.renderer.text(n.template, messages.template_context(n, links))
    body = orjson.dumps(messages.csm_task_body(n, title, endpoint.format))
    async with reaching("webhook", route):
        await deps.webhooks.post(endpoint.url, msg_id=n.notification_id, body=body)


class ChannelHandler(Protocol):
    async def __call__(
        self,
        n: Notification,
        links: messages.Links,
        *,
        deps: Dependencies,
        suppressed: Suppression,
    ) -> None: ...


CHANNELS: Mapping[Channel, ChannelHandler] = {
    "email": send_email,
    "in_app": store_in_app,
    "webhook": post_webhook,
}
