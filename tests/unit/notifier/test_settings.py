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
