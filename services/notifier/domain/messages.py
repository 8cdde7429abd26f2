"""What a notification becomes: template context, email headers, CSM task bodies (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from common.messages import OFFER_KEY, Notification
from notifier.errors import NotifierError

WebhookFormat = Literal["standard", "slack"]


class NoRoute(NotifierError):
    """A webhook notification names a target no endpoint is configured for."""


@dataclass(frozen=True)
class Links:
    """The signed links of one message."""

    offer_url: str
    open_url: str
    unsubscribe_url: str
    app_url: str
    reply_to: str | None = None


def is_marketing(n: Notification) -> bool:
    """Email and in-app customer messages are marketing; CSM tasks are not.

    A notification may say otherwise with ``context["marketing"] = False`` (transactional).
    """
    return n.channel in ("email", "in_app") and n.context.get("marketing") is not False


def withheld_consent(n: Notification, kind: Literal["email_marketing", "in_app"]) -> bool:
    """Whether the notification's context says consent ``kind`` was withheld.

    The orchestrator decides consent when the step is due; this catches a context that
    carries ``consent`` (``{"email_marketing": false}``) all the same.
    """
    consent = n.context.get("consent")
    return isinstance(consent, Mapping) and consent.get(kind) is False


def template_context(n: Notification, links: Links) -> dict[str, Any]:
    """The variables templates see: the notification's context, its ids, its links and
    ``offer``, the step's offer figures (empty when it has none, never missing)."""
    return {
        **n.context,
        OFFER_KEY: n.offer,
        "customer_id": n.customer_id,
        "playbook": n.playbook,
        "step": n.step,
        "variant": n.variant,
        "priority": n.priority,
        "offer_url": links.offer_url,
        "open_url": links.open_url,
        "unsubscribe_url": links.unsubscribe_url,
        "app_url": links.app_url,
    }


# RFC 5322 dot-atom-text: what the left part of a Message-ID may hold as it is.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def message_id(notification_id: str, domain: str) -> str:
    """The ``Message-ID`` of a notification's email: ``<notification id@domain>``.

    One per notification, so a message sent again (the crash policy allows it for some
    emails) carries the same id, and receivers that keep one message per id show one.
    An id that is not RFC 5322 dot-atom text is replaced by its SHA-256 (hex).
    """
    left = notification_id
    if len(left) > 128 or not _DOT_ATOM.fullmatch(left):
        left = hashlib.sha256(notification_id.encode()).hexdigest()
    return f"<{left}@{domain}>"


def email_headers(
    n: Notification,
    unsubscribe_url: str,
    reply_to: str | None = None,
    *,
    message_id_domain: str | None = None,
) -> dict[str, str]:
    """Headers of an email; marketing email gets RFC 8058 one-click unsubscribe. With
    ``message_id_domain``, the ``Message-ID`` from :func:`message_id`."""
    headers = {"X-Tenure-Notification-Id": n.notification_id}
    if message_id_domain:
        headers["Message-ID"] = message_id(n.notification_id, message_id_domain)
    if reply_to:
        headers["Reply-To"] = reply_to
    if is_marketing(n):
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def route_for(n: Notification, routes: Mapping[str, object]) -> str:
    """The route name a webhook notification goes to; raises :class:`NoRoute`.

    ``csm`` tries the owner CSM's own endpoint (``csm:<owner_csm>``), then their team's
    (``team:<team>``), then the default ``csm`` route; any other recipient is a route name.
    """
    target = n.recipient or ""
    candidates = [target]
    if target == "csm":
        team = n.context.get("team")
        owner = n.context.get("owner_csm")
        candidates = [
            *([f"csm:{owner}"] if owner else []),
            *([f"team:{team}"] if team else []),
            "csm",
        ]
    for name in candidates:
        if name in routes:
            return name
    raise NoRoute(f"no webhook endpoint for recipient {target!r} (tried {', '.join(candidates)})")


def _percent(value: object) -> str:
    return f"{float(value) * 100:.0f}%" if isinstance(value, int | float) else "unknown"


def _journey_line(journey: object) -> str | None:
    """One line on what the journey sent, when, and what is pending (None: not known)."""
    if not isinstance(journey, Mapping):
        return None
    parts = []
    for entry in journey.get("steps", ()):
        if not isinstance(entry, Mapping):
            continue
        status, at, reason = entry.get("status"), entry.get("at"), entry.get("reason")
        when = f"{str(at)[:16].replace('T', ' ')} UTC" if at else None
        if status == "sent":
            text = f"sent {when}"
        elif status == "queued":
            text = f"handed for delivery {when}, not yet confirmed sent"
        elif status in ("not_sent", "skipped"):
            text = f"not sent ({reason})"
        else:
            text = f"due {when}" if when else f"pending, {reason}"
        parts.append(f"{entry.get('step')} ({entry.get('channel')}) {text}")
    return "; ".join(parts) or None


def csm_task_body(n: Notification, title: str, fmt: WebhookFormat = "standard") -> dict[str, Any]:
    """The JSON body of a CSM task: the task, the customer, the score explanation and the
    journey so far (what was sent, when, what is pending; from the orchestrator's context).

    ``standard`` is Tenure's own shape; ``slack`` is an incoming-webhook message (``text``
    and ``blocks``) that also carries the standard fields under ``tenure``.
    """
    score = n.context.get("score")
    journey = n.context.get("journey")
    task: dict[str, Any] = {
        "type": "csm_task",
        "notification_id": n.notification_id,
        "customer_id": n.customer_id,
        "journey_id": n.journey_id,
        "playbook": n.playbook,
        "step": n.step,
        "priority": n.priority,
        "owner_csm": n.context.get("owner_csm"),
        "due_at": n.context.get("due_at"),
        "title": title,
        "explanation": score,
        "journey": journey if isinstance(journey, Mapping) else None,
    }
    if fmt == "standard":
        return task
    score = score if isinstance(score, Mapping) else {}
    signals = [s for s in score.get("signals", ()) if isinstance(s, Mapping)]
    flags = [f.get("name") for f in score.get("red_flags", ()) if isinstance(f, Mapping)]
    why = (
        ", ".join(f"{s.get('name')} ({s.get('value')} vs {s.get('threshold')})" for s in signals)
        or "no active signal"
    )
    priority = ":rotating_light: high priority" if n.priority == "high" else "normal priority"
    so_far = _journey_line(journey)
    story = [{"type": "mrkdwn", "text": f"So far: {so_far}"}] if so_far else []
    return {
        "text": title,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Customer*\n{n.customer_id}"},
                    {"type": "mrkdwn", "text": f"*Playbook*\n{n.playbook} / {n.step}"},
                    {
                        "type": "mrkdwn",
                        "text": f"*Churn probability*\n{_percent(score.get('churn_probability'))}",
                    },
                    {"type": "mrkdwn", "text": f"*Priority*\n{priority}"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Why: {why}"
                        + (f"; red flags: {', '.join(map(str, flags))}" if flags else ""),
                    },
                    *story,
                ],
            },
        ],
        "tenure": task,
    }
