import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from devstack.__main__ import banner
from devstack.stack import Stack
from notifier.settings import NotifierSettings

REQUIRED = {
    "public_url": "https://notifier.example",
    "link_secret": "s",
    "webhook_csm_url": "http://c",
    "webhook_escalation_url": "http://e",
}


@pytest.mark.parametrize(
    ("secret", "reason"),
    [("plain", "whsec_"), ("whsec_not base64!", "base64"), ("whsec_c2hvcnQ=", "16 bytes")],
)
def test_webhook_secret_is_checked_at_start_up(secret: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        NotifierSettings(webhook_secret=secret, **REQUIRED)
    assert "webhook_secret" in str(caught.value)


def test_valid_webhook_secret() -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    assert (
        NotifierSettings(webhook_secret=secret, **REQUIRED).webhook_secret.get_secret_value()
        == secret
    )


def test_tls_modes_exclude_each_other() -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    with pytest.raises(ValidationError, match="exclude each other"):
        NotifierSettings(webhook_secret=secret, smtp_tls=True, smtp_implicit_tls=True, **REQUIRED)


def test_webhook_routes_refine_the_two_urls() -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    settings = NotifierSettings(
        webhook_secret=secret,
        webhook_endpoints={"team:emea": {"url": "https://hooks.example/emea"}},
        webhook_slack_targets=("escalation",),
        **REQUIRED,
    )
    routes = settings.routes()
    assert routes["csm"].url == "http://c" and routes["csm"].format == "standard"
    assert routes["escalation"].format == "slack"
    assert routes["team:emea"].url == "https://hooks.example/emea"
    with pytest.raises(ValidationError, match="http"):
        NotifierSettings(
            webhook_secret=secret, webhook_endpoints={"x": {"url": "ftp://x"}}, **REQUIRED
        )


SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_the_public_url_must_be_https_unless_development_allows_http() -> None:
    over = {**REQUIRED, "webhook_secret": SECRET}
    with pytest.raises(ValidationError, match="RFC 8058") as caught:
        NotifierSettings(**{**over, "public_url": "http://notifier.example"})
    assert "TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL" in str(caught.value)
    with pytest.raises(ValidationError, match="public_url"):
        NotifierSettings(**{k: v for k, v in over.items() if k != "public_url"})
    allowed = NotifierSettings(
        **{**over, "public_url": "http://127.0.0.1:8082/", "allow_http_public_url": True}
    )
    assert allowed.public_url == "http://127.0.0.1:8082"
    assert NotifierSettings(**over).public_url == "https://notifier.example"


def test_the_notifier_process_refuses_to_start_with_an_http_public_url() -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TENURE_NOTIFIER_PUBLIC_URL": "http://notifier.example",
        "TENURE_NOTIFIER_LINK_SECRET": "s",
        "TENURE_NOTIFIER_WEBHOOK_SECRET": SECRET,
        "TENURE_NOTIFIER_WEBHOOK_CSM_URL": "http://c",
        "TENURE_NOTIFIER_WEBHOOK_ESCALATION_URL": "http://e",
        # Nothing listens here: the process must stop before it connects to anything.
        "TENURE_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "TENURE_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:9/x",
    }
    done = subprocess.run(
        [sys.executable, "-m", "notifier"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert b"RFC 8058" in done.stderr and b"ALLOW_HTTP_PUBLIC_URL" in done.stderr


def test_make_run_allows_http_visibly(tmp_path: Path) -> None:
    stack = Stack(root=tmp_path, database_url="postgresql+asyncpg://x@127.0.0.1:9/x")
    env = stack.env()
    assert env["TENURE_NOTIFIER_PUBLIC_URL"].startswith("http://")
    assert env["TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL"] == "true"
    shown = banner(stack, with_prometheus=False)
    assert "TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL=true" in shown and "development only" in shown


def test_replies_need_an_inbound_credential() -> None:
    over = {**REQUIRED, "webhook_secret": SECRET, "reply_domain": "reply.example"}
    with pytest.raises(ValidationError, match="inbound_secret"):
        NotifierSettings(**over)
    with pytest.raises(ValidationError, match="inbound_secret"):
        NotifierSettings(**over, inbound_secret="short")
    assert NotifierSettings(**over, inbound_secret="s" * 16).reply_domain == "reply.example"
