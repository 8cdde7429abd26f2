"""SMTP delivery (aiosmtplib)."""

from __future__ import annotations

import io
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid, parseaddr
from typing import Protocol

import aiosmtplib

from notifier.domain.render import RenderedEmail
from notifier.settings import NotifierSettings


class SendError(Exception):
    """A message could not be handed to its channel (SMTP refused, HTTP failed, timeout).

    Transient: the same message may succeed later, so it is retried.
    """


class PermanentSendError(SendError):
    """The channel refused the message for good (a refused address, a URL we may not call)."""


class Bounced(PermanentSendError):
    """The mail server refused the recipient permanently (5xx)."""


# Headers are not folded below RFC 5322's hard limit: a folded List-Unsubscribe URL would
# be RFC 2047-encoded, and no mailbox provider would find the link in it.
# aiosmtplib would flatten a message object with its own (folding) policy, so messages
# are flattened here and handed over as bytes.
POLICY = SMTP.clone(max_line_length=998)


def flatten(message: EmailMessage) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, policy=POLICY).flatten(message)
    return out.getvalue()


class Mailer(Protocol):
    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        """Hand one message to the mail server; raises :class:`SendError`. Not idempotent."""
        ...


def build_message(
    sender: str, to: str, email: RenderedEmail, headers: dict[str, str]
) -> EmailMessage:
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = email.subject
    message["Message-ID"] = make_msgid(domain="tenure.local")
    for name, value in headers.items():
        message[name] = value
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class SmtpMailer:
    """One SMTP connection per message (aiosmtplib.send), as the settings say."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        s = self.settings
        try:
            await aiosmtplib.send(
                flatten(build_message(s.mail_from, to, email, headers)),
                sender=parseaddr(s.mail_from)[1],
                recipients=[to],
                hostname=s.smtp_host,
                port=s.smtp_port,
                start_tls=s.smtp_tls or None,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                timeout=s.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise Bounced(f"SMTP refused {to}: {exc}") from exc
            raise SendError(f"SMTP: {type(exc).__name__}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600 and exc.code not in (500, 502, 503, 504):
                raise Bounced(f"SMTP {exc.code}: {exc.message}") from exc
            raise SendError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"SMTP: {type(exc).__name__}: {exc}") from exc
