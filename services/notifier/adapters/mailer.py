"""SMTP delivery (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib

from notifier.domain.render import RenderedEmail
from notifier.settings import NotifierSettings


class SendError(Exception):
    """A message could not be handed to its channel (SMTP refused, HTTP failed, timeout)."""


class Mailer(Protocol):
    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        """Hand one message to the mail server; raises :class:`SendError`. Not idempotent."""
        ...


def build_message(
    sender: str, to: str, email: RenderedEmail, headers: dict[str, str]
) -> EmailMessage:
    message = EmailMessage()
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
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        s = self.settings
        try:
            await aiosmtplib.send(
                build_message(s.mail_from, to, email, headers),
                hostname=s.smtp_host,
                port=s.smtp_port,
                start_tls=s.smtp_tls or None,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                timeout=s.smtp_timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"SMTP: {type(exc).__name__}: {exc}") from exc
