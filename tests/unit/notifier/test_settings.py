import pytest
from pydantic import ValidationError

from notifier.settings import NotifierSettings

REQUIRED = {"link_secret": "s", "webhook_csm_url": "http://c", "webhook_escalation_url": "http://e"}


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
