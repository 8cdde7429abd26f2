from __future__ import annotations

import base64
import binascii
from email.utils import parseaddr
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import HttpServiceSettings, TenureSettings


class WebhookEndpoint(BaseModel):
    """One place CSM tasks can be posted to, and the body shape it expects."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    format: Literal["standard", "slack"] = "standard"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class NotifierSettings(HttpServiceSettings):
    """Environment variables ``TENURE_NOTIFIER_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_NOTIFIER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=1, le=65535)
    public_url: str = Field(
        description="Base of tracking, unsubscribe and inbox links in messages: https://, "
        "as RFC 8058 requires of a List-Unsubscribe URL.",
    )
    allow_http_public_url: bool = Field(
        default=False,
        description="Development only: accept an http:// public_url (mailbox providers ignore "
        "one-click unsubscribe over http). `make run` sets it.",
    )
    group_id: str = "tenure-notifier"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    smtp_tls: bool = Field(default=False, description="Require STARTTLS (port 587).")
    smtp_implicit_tls: bool = Field(default=False, description="TLS from the start (port 465).")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 10.0
    smtp_pool_size: int = Field(default=16, ge=1, le=500, description="Open SMTP connections.")
    smtp_idle_s: float = Field(
        default=10.0, gt=0, description="A connection idle longer than this is not reused."
    )
    smtp_messages_per_connection: int = Field(
        default=100, ge=1, description="Messages sent over one connection before a new one."
    )
    smtp_local_hostname: str = Field(
        default="tenure.local", description="Name given in EHLO (none = a DNS lookup each time)."
    )
    mail_from: str = "Tenure <success@tenure.example>"
    message_id_domain: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
        description="Domain of every email's Message-ID (<notification id>@domain); None = "
        "the domain of mail_from, the sending domain.",
    )
    reply_domain: str | None = Field(
        default=None,
        description="Domain of signed Reply-To addresses (reply+<id>.<mac>@domain); its "
        "inbound mail webhook posts to /v1/inbound/reply, which reports `replied`. None = "
        "no Reply-To.",
    )
    inbound_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Credential of the inbound mail service on /v1/inbound/reply: the password "
        "of HTTP Basic credentials (https://tenure:SECRET@host/v1/inbound/reply) or a bearer "
        "token. Required with reply_domain; empty = the route answers 404.",
    )
    inbound_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest body /v1/inbound/reply reads (413 beyond): have the inbound "
        "service post without attachments.",
    )
    link_secret: SecretStr = Field(
        description="Key of link tokens (tracking, unsubscribe) and reply addresses: the newest "
        "key, which signs."
    )
    link_previous_secrets: tuple[SecretStr, ...] = Field(
        default=(),
        description="Older link keys still accepted, oldest first (key rotation); drop one once "
        "the links it signed have expired.",
    )
    link_max_age_s: int = Field(
        default=90 * 86_400, ge=60, description="Real seconds a click or open link works."
    )
    unsubscribe_max_age_s: int = Field(
        default=365 * 86_400,
        ge=30 * 86_400,
        description="Real seconds an unsubscribe link works (at least 30 days after sending).",
    )
    webhook_secret: SecretStr = Field(description="Standard Webhooks key, whsec_<base64>.")
    webhook_csm_url: str = Field(description="Where CSM tasks go when no finer route matches.")
    webhook_escalation_url: str = Field(description="Where escalations are posted.")
    webhook_endpoints: dict[str, WebhookEndpoint] = Field(
        default_factory=dict,
        description="Finer routes, JSON: {'csm:<owner csm email>': {url, format}, "
        "'team:<team>': ..., 'csm': ..., 'escalation': ...}. Overrides the two URLs above.",
    )
    webhook_slack_targets: tuple[str, ...] = Field(
        default=(), description="Route names (csm, escalation, team:x) that get a Slack body."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_connections: int = Field(
        default=16, ge=1, le=1000, description="Open HTTP connections to webhook receivers."
    )
    webhook_allow_hosts: tuple[str, ...] = Field(
        default=(),
        description="Hosts (host or host:port) or networks (CIDR) webhooks may reach even when "
        "they resolve to private, loopback or link-local addresses (SSRF allow list).",
    )

    # Retries (both channels), on the shared clock.
    retry_base_s: float = Field(default=30.0, gt=0, description="First retry delay (simulated).")
    retry_cap_s: float = Field(default=3600.0, gt=0, description="Longest delay between tries.")
    retry_jitter: float = Field(
        default=0.5, ge=0, le=1, description="Share of each delay drawn at random (0 = none)."
    )
    retry_max_age_s: float = Field(
        default=86_400.0, gt=0, description="Give up (dead letter) this long after the first try."
    )
    retry_poll_s: float = Field(default=0.5, gt=0, description="Real seconds between polls.")
    retry_batch: int = Field(default=50, ge=1)
    sending_lease_s: float = Field(
        default=300.0,
        gt=0,
        description="Real seconds after which a claim left 'sending' by a crashed worker can "
        "be taken again.",
    )
    email_resend_after_crash: Literal["never", "transactional", "always"] = Field(
        default="transactional",
        description="An email whose hand-over to the mail server was under way when its "
        "worker died (found after sending_lease_s), or that the server never answered once "
        "it was sent (a time-out or lost connection during DATA), may have been sent: "
        "'never' records every such email `unknown`; 'transactional' sends transactional "
        "ones (context marketing: false) again and records marketing ones `unknown`; "
        "'always' sends every one again "
        "(a recipient may get it twice). Webhooks and in-app messages are always sent again "
        "(receivers de-duplicate on webhook-id; the inbox on the notification id).",
    )
    producer_linger_ms: int = Field(
        default=25,
        ge=0,
        le=1000,
        description="How long the notifier's producer waits to fill a batch of outcomes "
        "(overrides TENURE_PRODUCER_LINGER_MS): fewer, larger produce requests; each costs "
        "the broker more than the records in it.",
    )
    delivery_concurrency: int = Field(
        default=256,
        ge=1,
        le=5000,
        description="Notifications in flight at once in one worker (they wait for an SMTP or "
        "HTTP connection, the delivery log's group commit and Kafka; the connections are "
        "bounded separately).",
    )

    # In-app inbox.
    inbox_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC key shared with the product backend for inbox tokens; empty = "
        "derived from link_secret.",
    )
    inbox_page_size: int = Field(default=50, ge=1, le=500)
    inbox_channel: str = Field(
        default="tenure_inbox",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL NOTIFY channel announcing new inbox messages to the streams.",
    )
    inbox_listen_retry_s: float = Field(
        default=1.0, gt=0, description="Real seconds before a lost LISTEN connection is retried."
    )
    inbox_heartbeat_s: float = Field(default=15.0, gt=0, description="SSE keep-alive period.")
    inbox_token_max_ttl_s: int = Field(
        default=86_400, ge=1, description="Tokens valid for longer than this are refused."
    )

    landing_url: str = Field(
        default="https://app.tenure.example/offer", description="Where a clicked offer link leads."
    )
    app_url: str = Field(
        default="https://app.tenure.example", description="The product, linked from messages."
    )

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

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("webhook_csm_url", "webhook_escalation_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> NotifierSettings:
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("retry_cap_s must be at least retry_base_s")
        if self.smtp_tls and self.smtp_implicit_tls:
            raise ValueError("smtp_tls (STARTTLS) and smtp_implicit_tls exclude each other")
        if not self.public_url.startswith("https://") and not self.allow_http_public_url:
            raise ValueError(
                f"public_url {self.public_url!r} must be https:// (RFC 8058: the one-click "
                "List-Unsubscribe URL must be HTTPS); for development only, "
                "TENURE_NOTIFIER_ALLOW_HTTP_PUBLIC_URL=true accepts http://"
            )
        if self.reply_domain and len(self.inbound_secret.get_secret_value()) < 16:
            raise ValueError(
                "reply_domain needs inbound_secret (at least 16 characters): the credential "
                "of the inbound mail service that reports replies"
            )
        if not self.message_domain():
            raise ValueError("mail_from has no domain: set it, or message_id_domain")
        return self

    def message_domain(self) -> str:
        """The domain of Message-IDs: ``message_id_domain``, else that of ``mail_from``."""
        return self.message_id_domain or parseaddr(self.mail_from)[1].rpartition("@")[2].lower()

    def routes(self) -> dict[str, WebhookEndpoint]:
        """Every webhook route by name: the two URLs, then the finer ``webhook_endpoints``."""
        slack = set(self.webhook_slack_targets)

        def fmt(name: str) -> Literal["standard", "slack"]:
            return "slack" if name in slack else "standard"

        routes = {
            "csm": WebhookEndpoint(url=self.webhook_csm_url, format=fmt("csm")),
            "escalation": WebhookEndpoint(
                url=self.webhook_escalation_url, format=fmt("escalation")
            ),
        }
        for name, endpoint in self.webhook_endpoints.items():
            routes[name] = (
                endpoint.model_copy(update={"format": "slack"}) if name in slack else endpoint
            )
        return routes

    def inbox_key(self) -> bytes:
        return derive_inbox_key(self.inbox_secret, self.link_secret)

    def link_keys(self) -> tuple[bytes, ...]:
        """Every accepted link key, oldest first; the last one signs."""
        return tuple(
            k.get_secret_value().encode() for k in (*self.link_previous_secrets, self.link_secret)
        )


def derive_inbox_key(inbox_secret: SecretStr, link_secret: SecretStr) -> bytes:
    """The inbox tokens' HMAC key: ``inbox_secret``, else derived from ``link_secret``."""
    raw = inbox_secret.get_secret_value()
    if raw:
        return raw.encode()
    return b"inbox:" + link_secret.get_secret_value().encode()


class InboxTokenSettings(TenureSettings):
    """What ``tenure inbox token`` needs of ``TENURE_NOTIFIER_*`` (not the whole notifier's
    settings: an operator issuing a token has no SMTP or webhook configuration)."""

    model_config = SettingsConfigDict(env_prefix="TENURE_NOTIFIER_", extra="ignore", frozen=True)

    inbox_secret: SecretStr = SecretStr("")
    link_secret: SecretStr = SecretStr("")
    inbox_token_max_ttl_s: int = Field(default=86_400, ge=1)
    inbox_token_ttl_s: int = Field(
        default=3600, ge=1, description="Default lifetime of a token from `tenure inbox token`."
    )

    def inbox_key(self) -> bytes:
        if not self.inbox_secret.get_secret_value() and not self.link_secret.get_secret_value():
            raise ValueError(
                "no inbox key: set TENURE_NOTIFIER_INBOX_SECRET (or TENURE_NOTIFIER_LINK_SECRET, "
                "from which the notifier derives it) as the notifier has it"
            )
        return derive_inbox_key(self.inbox_secret, self.link_secret)
