"""Engagement with Tenure's own messages (docs/domain.md sections 2 and 3: ``engagement_low``).

The notifier reports each message's outcome on ``deliveries``; email and in-app
messages count, webhooks (CSM tasks) do not.
"""

from __future__ import annotations

from common.messages import Delivery
from scoring.domain.state import CustomerState, add

ENGAGED_STATUSES = frozenset({"opened", "clicked", "replied", "read"})
MESSAGE_CHANNELS = frozenset({"email", "in_app"})


def fold_delivery(state: CustomerState, delivery: Delivery) -> bool:
    """Record a notifier outcome (in place). False when it was seen before (nothing changed).

    ``sent`` counts a message; the first of ``opened``, ``clicked``, ``replied`` or
    ``read`` counts it engaged, once per notification however engaged.
    """
    key = f"d:{delivery.notification_id}:{delivery.status}"
    if key in state.seen or delivery.channel not in MESSAGE_CHANNELS:
        return False
    state.seen.append(key)
    when = delivery.occurred_at
    if delivery.status == "sent":
        add(state, "msg_sent", when)
    elif delivery.status in ENGAGED_STATUSES:
        engaged = f"d:{delivery.notification_id}:engaged"
        if engaged not in state.seen:
            state.seen.append(engaged)
            add(state, "msg_engaged", when)
    return True
