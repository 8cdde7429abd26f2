"""The signed links of messages, as the settings make them: issued by the deliverer for
each message, verified by the API when they are followed.

Tokens name the notification only (``domain/signing.py: LinkTokens``); whoever follows a
link learns nothing from it, and the API looks the rest up in the delivery log.
"""

from __future__ import annotations

from collections.abc import Callable

from common.messages import Notification
from notifier.domain import messages
from notifier.domain.signing import LinkTokens, purpose_key, reply_address
from notifier.settings import NotifierSettings


class Links:
    """Click and open tracking, one-click unsubscribe, and signed reply addresses.

    ``now`` is real time (people follow links on their own clock), injectable for tests.
    """

    def __init__(
        self, settings: NotifierSettings, *, now: Callable[[], float] | None = None
    ) -> None:
        keys = settings.link_keys()
        extra = {} if now is None else {"now": now}
        self.settings = settings
        self.track = LinkTokens(keys, purpose="track", max_age_s=settings.link_max_age_s, **extra)
        self.unsubscribe = LinkTokens(
            keys, purpose="unsubscribe", max_age_s=settings.unsubscribe_max_age_s, **extra
        )
        self.reply_keys = tuple(purpose_key(key, "reply") for key in keys)

    def for_notification(self, n: Notification) -> messages.Links:
        """The links of one message: two short signatures, no database access."""
        token = self.track.issue(n.notification_id)
        base = self.settings.public_url
        reply_domain = self.settings.reply_domain
        return messages.Links(
            offer_url=f"{base}/t/click/{token}",
            open_url=f"{base}/t/open/{token}",
            unsubscribe_url=f"{base}/u/{self.unsubscribe.issue(n.notification_id)}",
            app_url=self.settings.app_url,
            reply_to=reply_address(n.notification_id, self.reply_keys[-1], reply_domain)
            if reply_domain and n.channel == "email"
            else None,
        )
