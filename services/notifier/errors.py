"""The notifier's errors: one base class, so that a caller can tell ours from the rest.

Every error the notifier raises on purpose derives from :class:`NotifierError`. This
module imports nothing, so that the pure rules in ``domain/`` can derive their errors
from the base too (``RenderError``, ``NoRoute``, ``UnsafeUrl``, ``BadSignature``
stay beside the rule that raises them). The errors of the channels are here: they are
the language in which the adapters (``adapters/mailer.py``, ``adapters/webhooks.py``)
report a failed send to the service layer, translated from the libraries' own errors
(aiosmtplib, httpx) at that boundary. A lost database is
:class:`common.outage.DatabaseUnavailable`, shared by every service. Only the HTTP API
(``entrypoints/api.py``) picks status codes.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Base class of the notifier's errors."""


class SendError(NotifierError):
    """A message could not be handed to its channel (SMTP refused, HTTP failed, timeout).

    Transient: the same message may succeed later, so it is retried.
    """


class OutcomeUnknown(SendError):
    """The message may have been accepted: it was handed over in full and the answer never
    came (SMTP: a time-out or a lost connection while waiting for the reply to the end of
    DATA; the server may deliver it).

    Sent again only where the email resend policy allows it, as for an email in flight
    at a crash (``Dependencies.resent_after_crash``); otherwise the outcome is
    ``unknown`` and it is not retried (docs/decisions.md, "Notifier").
    """


class PermanentSendError(SendError):
    """The channel refused the message for good (a refused address, a URL we may not call)."""


class Bounced(PermanentSendError):
    """The mail server refused the recipient permanently (5xx)."""


class Suppressed(NotifierError):
    """Not sent on purpose (suppression list or withheld consent); the message says why."""
