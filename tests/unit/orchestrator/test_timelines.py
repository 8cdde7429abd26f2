"""Every shipped playbook lived through its whole timeline on a fake clock: the production
use cases on the in-memory journey store (``sim.Sim``).

Each test asserts the exact day of every step and every exit. The customer lives in
Madrid and the trigger comes at 10:00 UTC (noon local), so quiet hours never move a
step unless a test says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.playbook import SHIPPED, Playbook, load_playbooks
from orchestrator.settings import OrchestratorSettings
from tests.unit.orchestrator.sim import Sim

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # a Monday, 12:00 in Madrid
RULES = OrchestratorSettings().rules()
BOOKS = load_playbooks(SHIPPED)
CUSTOMER_ID = "acme-3"  # in the treatment arm of every shipped playbook (asserted below)
CUSTOMER = R.Customer(
    CUSTOMER_ID,
    email="ana@acme.example",
    time_zone="Europe/Madrid",
    plan="basic",
    consent_email=True,
)

FactAt = Callable[[datetime], D.Fact]


def at(day: float) -> datetime:
    return T0 + timedelta(days=day)


def on(name: str) -> FactAt:
    return lambda t: D.SignalFact(name, True, t)


def off(name: str) -> FactAt:
    return lambda t: D.SignalFact(name, False, t)


def event(type_: str, **kw: Any) -> FactAt:
    return lambda t: D.EventFact(type_, t, **kw)


def score(**values: float) -> FactAt:
    return lambda t: D.ScoreFact(values, t)


def delivery(status: str, journey_id: str | None = None) -> FactAt:
    return lambda t: D.DeliveryFact(status, t, journey_id)


async def live(
    names: Iterable[str],
    facts: list[tuple[float, FactAt]],
    *,
    until: float,
    customer: R.Customer = CUSTOMER,
) -> list[tuple[str, str, str | None, float]]:
    """Live with only ``names`` shipped; (playbook, what, step or reason, day)."""
    sim = Sim({n: BOOKS[n] for n in names}, customer, RULES, T0)
    for day, fact in facts:
        await sim.receive(fact(at(day)))
    await sim.advance_to(at(until))
    return [
        (e.playbook, e.kind, e.step or e.reason, round((e.at - T0) / timedelta(days=1), 4))
        for e in sim.log
    ]


def test_the_test_customer_is_in_every_treatment_arm() -> None:
    for book in BOOKS.values():
        assert D.assign_arm(book, CUSTOMER_ID) == D.TREATMENT, book.name


# --- re_engagement -------------------------------------------------------------------------


async def test_re_engagement_full_timeline() -> None:
    log = await live(["re_engagement"], [(0, on("engagement_low"))], until=45)
    assert log == [
        ("re_engagement", "start", "held", 14),
        ("re_engagement", "sent", "summary", 14),
        ("re_engagement", "sent", "premium_trial", 16),
        ("re_engagement", "sent", "csm_help", 18),
        ("re_engagement", "finish", None, 18),
    ]


async def test_a_signal_still_held_re_enters_after_the_cooldown() -> None:
    # Ended on day 18; the signal never turned off: day 28 falls in the cooldown, so the
    # trigger comes back when the cooldown ends (day 48) and starts a second journey.
    log = await live(["re_engagement"], [(0, on("engagement_low"))], until=60)
    assert [(k, d) for _, k, _, d in log if k in ("start", "finish")] == [
        ("start", 14),
        ("finish", 18),
        ("start", 48),
        ("finish", 52),
    ]
    # once the signal turns off, it does not come back
    facts = [(0, on("engagement_low")), (30, off("engagement_low"))]
    log = await live(["re_engagement"], facts, until=90)
    assert [(k, d) for _, k, _, d in log if k == "start"] == [("start", 14)]


async def test_re_engagement_not_held_14_days_never_starts_then_rearms() -> None:
    facts = [(0, on("engagement_low")), (10, off("engagement_low")), (11, on("engagement_low"))]
    log = await live(["re_engagement"], facts, until=26)
    assert log[:2] == [
        ("re_engagement", "start", "held", 25),
        ("re_engagement", "sent", "summary", 25),
    ]


@pytest.mark.parametrize(
    "recovery",
    [event("login", plan=None), delivery("opened"), off("engagement_low")],
    ids=["login", "open", "signal_off"],
)
async def test_re_engagement_exits_when_engagement_recovers(recovery: FactAt) -> None:
    log = await live(["re_engagement"], [(0, on("engagement_low")), (15.5, recovery)], until=45)
    assert log == [
        ("re_engagement", "start", "held", 14),
        ("re_engagement", "sent", "summary", 14),
        ("re_engagement", "exit", "re_engaged", 15.5),
    ]


# --- success_coaching ------------------------------------------------------------------------


async def test_success_coaching_full_timeline() -> None:
    log = await live(["success_coaching"], [(0, on("usage_reduced"))], until=60)
    assert log == [
        ("success_coaching", "start", "held", 30),
        ("success_coaching", "sent", "coaching_guide", 31),
        ("success_coaching", "sent", "training_invite", 33),
        ("success_coaching", "sent", "follow_up", 38),
        ("success_coaching", "finish", None, 38),
    ]


async def test_success_coaching_exits_at_60_percent_adoption() -> None:
    facts = [
        (0, on("usage_reduced")),
        (34, score(feature_adoption=0.59)),
        (35, score(feature_adoption=0.60)),
    ]
    log = await live(["success_coaching"], facts, until=60)
    assert log == [
        ("success_coaching", "start", "held", 30),
        ("success_coaching", "sent", "coaching_guide", 31),
        ("success_coaching", "sent", "training_invite", 33),
        ("success_coaching", "exit", "adoption_recovered", 35),
    ]


# --- retention_offer -------------------------------------------------------------------------


async def test_retention_offer_full_timeline() -> None:
    log = await live(["retention_offer"], [(0, score(churn_probability=0.71))], until=30)
    assert log == [
        ("retention_offer", "start", "start", 0),
        ("retention_offer", "sent", "offer", 0),
        ("retention_offer", "sent", "retention_call", 1),
        ("retention_offer", "sent", "escalation", 3),
        ("retention_offer", "finish", None, 3),
    ]


async def test_retention_offer_exits_on_click_and_on_recovered_risk() -> None:
    clicked = await live(
        ["retention_offer"],
        [(0, score(churn_probability=0.9)), (2, delivery("clicked", "retention_offer-1"))],
        until=30,
    )
    assert clicked[-1] == ("retention_offer", "exit", "responded", 2)
    assert [s for _, kind, s, _ in clicked if kind == "sent"] == ["offer", "retention_call"]
    recovered = await live(
        ["retention_offer"],
        [(0, score(churn_probability=0.9)), (0.5, score(churn_probability=0.39))],
        until=30,
    )
    assert recovered[-1] == ("retention_offer", "exit", "risk_recovered", 0.5)
    assert [s for _, kind, s, _ in recovered if kind == "sent"] == ["offer"]


async def test_retention_offer_at_exactly_070_does_not_start() -> None:
    assert await live(["retention_offer"], [(0, score(churn_probability=0.70))], until=30) == []


# --- win_back ------------------------------------------------------------------------------


async def test_win_back_full_timeline() -> None:
    log = await live(["win_back"], [(0, event("subscription_cancelled"))], until=90)
    assert log == [
        ("win_back", "start", "start", 0),
        ("win_back", "sent", "we_miss_you", 30),
        ("win_back", "sent", "offer", 37),
        ("win_back", "sent", "personal_call", 45),
        ("win_back", "sent", "last_chance", 60),
        ("win_back", "finish", None, 60),
    ]


async def test_win_back_exits_when_reactivated() -> None:
    facts = [(0, event("subscription_cancelled")), (40, event("subscription_reactivated"))]
    log = await live(["win_back"], facts, until=90)
    assert log == [
        ("win_back", "start", "start", 0),
        ("win_back", "sent", "we_miss_you", 30),
        ("win_back", "sent", "offer", 37),
        ("win_back", "exit", "reactivated", 40),
    ]


# --- expansion: upsell_usage, upsell_need, upsell_results, cross_sell --------------------------


@pytest.mark.parametrize(
    ("name", "signal", "steps"),
    [
        ("upsell_usage", "power_user", ["next_plan_in_app", "next_plan"]),
        ("upsell_need", "limit_reached", ["plan_in_app", "plan_email"]),
        ("upsell_need", "limit_approaching", ["plan_in_app", "plan_email"]),
        ("upsell_results", "roi_proven", ["first_month_free"]),
        ("cross_sell", "cross_sell_ready", ["bundle_offer"]),
    ],
)
async def test_immediate_expansion_playbooks_send_on_day_zero(
    name: str, signal: str, steps: list[str]
) -> None:
    log = await live([name], [(0, on(signal))], until=30)
    assert log == [
        (name, "start", "start", 0),
        *[(name, "sent", step, 0) for step in steps],
        (name, "finish", None, 0),
    ]


# 23:00 in Madrid (summer, UTC+2) is 21:00 UTC = day 0.4583: steps wait until 08:00 local
# (06:00 UTC, day 0.8333); the goal reached in between exits the journey first.
NIGHT = 11 / 24
MORNING = 20 / 24


@pytest.mark.parametrize(
    ("name", "signal", "goal", "reason"),
    [
        ("upsell_usage", "power_user", event("subscription_upgraded", plan="pro"), "upgraded"),
        ("upsell_need", "limit_reached", event("subscription_upgraded", plan="pro"), "upgraded"),
        ("upsell_results", "roi_proven", event("subscription_upgraded", plan="pro"), "upgraded"),
        ("cross_sell", "cross_sell_ready", event("purchase", product="bundle"), "purchased"),
    ],
)
async def test_expansion_exit_before_the_deferred_morning_step(
    name: str, signal: str, goal: FactAt, reason: str
) -> None:
    first = BOOKS[name].steps[0].id
    log = await live([name], [(NIGHT, on(signal)), (MORNING - 0.1, goal)], until=30)
    assert log[0] == (name, "start", "start", round(NIGHT, 4))
    assert log[1] == (name, "deferred", first, round(NIGHT, 4))
    assert log[-1] == (name, "exit", reason, round(MORNING - 0.1, 4))
    assert not [e for e in log if e[1] == "sent"]


async def test_expansion_waits_for_retention() -> None:
    # A live retention journey blocks the start; the need is postponed, not dropped: the
    # upsell starts when the retention journey ends (its escalation, day 3), the signal
    # being still on. A second signal_on while it waits changes nothing.
    facts = [
        (0, score(churn_probability=0.9)),
        (1, on("power_user")),
        (2, on("power_user")),
    ]
    log = await live(["retention_offer", "upsell_usage"], facts, until=30)
    assert [(b, k, d) for b, k, _, d in log if k in ("start", "finish")] == [
        ("retention_offer", "start", 0),
        ("retention_offer", "finish", 3),
        ("upsell_usage", "start", 3),
        ("upsell_usage", "finish", 3),
    ]


async def test_high_risk_tier_blocks_expansion() -> None:
    high = R.Customer(CUSTOMER_ID, email="a@b.example", plan="basic", consent_email=True)
    facts = [(0, lambda t: D.ScoreFact({}, t, tier="high")), (1, on("power_user"))]
    assert await live(["upsell_usage"], facts, until=10, customer=high) == []


# --- onboarding ------------------------------------------------------------------------------


async def test_onboarding_full_timeline() -> None:
    log = await live(["onboarding"], [(0, event("subscription_started"))], until=60)
    assert log == [
        ("onboarding", "start", "start", 0),
        ("onboarding", "sent", "welcome", 1),
        ("onboarding", "sent", "first_success", 3),
        ("onboarding", "sent", "check_in", 7),
        ("onboarding", "sent", "results", 14),
        ("onboarding", "sent", "growth_plan", 30),
        ("onboarding", "finish", None, 30),
    ]


async def test_onboarding_exits_when_cancelled() -> None:
    facts = [(0, event("subscription_started")), (10, event("subscription_cancelled"))]
    log = await live(["onboarding"], facts, until=60)
    assert log[-1] == ("onboarding", "exit", "cancelled", 10)
    assert [s for _, kind, s, _ in log if kind == "sent"] == [
        "welcome",
        "first_success",
        "check_in",
    ]


# --- course_upsell and saas_upsell: after re-engagement --------------------------------------

RE_ENGAGED = [(0, on("engagement_low")), (15, event("login"))]


async def test_course_upsell_after_re_engagement_with_the_frequency_cap() -> None:
    free = R.Customer(
        CUSTOMER_ID, email="a@b.example", time_zone="UTC", plan="free", consent_email=True
    )
    log = await live(["re_engagement", "course_upsell"], RE_ENGAGED, until=60, customer=free)
    course = [e for e in log if e[0] == "course_upsell"]
    # The re-engagement summary (day 14) counts: 3 messages in 7 days moves the third
    # and fourth course emails to the day a message leaves the window (14+7, 16+7).
    assert course == [
        ("course_upsell", "start", "start", 15),
        ("course_upsell", "sent", "advantage", 16),
        ("course_upsell", "sent", "roi", 18),
        ("course_upsell", "deferred", "last_chance", 20),
        ("course_upsell", "sent", "last_chance", 21),
        ("course_upsell", "deferred", "success_stories", 22),
        ("course_upsell", "sent", "success_stories", 23),
        ("course_upsell", "sent", "final_reminder", 25),
        ("course_upsell", "finish", None, 25),
    ]


async def test_course_upsell_alone_is_capped_on_day_seven() -> None:
    # Five emails in ten days meet the 3-per-7-days cap: the fourth moves from day 7 to 8.
    free = R.Customer(CUSTOMER_ID, email="a@b.example", plan="free", consent_email=True)
    sim = Sim({"course_upsell": BOOKS["course_upsell"]}, free, RULES, T0)
    await sim.receive(D.JourneyEndFact("re_engagement", "re_engaged", T0))
    await sim.advance_to(at(30))
    sent = [(e.step, (e.at - T0).days) for e in sim.log if e.kind == "sent"]
    assert sent == [
        ("advantage", 1),
        ("roi", 3),
        ("last_chance", 5),
        ("success_stories", 8),
        ("final_reminder", 10),
    ]


async def test_course_upsell_exits_on_a_course_purchase_and_skips_buyers() -> None:
    free = R.Customer(CUSTOMER_ID, email="a@b.example", plan="free", consent_email=True)
    facts = [
        *RE_ENGAGED,
        (17, event("purchase", product="bundle")),
        (19, event("purchase", product="course")),
    ]
    log = await live(["re_engagement", "course_upsell"], facts, until=60, customer=free)
    course = [e for e in log if e[0] == "course_upsell"]
    assert course[-1] == ("course_upsell", "exit", "purchased", 19)
    assert [e[2] for e in course if e[1] == "sent"] == ["advantage", "roi"]
    buyer = R.Customer(
        CUSTOMER_ID,
        email="a@b.example",
        plan="free",
        consent_email=True,
        products=frozenset({"course"}),
    )
    log = await live(["re_engagement", "course_upsell"], RE_ENGAGED, until=60, customer=buyer)
    assert not [e for e in log if e[0] == "course_upsell"]


async def test_saas_upsell_after_re_engagement() -> None:
    log = await live(["re_engagement", "saas_upsell"], RE_ENGAGED, until=60)
    saas = [e for e in log if e[0] == "saas_upsell"]
    assert saas == [
        ("saas_upsell", "start", "start", 15),
        ("saas_upsell", "sent", "pro_features", 16),
        ("saas_upsell", "sent", "pro_roi", 18),
        ("saas_upsell", "deferred", "pro_offer", 20),
        ("saas_upsell", "sent", "pro_offer", 21),
        ("saas_upsell", "sent", "pro_last_call", 23),
        ("saas_upsell", "finish", None, 23),
    ]


async def test_saas_upsell_exits_on_upgrade_to_pro_and_ignores_other_plans() -> None:
    facts = [
        *RE_ENGAGED,
        (17, event("subscription_upgraded", plan="basic_plus")),
        (19, event("subscription_upgraded", plan="pro")),
    ]
    log = await live(["re_engagement", "saas_upsell"], facts, until=60)
    saas = [e for e in log if e[0] == "saas_upsell"]
    assert saas[-1] == ("saas_upsell", "exit", "upgraded", 19)
    assert [e[2] for e in saas if e[1] == "sent"] == ["pro_features", "pro_roi"]
    pro = R.Customer(CUSTOMER_ID, email="a@b.example", plan="pro", consent_email=True)
    log = await live(["re_engagement", "saas_upsell"], RE_ENGAGED, until=60, customer=pro)
    assert not [e for e in log if e[0] == "saas_upsell"]


# --- downgrade_save --------------------------------------------------------------------------


async def test_downgrade_save_full_timeline() -> None:
    log = await live(["downgrade_save"], [(0, event("downgrade_requested"))], until=30)
    assert log == [
        ("downgrade_save", "start", "start", 0),
        ("downgrade_save", "sent", "value_in_app", 0),
        ("downgrade_save", "sent", "value_email", 0),
        ("downgrade_save", "finish", None, 0),
    ]


async def test_downgrade_save_exits_when_the_downgrade_is_done_at_night() -> None:
    facts = [
        (NIGHT, event("downgrade_requested")),
        (MORNING - 0.1, event("subscription_downgraded")),
    ]
    log = await live(["downgrade_save"], facts, until=30)
    assert log[-1] == ("downgrade_save", "exit", "downgraded", round(MORNING - 0.1, 4))
    assert not [e for e in log if e[1] == "sent"]


# --- rules across playbooks on a timeline ---------------------------------------------------


async def test_cooldown_of_30_days_between_journeys_of_one_playbook() -> None:
    facts = [(0, event("subscription_cancelled")), (1, event("subscription_reactivated"))]
    facts += [(20, event("subscription_cancelled")), (31, event("subscription_cancelled"))]
    log = await live(["win_back"], facts, until=40)
    assert [(k, d) for _, k, _, d in log if k in ("start", "exit")] == [
        ("start", 0),
        ("exit", 1),
        ("start", 31),
    ]


async def test_an_event_older_than_the_max_age_starts_no_journey_yet_counts() -> None:
    # A backfill or a replay: the cancellation and the start arrive 8 days after they
    # happened (event_trigger_max_age: 7 days). Neither win_back nor onboarding starts,
    # yet the cancellation still holds: onboarding's sibling triggers see a cancelled
    # customer, and a later reactivation is a movement, not an exit.
    assert RULES.event_trigger_max_age == timedelta(days=7)
    sim = Sim({n: BOOKS[n] for n in ("win_back", "onboarding")}, CUSTOMER, RULES, T0)
    await sim.advance_to(at(8))
    await sim.receive(D.EventFact("subscription_started", at(0)), late=True)
    await sim.receive(D.EventFact("subscription_cancelled", at(0.5)), late=True)
    await sim.advance_to(at(90))
    assert sim.log == []
    async with sim.stores.begin() as store:
        assert (await store.customers.get(CUSTOMER_ID)).subscription == "cancelled"
    # 6 days late is still news: the win-back starts when it arrives (timed from then)
    sim = Sim({"win_back": BOOKS["win_back"]}, CUSTOMER, RULES, T0)
    await sim.advance_to(at(6))
    await sim.receive(D.EventFact("subscription_cancelled", at(0)), late=True)
    await sim.advance_to(at(40))
    log = [(e.kind, e.step or e.reason, round((e.at - T0).days)) for e in sim.log]
    assert log[:2] == [("start", "start", 6), ("sent", "we_miss_you", 36)]


def test_too_old_to_start_is_about_events_only() -> None:
    now, old = at(30), at(0)
    assert D.too_old_to_start(D.EventFact("subscription_cancelled", old), now, RULES)
    assert not D.too_old_to_start(D.EventFact("subscription_cancelled", at(23)), now, RULES)
    for fact in (D.SignalFact("power_user", True, old), D.ScoreFact({"x": 1.0}, old)):
        assert not D.too_old_to_start(fact, now, RULES)
    any_age = R.Rules(**{**RULES.__dict__, "event_trigger_max_age": None})
    assert not D.too_old_to_start(D.EventFact("subscription_cancelled", old), now, any_age)


async def test_unsubscribe_stops_every_marketing_email_but_not_csm_tasks() -> None:
    facts = [(0, event("subscription_cancelled")), (31, delivery("unsubscribed"))]
    log = await live(["win_back"], facts, until=90)
    assert [(s, k, d) for _, k, s, d in log if k in ("sent", "skipped")] == [
        ("we_miss_you", "sent", 30),
        ("offer", "skipped", 37),
        ("personal_call", "sent", 45),
        ("last_chance", "skipped", 60),
    ]


async def test_holdout_arm_lives_the_timeline_and_sends_nothing() -> None:
    control = next(
        f"c-{i}" for i in range(1000) if D.assign_arm(BOOKS["win_back"], f"c-{i}") == D.CONTROL
    )
    customer = R.Customer(control, email="a@b.example", consent_email=True)
    sim = Sim({"win_back": BOOKS["win_back"]}, customer, RULES, T0)
    await sim.receive(D.EventFact("subscription_cancelled", T0))
    await sim.advance_to(at(90))
    assert [(e.kind, e.step, e.reason, (e.at - T0).days) for e in sim.log] == [
        ("start", None, "start", 0),
        ("skipped", "we_miss_you", "holdout", 30),
        ("skipped", "offer", "holdout", 37),
        ("skipped", "personal_call", "holdout", 45),
        ("skipped", "last_chance", "holdout", 60),
        ("finish", None, None, 60),
    ]


# --- wait-for-event branches -----------------------------------------------------------------


def waiting_book(on_event: str) -> Playbook:
    """A playbook whose day-3 reminder waits for the day-0 email to be opened."""
    return Playbook.model_validate(
        {
            "name": "nudge",
            "lane": "lifecycle",
            "priority": 1,
            "goal": "opened",
            "attribution_window": "P14D",
            "cooldown": "P30D",
            "holdout": 0,
            "trigger": {"source": "event", "types": ["subscription_started"]},
            "steps": [
                {"id": "hello", "after": "P0D", "channel": "email", "template": "nudge/hello"},
                {
                    "id": "reminder",
                    "after": "P3D",
                    "channel": "email",
                    "template": "nudge/reminder",
                    "wait": {"for": ["opened"], "on_event": on_event, "reason": "opened"},
                },
                {"id": "tips", "after": "P5D", "channel": "email", "template": "nudge/tips"},
            ],
        }
    )


async def nudge(
    on_event: str, facts: list[tuple[float, FactAt]]
) -> list[tuple[str, str | None, float]]:
    sim = Sim({"nudge": waiting_book(on_event)}, CUSTOMER, RULES, T0)
    await sim.receive(D.EventFact("subscription_started", T0))
    for day, fact in facts:
        await sim.receive(fact(at(day)))
    await sim.advance_to(at(30))
    return [(e.kind, e.step or e.reason, (e.at - T0) / timedelta(days=1)) for e in sim.log]


async def test_wait_times_out_and_the_step_is_sent() -> None:
    # an open of another journey's message is not this journey's event
    log = await nudge("skip", [(1, delivery("opened", "someone-else"))])
    assert [(k, s, d) for k, s, d in log if k == "sent"] == [
        ("sent", "hello", 0),
        ("sent", "reminder", 3),
        ("sent", "tips", 5),
    ]


async def test_wait_event_takes_the_skip_branch() -> None:
    log = await nudge("skip", [(1, delivery("opened", "nudge-1"))])
    assert log[1:] == [
        ("sent", "hello", 0),
        ("skipped", "reminder", 3),
        ("sent", "tips", 5),
        ("finish", None, 5),
    ]


async def test_wait_event_takes_the_exit_branch() -> None:
    log = await nudge("exit", [(1, delivery("opened", "nudge-1"))])
    assert log[1:] == [("sent", "hello", 0), ("exit", "opened", 3)]


async def test_a_cancelled_customer_is_win_backs_alone() -> None:
    # Unopened win-back emails turn engagement_low on; a cancelled customer still gets no
    # re-engagement campaign, and no upsell, until the subscription is active again. The
    # triggers wait for the reactivation (day 70): the upsell, whose signal is still on,
    # starts then; engagement_low must then be held 14 days as an active customer.
    facts = [
        (0, event("subscription_cancelled")),
        (37.5, on("engagement_low")),
        (38, on("power_user")),
        (70, event("subscription_reactivated")),
    ]
    log = await live(["win_back", "re_engagement", "upsell_usage"], facts, until=100)
    assert [(b, d) for b, k, _, d in log if k == "start"] == [
        ("win_back", 0),
        ("upsell_usage", 70),
        ("re_engagement", 84),
    ]
