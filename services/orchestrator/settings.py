from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import HttpServiceSettings
from orchestrator.domain.playbook import SHIPPED
from orchestrator.domain.portfolio import FigureRules
from orchestrator.domain.rules import Rules


class OrchestratorSettings(HttpServiceSettings):
    """Environment variables ``TENURE_ORCHESTRATOR_*``."""

    model_config = SettingsConfigDict(
        env_prefix="TENURE_ORCHESTRATOR_", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    group_id: str = "tenure-orchestrator"
    watched_groups: list[str] = Field(
        default=[
            "tenure-scoring",
            "tenure-orchestrator",
            "tenure-orchestrator-outcomes",
            "tenure-orchestrator-analytics",
            "tenure-notifier",
        ],
        description="Consumer groups whose lag the orchestrator measures from outside "
        "(tenure_orchestrator_group_lag, every TENURE_METRICS_EVERY_S): every Tenure group by "
        "default (scoring's app id, the orchestrator's three, the notifier's), so that a group "
        "whose members are all gone still shows its lag. Empty: none.",
    )
    playbooks_dir: Path = SHIPPED
    timer_poll_s: float = Field(default=0.25, gt=0, description="Real seconds between polls.")
    timer_batch: int = Field(
        default=400,
        ge=1,
        description="Due timers claimed at once; fired in timer_concurrency groups, each "
        "costing a few statements whatever its size.",
    )
    timer_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="Real seconds a replica holds the timers it claimed before others may.",
    )
    timer_max_attempts: int = Field(
        default=5, ge=1, description="Claims of a timer that fails before it is marked failed."
    )
    timer_concurrency: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Transactions a replica fires a batch in at once (split by customer). "
        "One: a group costs a few statements whatever its size, and on 2 shared cores "
        "four at once fired no more timers per second but cost more CPU per timer (see "
        "docs/BENCHMARKS.md); more can help where PostgreSQL has cores of its own.",
    )
    keys_refresh_s: float = Field(
        default=30.0, gt=0, lt=60, description="A revoked operator key stops working within this."
    )
    keys_miss_reload_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A key the operator API does not know makes it reload the keys, at most "
        "once this often whatever the number of unknown keys presented: a key just created "
        "works on its first request.",
    )
    operator_list_limit: int = Field(
        default=100, ge=1, le=10_000, description="Journeys and messages shown per customer."
    )
    operator_loss_reasons: tuple[str, ...] = Field(
        default=("cancelled", "downgraded"),
        description="Exit reasons that are not a conversion of the playbook's goal.",
    )
    operator_page_size: int = Field(
        default=50, ge=1, le=1000, description="Customers per page of GET /v1/customers."
    )
    operator_page_max: int = Field(
        default=500, ge=1, le=10_000, description="The largest limit GET /v1/customers takes."
    )
    operator_top_factors: int = Field(
        default=3, ge=1, le=50, description="Score factors shown per customer of the list."
    )
    portfolio_confidence: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="Confidence of the playbooks' uplift intervals: the API's, the report's "
        "and the business dashboard's (written into portfolio_settings at start-up).",
    )
    portfolio_max_months: int = Field(
        default=36, ge=1, le=600, description="Months GET /v1/metrics/portfolio answers at once."
    )
    report_history_months: int = Field(
        default=12,
        ge=1,
        le=120,
        description="Months tenure report's NRR and GRR by month show, the reported one included.",
    )
    default_currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="Currency of attributed revenue when a payment event names none, and "
        "of a customer's MRR (at risk, CLV) when neither its subscription nor its profile "
        "names one: in the API, the report and the business dashboard (written into "
        "portfolio_settings at start-up).",
    )
    relay_poll_s: float = Field(default=0.1, gt=0)
    relay_batch: int = Field(default=500, ge=1)
    # Rules across playbooks (docs/domain.md section 7).
    cap_messages: int = Field(
        default=3, ge=1, description="Marketing messages allowed per customer per cap_window."
    )
    cap_window: timedelta = Field(default=timedelta(days=7), gt=timedelta(0))
    profile_wait: timedelta = Field(
        default=timedelta(minutes=10),
        ge=timedelta(0),
        description="Simulated time an email step waits, from its journey's start, for the "
        "customer's first profile when the score that started the journey overtook it "
        "(Kafka orders each topic, not the topics together: a failover or a backlog can "
        "deliver the score first); then the step is skipped for want of an address.",
    )
    profile_polls: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="How many times within profile_wait such an email step looks again for "
        "the profile: it is deferred by profile_wait / profile_polls each time (one minute "
        "with the defaults), never beyond the end of the wait. Each look is a timer fired.",
    )
    event_trigger_max_age: timedelta = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description="Simulated time after which an event (its occurred_at) no longer starts "
        "the journey it triggers (subscription_started, subscription_cancelled, "
        "downgrade_requested): a backfill of history or a replay of old records must not "
        "welcome long-standing customers or win back those gone for months. The event still "
        "counts for everything else (subscription state, exits, the MRR record).",
    )
    quiet_start: time = Field(default=time(21, 0), description="Local time quiet hours begin.")
    quiet_end: time = Field(default=time(8, 0), description="Local time quiet hours end.")
    default_time_zone: str = Field(
        default="UTC", description="For customers whose profile names no (or no known) zone."
    )
    trigger_poll_s: float = Field(
        default=0.25, gt=0, description="Real seconds between polls for held-signal triggers."
    )

    def figure_rules(self) -> FigureRules:
        """The numbers the portfolio's figures read (the API's and ``tenure report``'s)."""
        return FigureRules(
            loss_reasons=self.operator_loss_reasons,
            confidence=self.portfolio_confidence,
            default_currency=self.default_currency,
        )

    def rules(self) -> Rules:
        """The numbers of the cross-playbook rules, for the pure domain functions."""
        return Rules(
            cap_messages=self.cap_messages,
            cap_window=self.cap_window,
            quiet_start=self.quiet_start,
            quiet_end=self.quiet_end,
            default_time_zone=self.default_time_zone,
            profile_wait=self.profile_wait,
            profile_polls=self.profile_polls,
            event_trigger_max_age=self.event_trigger_max_age,
        )
