"""A simulator of customers: realistic events through the ingest API, on the shared clock.

A mix of healthy, slipping and churning customers, so that playbooks trigger within
minutes at one simulated day a minute. It reads the mail sink and clicks a share of the
retention offers it finds, as real customers would (docs/domain.md section 8: 40-50 % retained).
Bounded: ``duration_s`` (0 = until stopped) and a fixed number of customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import logging
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.clock import Clock, clock_from_settings
from common.logging import configure_logging
from common.runtime import run_until_signal, sleep_or_stop
from common.settings import ServiceSettings
from devstack.history import Account, HistoryRates, generate

log = logging.getLogger("simulator")


class SimulatorSettings(ServiceSettings):
    """Environment variables ``TENURE_SIMULATOR_*``."""

    model_config = SettingsConfigDict(env_prefix="TENURE_SIMULATOR_", extra="ignore", frozen=True)

    ingest_url: str = "http://127.0.0.1:8080"
    api_key: str = "tenure-dev-key"
    customers: int = Field(default=40, ge=1, le=10_000)
    healthy_share: float = Field(default=0.6, ge=0, le=1)
    churning_share: float = Field(default=0.15, ge=0, le=1)
    tick_s: float = Field(default=1.0, gt=0, description="Real seconds between rounds.")
    click_share: float = Field(default=0.45, ge=0, le=1)
    mail_dir: Path | None = None
    duration_s: float = Field(default=0, ge=0)
    seed: int = 7
    # Plans from the lowest to the highest, with their MRR (EUR).
    plan_mrr: dict[str, float] = {"basic": 29.0, "pro": 99.0, "enterprise": 299.0}
    # The past months posted at start-up (devstack.history; 0: none), monthly rates.
    history_months: int = Field(default=4, ge=0, le=24)
    history_existing_share: float = Field(default=0.5, ge=0, le=1)
    history_upgrade_rate: float = Field(default=0.06, ge=0, le=1)
    history_downgrade_rate: float = Field(default=0.03, ge=0, le=1)
    # By profile: a few % a month for most, as docs/domain.md section 6's examples.
    history_cancel_rate: dict[str, float] = {"healthy": 0.01, "slipping": 0.05, "churning": 0.2}
    # Cancelled customers coming back (win-back: 10-20 % in 60 days, docs/domain.md).
    history_reactivate_rate: float = Field(default=0.08, ge=0, le=1)

    def history_rates(self) -> HistoryRates:
        return HistoryRates(
            months=self.history_months,
            existing_share=self.history_existing_share,
            upgrade=self.history_upgrade_rate,
            downgrade=self.history_downgrade_rate,
            cancel=self.history_cancel_rate,
            reactivate=self.history_reactivate_rate,
            plan_mrr=self.plan_mrr,
            currency="EUR",
        )


PROFILES: dict[str, dict[str, float]] = {
    # events per simulated day
    "healthy": {"login": 4, "feature_used": 6, "ticket_opened": 0.05, "nps_high": 0.03},
    "slipping": {
        "login": 1,
        "feature_used": 1.5,
        "ticket_opened": 0.25,
        "nps_mid": 0.05,
        "comment_negative": 0.1,
        "overdue": 0.03,
    },
    "churning": {
        "login": 0.3,
        "feature_used": 0.3,
        "ticket_opened": 1.0,
        "nps_low": 0.5,
        "competitor_visit": 2.0,
        "alternative_search": 1.0,
        "competitor_trial": 0.7,
        "contract_review": 0.3,
        "cancel": 0.03,  # a cancellation starts win_back
    },
}
# Lifecycle events (rates per simulated day) that exercise the event-triggered playbooks.
LIFECYCLE: dict[str, dict[str, float]] = {
    "healthy": {"purchase_course": 0.01},
    "slipping": {"downgrade_request": 0.02},
    "churning": {},
}
REACTIVATE_PER_DAY = 0.003  # cancelled customers coming back (win-back: 10-20 % in 60 days)
FEATURES = ("reports", "dashboards", "exports", "api", "automations", "sso", "alerts")
FIRST_NAMES = ("Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Greta", "Hugo", "Iris", "Jon")


@dataclass
class Customer:
    customer_id: str
    profile: str
    plan: str
    first_name: str
    invoice: int = 0
    cancelled: bool = False


@dataclass
class Simulator:
    settings: SimulatorSettings
    clock: Clock
    client: httpx.AsyncClient
    rng: random.Random = field(default_factory=random.Random)
    customers: list[Customer] = field(default_factory=list)
    clicked: set[str] = field(default_factory=set)
    sent: int = 0

    def populate(self) -> None:
        s = self.settings
        for i in range(s.customers):
            share = i / s.customers
            kind = (
                "churning"
                if share < s.churning_share
                else "healthy"
                if share < s.churning_share + s.healthy_share
                else "slipping"
            )
            self.customers.append(
                Customer(
                    customer_id=f"sim-{kind}-{i:04d}",
                    profile=kind,
                    plan=self.rng.choice(list(s.plan_mrr)),
                    first_name=self.rng.choice(FIRST_NAMES),
                )
            )

    def base(self, c: Customer, kind: str, type_: str, now: datetime) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "customer_id": c.customer_id,
            "occurred_at": now.isoformat(),
            "kind": kind,
            "type": type_,
        }

    def identify(self, c: Customer, now: datetime) -> dict[str, Any]:
        return {
            **self.base(c, "profile", "identify", now),
            "email": f"{c.customer_id}@customers.example",
            "first_name": c.first_name,
            "time_zone": "Europe/Madrid",
            "plan": c.plan,
            "mrr": self.settings.plan_mrr[c.plan],
            "currency": "EUR",
            "consent": {"email_marketing": True, "in_app": True},
            "owner_csm": {"id": "csm-1", "email": "csm1@tenure.example"},
        }

    def events_for(self, c: Customer, now: datetime, days: float) -> list[dict[str, Any]]:
        if c.cancelled:
            if self.rng.random() < REACTIVATE_PER_DAY * days:
                c.cancelled = False
                return [
                    {**self.base(c, "payment", "subscription_reactivated", now), "plan": c.plan}
                ]
            return []
        out = []
        for what, rate in {**PROFILES[c.profile], **LIFECYCLE[c.profile]}.items():
            n = sum(1 for _ in range(8) if self.rng.random() < rate * days / 8)
            for _ in range(n):
                out.append(self.event(c, what, now))
        return out

    def event(self, c: Customer, what: str, now: datetime) -> dict[str, Any]:
        r = self.rng
        if what == "login":
            return {
                **self.base(c, "login", "login", now),
                "user_id": f"{c.customer_id}-u{r.randint(1, 5)}",
            }
        if what == "feature_used":
            return {**self.base(c, "usage", "feature_used", now), "feature": r.choice(FEATURES)}
        if what == "ticket_opened":
            return {
                **self.base(c, "support", "ticket_opened", now),
                "ticket_id": uuid.uuid4().hex[:8],
                "sentiment": round(
                    r.uniform(0.05, 0.35) if c.profile != "healthy" else r.uniform(0.4, 0.9), 2
                ),
            }
        if what.startswith("nps_"):
            score = {
                "nps_high": r.randint(9, 10),
                "nps_mid": r.randint(5, 7),
                "nps_low": r.randint(1, 4),
            }[what]
            return {**self.base(c, "support", "nps_response", now), "score": score}
        if what == "comment_negative":
            return {
                **self.base(c, "support", "comment", now),
                "sentiment": round(r.uniform(0.05, 0.28), 2),
                "text": "The new version keeps timing out",
            }
        if what == "cancel":
            c.cancelled = True
            return {**self.base(c, "payment", "subscription_cancelled", now), "plan": c.plan}
        if what == "downgrade_request":
            return {**self.base(c, "payment", "downgrade_requested", now), "plan": c.plan}
        if what == "purchase_course":
            return {
                **self.base(c, "payment", "purchase", now),
                "product": "course",
                "amount": 49.0,
                "currency": "EUR",
            }
        if what == "overdue":
            c.invoice += 1
            return {
                **self.base(c, "payment", "invoice_overdue", now),
                "invoice_id": f"{c.customer_id}-inv{c.invoice}",
                "amount": 99.0,
                "currency": "EUR",
                "days_late": r.randint(3, 12),
            }
        return {
            **self.base(c, "intent", what, now),
            "source": r.choice(["g2", "capterra", "google"]),
        }

    async def post(self, event: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                response = await self.client.post("/v1/events", json=event)
            except httpx.HTTPError as exc:
                log.warning("ingest unreachable", extra={"error": str(exc)})
            else:
                if response.status_code == 202:
                    self.sent += 1
                    return
                if response.status_code != 503:
                    log.warning(
                        "event rejected",
                        extra={"status": response.status_code, "body": response.text[:300]},
                    )
                    return
            await asyncio.sleep(0.5 * 2**attempt)

    async def click_offers(self) -> None:
        """Follow the offer link in a share of the retention emails (once per email)."""
        folder = self.settings.mail_dir
        if folder is None or not folder.exists():
            return
        for path in sorted(folder.glob("*.eml")):
            if path.name in self.clicked:
                continue
            self.clicked.add(path.name)
            if self.rng.random() >= self.settings.click_share:
                continue
            message = email.message_from_bytes(path.read_bytes())
            text = "".join(
                part.get_payload(decode=True).decode(errors="replace")
                for part in message.walk()
                if part.get_content_type() == "text/plain"
            )
            match = re.search(r"https?://\S+/t/click/\S+", text)
            if match:
                with contextlib.suppress(httpx.HTTPError):
                    await self.client.get(match.group(0), follow_redirects=False)

    def past(self, now: datetime) -> list[dict[str, Any]]:
        """The history before ``now`` (devstack.history); the customers take the plan and
        state it left them in."""
        accounts = [Account(c.customer_id, c.profile, c.plan) for c in self.customers]
        history = generate(accounts, now=now, rates=self.settings.history_rates(), rng=self.rng)
        for c in self.customers:
            c.plan = history.plans[c.customer_id]
            c.cancelled = c.customer_id in history.cancelled
        return history.events

    async def run(self, stop: asyncio.Event) -> None:
        self.populate()
        now = self.clock.now()
        past = self.past(now)
        for c in self.customers:
            await self.post(self.identify(c, now))
        if past:
            # Fast-forwarded, in time order (one customer's events stay in order).
            for event in past:
                await self.post(event)
            log.info("history posted", extra={"events": len(past)})
        else:
            for c in self.customers:
                # a new subscription: the onboarding playbook starts for everyone
                await self.post(
                    {
                        **self.base(c, "payment", "subscription_started", now),
                        "plan": c.plan,
                        "mrr_after": self.settings.plan_mrr[c.plan],
                        "currency": "EUR",
                    }
                )
        last = now
        started = asyncio.get_running_loop().time()
        while not stop.is_set():
            now = self.clock.now()
            days = (now - last) / timedelta(days=1)
            last = now
            batch = [e for c in self.customers for e in self.events_for(c, now, days)]
            await asyncio.gather(*(self.post(e) for e in batch))
            await self.click_offers()
            duration = self.settings.duration_s
            if duration and asyncio.get_running_loop().time() - started > duration:
                break
            await sleep_or_stop(stop, self.settings.tick_s)
        log.info("simulator stopped", extra={"events_sent": self.sent})


async def _main(settings: SimulatorSettings, stop: asyncio.Event) -> None:
    clock = clock_from_settings(settings.common.time_scale, settings.common.clock_epoch)
    async with httpx.AsyncClient(
        base_url=settings.ingest_url, timeout=10, headers={"X-API-Key": settings.api_key}
    ) as client:
        await Simulator(settings, clock, client, random.Random(settings.seed)).run(stop)


def main() -> None:
    settings = SimulatorSettings()
    configure_logging("simulator", settings.common.log_level, settings.common.log_format)
    run_until_signal(lambda stop: _main(settings, stop))


if __name__ == "__main__":
    main()
