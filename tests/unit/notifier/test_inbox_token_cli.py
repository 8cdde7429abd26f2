"""``tenure inbox token``: a token the notifier's API accepts for that customer only."""

from __future__ import annotations

import time

import pytest

from notifier.domain.signing import BadSignature, verify_inbox_token
from notifier.settings import NotifierSettings
from tenure_cli import command as cli

SECRET_ENV = ("TENURE_NOTIFIER_INBOX_SECRET", "TENURE_NOTIFIER_LINK_SECRET")


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRET_ENV, "TENURE_NOTIFIER_INBOX_TOKEN_TTL_S"):
        monkeypatch.delenv(name, raising=False)


def issue(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = cli.main(["inbox", "token", *args])
    captured = capsys.readouterr()
    return status, captured.out.strip(), captured.err


def test_the_token_opens_that_customers_inbox_for_the_ttl(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENURE_NOTIFIER_INBOX_SECRET", "backend-shared-secret")
    status, token, _ = issue(capsys, "--customer", "c-42", "--ttl", "600")
    assert status == 0
    now = int(time.time())
    secret = b"backend-shared-secret"
    assert verify_inbox_token(token, secret, now=now, max_ttl_s=86_400) == "c-42"
    expiry = int(token.split(".")[1])
    assert now + 598 <= expiry <= now + 601
    with pytest.raises(BadSignature, match="expired"):
        verify_inbox_token(token, secret, now=expiry + 1, max_ttl_s=86_400)
    with pytest.raises(BadSignature):
        verify_inbox_token(token, b"another-secret", now=now, max_ttl_s=86_400)


def test_without_an_inbox_secret_the_key_is_derived_as_the_notifier_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENURE_NOTIFIER_LINK_SECRET", "link-secret")
    status, token, _ = issue(capsys, "--customer", "c-7")
    assert status == 0
    notifier = NotifierSettings(
        public_url="https://notifier.example",
        link_secret="link-secret",
        webhook_secret="whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        webhook_csm_url="http://csm.example",
        webhook_escalation_url="http://esc.example",
    )
    now = int(time.time())
    assert verify_inbox_token(token, notifier.inbox_key(), now=now, max_ttl_s=86_400) == "c-7"
    assert int(token.split(".")[1]) - now in range(3598, 3602)  # the default lifetime


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--customer", "c-1", "--ttl", "0"), "--ttl must be between 1 and 86400"),
        (("--customer", "c-1", "--ttl", "90000"), "--ttl must be between 1 and 86400"),
        (("--customer", " "), "--customer must not be empty"),
    ],
)
def test_bad_arguments_are_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.setenv("TENURE_NOTIFIER_INBOX_SECRET", "s")
    status, out, err = issue(capsys, *args)
    assert status == 1 and out == ""
    assert message in err


def test_no_secret_configured_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = issue(capsys, "--customer", "c-1")
    assert status == 1 and out == ""
    assert "TENURE_NOTIFIER_INBOX_SECRET" in err and len(err.strip().splitlines()) == 1
