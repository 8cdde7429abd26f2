from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Environment variables ``TENURE_NOTIFIER_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_NOTIFIER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=1, le=65535)
    public_url: str = Field(
        default="http://127.0.0.1:8082", description="Base of tracking links in messages."
    )
    group_id: str = "tenure-notifier"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 10.0
    mail_from: str = "Tenure <success@tenure.example>"
    link_secret: SecretStr = Field(description="HMAC key of tracking links.")
    webhook_secret: SecretStr = Field(description="Standard Webhooks key, whsec_<base64>.")
    webhook_csm_url: str = Field(description="Where CSM tasks are posted.")
    webhook_escalation_url: str = Field(description="Where escalations are posted.")
    webhook_timeout_s: float = 10.0

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must look like whsec_<base64 key>")
        try:
            key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("the part after whsec_ must be base64") from exc
        if len(key) < 16:
            raise ValueError("the key must be at least 16 bytes")
        return value

    landing_url: str = Field(
        default="https://app.tenure.example/offer", description="Where a clicked offer link leads."
    )
