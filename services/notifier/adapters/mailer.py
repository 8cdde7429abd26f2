"""SMTP delivery (aiosmtplib)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import time
from dataclasses import dataclass
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import make_msgid, parseaddr
from typing import Any, Protocol

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


class Mailer(Protocol):
    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        """Hand one message to the mail server; raises :class:`SendError`. Not idempotent."""
        ...


def _header(value: str) -> str:
    """A header value as is when ASCII, else RFC 2047-encoded UTF-8 (never folded)."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=998)


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def build_message(sender: str, to: str, email: RenderedEmail, headers: dict[str, str]) -> Message:
    """A multipart/alternative message: the plain-text part, then the HTML part."""
    # A random boundary set here spares the generator a regex compiled for every message.
    message = MIMEMultipart("alternative", boundary=f"=_tenure_{secrets.token_hex(16)}")
    message["From"] = _header(sender)
    message["To"] = to
    message["Subject"] = _header(email.subject)
    message["Message-ID"] = make_msgid(domain="tenure.local")
    for name, value in headers.items():
        message[name] = _header(value)
    message.attach(MIMEText(email.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    message.attach(MIMEText(email.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return message


class _Unfolded(Compat32):
    """compat32 that writes a prepared ASCII header as is, without folding it."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii() and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


# Headers are not folded: a folded List-Unsubscribe URL could be broken or encoded where
# no mailbox provider would find the link, and aiosmtplib would flatten a message object
# with its own folding policy; so messages are flattened here and handed over as bytes.
# Values are prepared by _header (RFC 2047 for non-ASCII), so nothing is left to parse:
# the modern email policy spent ~2.5 ms per message here, compat32 ~0.7, this ~0.35.
POLICY = _Unfolded(linesep="\r\n", max_line_length=998)


def flatten(message: Message) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, policy=POLICY, maxheaderlen=0).flatten(message)
    return out.getvalue()


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    idle_since: float
    sent: int = 0


class SmtpMailer:
    """SMTP over a small pool of persistent connections (aiosmtplib).

    At most ``smtp_pool_size`` connections are open; a connection idle for longer than
    ``smtp_idle_s`` or used for ``smtp_messages_per_connection`` messages is closed rather
    than reused, and any error closes the connection it happened on (the next message
    opens a new one). A handshake (and STARTTLS) per message would cost more than the
    message itself.
    """

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.sender = parseaddr(settings.mail_from)[1]
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_implicit_tls,
            # STARTTLS required when asked, never over implicit TLS, else used when offered.
            start_tls=True if s.smtp_tls else False if s.smtp_implicit_tls else None,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_s,
            local_hostname=s.smtp_local_hostname,
        )
        await client.connect()
        return _Connection(client, time.monotonic())

    async def _take(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since <= self.settings.smtp_idle_s and conn.client.is_connected:
                return conn
            await self._close(conn)
        return await self._connect()

    async def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            if conn.client.is_connected:
                await conn.client.quit(timeout=self.settings.smtp_timeout_s)
        conn.client.close()

    async def aclose(self) -> None:
        """Close every idle connection (at shutdown)."""
        while self._idle:
            await self._close(self._idle.pop())

    async def send(self, *, to: str, email: RenderedEmail, headers: dict[str, str]) -> None:
        data = flatten(build_message(self.settings.mail_from, to, email, headers))
        async with self._slots:
            conn: _Connection | None = None
            try:
                conn = await self._take()
                await conn.client.sendmail(self.sender, [to], data)
            except BaseException as exc:
                if conn is not None:
                    await self._close(conn)
                raise _translate(exc, to) from exc
            conn.sent += 1
            conn.idle_since = time.monotonic()
            if conn.sent >= self.settings.smtp_messages_per_connection:
                await self._close(conn)
            else:
                self._idle.append(conn)


def _translate(exc: BaseException, to: str) -> BaseException:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        if codes and all(500 <= c < 600 for c in codes):
            return Bounced(f"SMTP refused {to}: {exc}")
        return SendError(f"SMTP: {type(exc).__name__}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600 and exc.code not in (500, 502, 503, 504):
            return Bounced(f"SMTP {exc.code}: {exc.message}")
        return SendError(f"SMTP {exc.code}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return SendError(f"SMTP: {type(exc).__name__}: {exc}")
    return exc
