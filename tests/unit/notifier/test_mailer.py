"""The bytes handed to SMTP, parsed back with the standard library's modern policy; and
what an SMTP failure means for the message (:func:`_translate`)."""

from __future__ import annotations

import email
import email.utils
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage

import aiosmtplib
import pytest

from notifier.adapters.mailer import _translate, message_bytes
from notifier.domain.render import RenderedEmail
from notifier.errors import Bounced, OutcomeUnknown, SendError

UNSUBSCRIBE = "<https://n.example/u/" + "a" * 300 + ">"


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def build(**over: str) -> bytes:
    rendered = RenderedEmail(
        subject=over.get("subject", "Ana, 30 % off — for three months"),
        text=over.get("text", "Hi Ana,\n\n.a line with a dot\nFrom here on, é and ü " + "x" * 120),
        html=over.get("html", '<p>Hi Ana, <a href="https://x.example/?a=1&b=2">go</a> é</p>'),
    )
    headers = {
        "List-Unsubscribe": UNSUBSCRIBE,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Tenure-Notification-Id": over.get("nid", "n-1"),
    }
    return message_bytes("Tenure <success@tenure.example>", "ana@example.com", rendered, headers)


def test_two_parts_decode_to_the_rendered_text() -> None:
    message = parse(build())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    text = parts[0].get_content().replace("\r\n", "\n")
    assert text.rstrip("\n") == (
        "Hi Ana,\n\n.a line with a dot\nFrom here on, é and ü " + "x" * 120
    )
    assert "https://x.example/?a=1&amp;b=2" not in parts[1].get_content()  # not escaped twice
    assert 'href="https://x.example/?a=1&b=2"' in parts[1].get_content()


def test_every_line_is_crlf_terminated_and_short() -> None:
    data = build()
    assert data.endswith(b"--\r\n")
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    # Body lines stay under the 78-character quoted-printable limit; headers unfolded.
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_headers_are_unfolded_and_non_ascii_subject_encoded() -> None:
    data = build()
    assert f"List-Unsubscribe: {UNSUBSCRIBE}\r\n".encode() in data
    message = parse(data)
    assert message["Subject"] == "Ana, 30 % off — for three months"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["MIME-Version"] == "1.0"


def test_a_line_break_in_a_value_cannot_add_a_header() -> None:
    message = parse(build(nid="n-1\r\nBcc: eve@example.com", subject="Hi\nBcc: eve@example.com"))
    assert message["Bcc"] is None
    assert message["X-Tenure-Notification-Id"] == "n-1 Bcc: eve@example.com"


def test_every_message_has_a_date_and_a_message_id_on_the_sending_domain() -> None:
    before = datetime.now(UTC)
    message = parse(build())
    sent_at = email.utils.parsedate_to_datetime(message["Date"])
    assert sent_at.tzinfo is not None
    assert before - timedelta(seconds=2) <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert message["Message-ID"].endswith("@tenure.example>")
    assert len(message.get_all("Message-ID") or []) == 1
    assert len(message.get_all("Date") or []) == 1


def test_a_message_id_given_in_the_headers_is_the_one_sent() -> None:
    rendered = RenderedEmail(subject="s", text="t", html="<p>h</p>")
    headers = {"Message-ID": "<n-1@mail.example.org>"}
    data = message_bytes("Tenure <success@tenure.example>", "a@example.com", rendered, headers)
    message = parse(data)
    assert message.get_all("Message-ID") == ["<n-1@mail.example.org>"]


# -- what a failure means: refused, transient, or an answer that never came --------------

TIMEOUT = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
DROPPED = aiosmtplib.SMTPServerDisconnected("Connection lost")


@pytest.mark.parametrize(
    ("error", "in_data", "kind"),
    [
        # No answer before DATA (connect, EHLO, MAIL, RCPT): nothing was sent, retried.
        (ConnectionRefusedError(111, "Connect call failed"), False, SendError),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), False, SendError),
        (TIMEOUT, False, SendError),
        (DROPPED, False, SendError),
        # No answer within DATA: the server may have accepted the message.
        (TIMEOUT, True, OutcomeUnknown),
        (DROPPED, True, OutcomeUnknown),
        (ConnectionResetError(104, "reset by peer"), True, OutcomeUnknown),
        # A reply is definite at any step.
        (aiosmtplib.SMTPRecipientRefused(451, "try later", "a@example.com"), False, SendError),
        (aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@example.com"), False, Bounced),
        (aiosmtplib.SMTPSenderRefused(421, "busy", "s@example.com"), False, SendError),
        (aiosmtplib.SMTPDataError(451, "local error"), True, SendError),
        (aiosmtplib.SMTPDataError(554, "rejected as spam"), True, Bounced),
        (aiosmtplib.SMTPDataError(503, "bad sequence"), True, SendError),
    ],
)
def test_a_failure_is_unknown_only_without_a_reply_once_data_began(
    error: BaseException, in_data: bool, kind: type[Exception]
) -> None:
    translated = _translate(error, "a@example.com", in_data=in_data)
    assert type(translated) is kind
    assert not isinstance(translated, OutcomeUnknown) or "may have accepted" in str(translated)


def test_an_error_that_is_not_the_wire_s_passes_through() -> None:
    error = ValueError("bad address")
    assert _translate(error, "a@example.com", in_data=True) is error
