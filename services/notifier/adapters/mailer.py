"""SMTP delivery (aiosmtplib): the :class:`~notifier.service_layer.ports.Mailer` port.

aiosmtplib's errors (and the socket's) are translated here into the notifier's
(:func:`_translate`): a permanent refusal of the recipient is :class:`Bounced`; no
answer once DATA has begun (a time-out or a lost connection: the server may have
accepted the message) is :class:`OutcomeUnknown`; any other failure a (transient)
:class:`SendError`."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import secrets
import time
from dataclasses import dataclass
from email.header import Header
from email.policy import Compat32
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib

from notifier.domain.render import RenderedEmail
from notifier.errors import Bounced, OutcomeUnknown, SendError
from notifier.settings import NotifierSettings


def _header(value: str) -> str:
    """A header value as is when ASCII, else RFC 2047-encoded UTF-8 (never folded).

    Line breaks become spaces: a value can never start another header.
    """
    if "\r" in value or "\n" in value:
        value = " ".join(value.splitlines())
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=998)


class _Unfolded(Compat32):
    """compat32 that writes a prepared ASCII header as is, without folding it."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii() and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


# Headers are not folded: a folded List-Unsubscribe URL could be broken or encoded where
# no mailbox provider would find the link, and aiosmtplib would flatten a message object
# with its own folding policy; so messages are serialised here and handed over as bytes.
POLICY = _Unfolded(linesep="\r\n", max_line_length=998)


def _quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends, by ``binascii`` (C)."""
    crlf = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return binascii.b2a_qp(crlf.encode(), istext=True)


def sender_domain(sender: str) -> str:
    """The domain of a ``From`` value (``Name <local@domain>``), lower-case; "" if none."""
    return parseaddr(sender)[1].rpartition("@")[2].lower()


def message_bytes(sender: str, to: str, email: RenderedEmail, headers: dict[str, str]) -> bytes:
    """The whole message for SMTP DATA: multipart/alternative, the plain-text part then
    the HTML part, each UTF-8 quoted-printable; CRLF line ends.

    Every message has the ``Date`` (now, real time, GMT) and ``Message-ID`` RFC 5322 asks
    for; ``headers`` may give the ``Message-ID`` (the deliverer does, one per
    notification), else a random one on the sender's domain is made.

    Header values are prepared by :func:`_header` and written by the compat32 policy
    above; the two-part body is framed here. Building it as a tree of ``email.message``
    objects and flattening it with the email generator cost 0.6 ms per message (the
    generator writes a line at a time, ``email.quoprimime`` encodes in Python), about a
    third of the notifier's own CPU per email; this costs under 0.1 ms.
    """
    boundary = f"=_tenure_{secrets.token_hex(16)}"
    fields = [
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ("From", _header(sender)),
        ("To", _header(to)),
        ("Subject", _header(email.subject)),
        ("Date", formatdate(usegmt=True)),
        *(
            ()
            if "Message-ID" in headers
            else (("Message-ID", make_msgid(domain=sender_domain(sender) or None)),)
        ),
        *((name, _header(value)) for name, value in headers.items()),
    ]
    out = [POLICY.fold_binary(name, value) for name, value in fields]
    out.append(b"\r\n")
    for subtype, text in (("plain", email.text), ("html", email.html)):
        out.append(
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode()
        )
        out.append(_quoted_printable(text))
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


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
        data = message_bytes(self.settings.mail_from, to, email, headers)
        async with self._slots:
            conn: _Connection | None = None
            in_data = False
            try:
                conn = await self._take()
                # What sendmail does, a step at a time, to know when DATA began. SIZE
                # (advisory) once an EHLO listed it: a connection's first message after
                # STARTTLS or over implicit TLS may go without (its EHLO comes with MAIL).
                client = conn.client
                size = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
                await client.mail(self.sender, options=size)
                await client.rcpt(to)
                in_data = True
                await client.data(data)
            except BaseException as exc:
                if conn is not None:
                    await self._close(conn)
                raise _translate(exc, to, in_data=in_data) from exc
            conn.sent += 1
            conn.idle_since = time.monotonic()
            if conn.sent >= self.settings.smtp_messages_per_connection:
                await self._close(conn)
            else:
                self._idle.append(conn)


def _translate(exc: BaseException, to: str, *, in_data: bool = False) -> BaseException:
    """The notifier's error for ``exc``, raised sending to ``to``; ``in_data``: raised by
    the DATA step (after MAIL and RCPT were accepted).

    A reply is definite at any step: 5xx refuses for good (bar 500-504, a command the
    server did not take), 4xx is transient. Without a reply, a failure before DATA is
    transient; within DATA it is :class:`OutcomeUnknown`. aiosmtplib's ``data()`` sends
    the DATA command and the message in one call and raises the same errors whether its
    wait for the 354 or for the final reply failed, so a failure while awaiting the 354
    (nothing sent yet) is counted as unknown too: the cautious side.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and 500 <= exc.code < 600:
        return Bounced(f"SMTP refused {to}: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600 and exc.code not in (500, 502, 503, 504):
            return Bounced(f"SMTP {exc.code}: {exc.message}")
        return SendError(f"SMTP {exc.code}: {exc.message}")
    if in_data and isinstance(exc, OSError | TimeoutError):
        return OutcomeUnknown(
            f"SMTP: no reply to DATA ({type(exc).__name__}: {exc}); the server may have "
            "accepted the message"
        )
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return SendError(f"SMTP: {type(exc).__name__}: {exc}")
    return exc
