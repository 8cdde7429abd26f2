"""Playbooks under contention (issue 13, items 1-5): the pure rules, and timelines lived by
the production use cases on the in-memory store (``sim.Sim``).

Cap slots go by priority; steps about an earlier message wait for it; the cap counts
send times and releases what was not sent; a need blocked by retention before
expansion is postponed; a cancellation leaves the customer to win-back alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.domain import decisions as D
from orchestrator.domain import rules as R
from orchestrator.domain.playbook import SHIPPED, load_playbooks
from orchestrator.domain.story import StepRecord, journey_story, message_record
from orchestrator.settings import OrchestratorSettings
from tests.unit.orchestrator.sim import Sim

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC
RULES = OrchestratorSettings().rules()
BOOKS = load_playbooks(SHIPPED)
CUSTOMER = R.Customer(
    "acme-3", email="ana@acme.example", time_zone="UTC", plan="basic", consent_email=True
)
LAG = timedelta(minutes=20)  # the notifier's delivery lag the issue measured


def at(day: float) -> datetime:
    return T0 + timedelta(days=day)


def day(instant: datetime) -> float:
    return round((instant - T0) / timedelta(days=1), 4)


def engine(*names: str, customer: R.Customer = CUSTOMER) -> Sim:
    return Sim({n: BOOKS[n] for n in names}, customer, RULES, T0)


def steps(e: Sim, playbook: str) -> list[tuple[str, str | None, float]]:
    return [(x.kind, x.step, day(x.at)) for x in e.log if x.playbook == playbook and x.step]


def starts(e: Sim) -> list[tuple[str, float]]:
    return [(x.playbook, day(x.at)) for x in e.log if x.kind == "start"]


# --- the pure rules -------------------------------------------------------------------------


def test_a_message_ahead_takes_the_first_free_slot_and_this_one_the_next() -> None:
    counted = [at(0), at(0), at(1)]
    assert R.cap_free_at(counted, at(2), RULES) == at(7)
    assert R.cap_free_at(counted, at(2), RULES, ahead=1) == at(7)  # two slots free on day 7
    assert R.cap_free_at(counted, at(2), RULES, ahead=2) == at(8)
    # a slot free now goes to the message ahead; this one waits for the next
    assert R.cap_free_at([at(0), at(1)], at(2), RULES, ahead=1) == at(7)
    assert R.cap_free_at([at(1)], at(2), RULES, ahead=1) is None
    # an instant after now (a clock a little ahead) counts too
    assert R.cap_free_at([at(1), at(1), at(2.001)], at(2), RULES) == at(8)


def test_the_cap_counts_a_reservation_then_the_send_time_and_releases_a_failure() -> None:
    decided = at(0)
    assert R.counts_at(decided, None, None) == decided  # reserved when decided
    assert R.counts_at(decided, "sent", decided + LAG) == decided + LAG
    for gone in ("failed", "suppressed", "bounced"):
        assert R.counts_at(decided, gone, decided + LAG) is None
    assert R.outcome_after(None, "sent") == "sent"
    assert R.outcome_after("sent", "bounced") == "bounced"  # a later bounce: not received
    assert R.outcome_after("failed", "sent") == "failed"
    assert R.outcome_after("sent", "opened") == "sent"
    assert R.outcome_after(None, "clicked") is None


def test_waiting_steps_rank_by_priority_then_by_how_long_they_waited() -> None:
    offer = D.Waiting("offer", 100, at(2))
    welcome = D.Waiting("welcome", 20, at(1))
    check_in = D.Waiting("check_in", 20, at(7))
    waiting = [offer, welcome, check_in]
    assert D.ahead_of(offer, waiting) == 0
    assert D.ahead_of(welcome, waiting) == 1
    assert D.ahead_of(check_in, waiting) == 2
    assert sorted(waiting, key=D.rank) == [offer, welcome, check_in]


def test_a_step_yields_a_free_slot_to_a_higher_priority_one_waiting() -> None:
    onboarding, step = BOOKS["onboarding"], BOOKS["onboarding"].step("check_in")
    counted = (at(0), at(1))  # one slot free on day 6
    alone = D.Situation(CUSTOMER, marketing_sent=counted)
    assert D.decide_step(onboarding, step, alone, now=at(6), rules=RULES).send
    behind = D.Situation(CUSTOMER, marketing_sent=counted, ahead=1)
    decision = D.decide_step(onboarding, step, behind, now=at(6), rules=RULES)
    assert (decision.action, decision.reason, decision.until) == (
        "defer",
        "higher priority first",
        at(7),  # the day-0 message leaves the window on day 7: the next slot
    )


def test_a_cancelled_customers_journey_of_a_churn_playbook_exits_at_its_next_step() -> None:
    # A journey that started while the cancellation was being recorded (two transactions
    # at once) sends nothing: its next step ends it.
    cancelled = D.Situation(R.Customer("c", email="a@b.example", subscription="cancelled"))
    coaching = BOOKS["success_coaching"]
    decision = D.decide_step(coaching, coaching.steps[0], cancelled, now=T0, rules=RULES)
    assert (decision.action, decision.reason) == ("exit", "cancelled")
    win_back = BOOKS["win_back"]
    assert D.decide_step(win_back, win_back.steps[-1], cancelled, now=T0, rules=RULES).action in (
        "send",
        "skip",
    )
    assert not coaching.admits_cancelled and win_back.admits_cancelled


def test_a_csm_task_says_what_was_sent_when_and_what_is_pending() -> None:
    book = BOOKS["retention_offer"]
    sent = message_record("offer", at(7), "sent", at(7) + LAG)
    story = journey_story(
        book,
        [sent, StepRecord("escalation", "pending", at(10) + LAG)],
        current="retention_call",
        started_at=at(2),
    )
    assert story == {
        "playbook": "retention_offer",
        "started_at": at(2).isoformat(),
        "steps": [
            {
                "step": "offer",
                "channel": "email",
                "status": "sent",
                "at": (at(7) + LAG).isoformat(),
                "reason": None,
            },
            {
                "step": "escalation",
                "channel": "webhook",
                "status": "pending",
                "at": (at(10) + LAG).isoformat(),
                "reason": None,
            },
        ],
        "sent": ["offer"],
        "not_sent": [],
        "pending": ["escalation"],
    }
    waiting = journey_story(
        book,
        [StepRecord("offer", "pending", at(7)), StepRecord("escalation", "pending")],
        current="retention_call",
        started_at=at(2),
    )
    assert waiting["steps"][1]["reason"] == "waits for offer"
    skipped = journey_story(
        book,
        [StepRecord("offer", "skipped", at(2), "no email consent")],
        current="escalation",
        started_at=at(2),
    )
    assert skipped["not_sent"] == ["offer"] and skipped["sent"] == []


# --- item 1: priority decides who gets a capped slot ---------------------------------------

CONTENDED = [
    (0, D.EventFact("subscription_started", at(0))),  # onboarding: days 1, 3, 7, 14, 30
    (0, D.SignalFact("power_user", True, at(0))),  # two upsell messages on day 0
    (2, D.ScoreFact({"churn_probability": 0.8}, at(2))),  # the retention offer, capped
]


async def contended() -> Sim:
    e = engine("onboarding", "upsell_usage", "retention_offer")
    for _, fact in CONTENDED:
        await e.receive(fact)
    await e.advance_to(at(40))
    return e


async def test_the_retention_offer_takes_the_first_slot_that_frees() -> None:
    e = await contended()
    # Day 2: three messages in the window (two on day 0, the welcome on day 1). Day 7:
    # two slots free; the offer (priority 100) takes one, the oldest onboarding step
    # waiting (first_success, since day 3) the other; check_in waits for day 8.
    assert steps(e, "retention_offer")[:2] == [("deferred", "offer", 2), ("sent", "offer", 7)]
    assert [s for s in steps(e, "onboarding") if s[2] in (3, 7, 8)] == [
        ("deferred", "first_success", 3),
        ("sent", "first_success", 7),
        ("deferred", "check_in", 7),
        ("sent", "check_in", 8),
    ]
    reasons = [x.reason for x in e.log if x.kind == "deferred"]
    assert reasons == ["frequency cap", "frequency cap", "frequency cap"]


async def test_a_step_fired_alone_yields_the_slot_to_a_higher_priority_one_due() -> None:
    # Two steps due at once reach the timer worker in different batches (a batch of one:
    # the older, onboarding's welcome, first). The welcome does not take the only free
    # slot while the retention offer, due too, waits for one: it is deferred behind it.
    e = engine("onboarding", "upsell_need", "retention_offer")
    e.batch = 1
    await e.receive(D.EventFact("subscription_started", at(0)))  # the welcome: due on day 1
    await e.receive(D.SignalFact("limit_reached", True, at(0)))  # two messages: one slot left
    await e.advance_to(at(1) - timedelta(minutes=2))
    e.clock.set(at(1) + timedelta(minutes=1))  # the welcome is due (and a minute late)
    await e.receive(D.ScoreFact({"churn_probability": 0.8}, e.now), late=True)  # offer: due now
    await e.advance_to(at(2))
    assert ("sent", "offer", day(at(1) + timedelta(minutes=1))) in steps(e, "retention_offer")
    assert [(x.step, x.reason) for x in e.log if x.kind == "deferred"] == [
        ("welcome", "higher priority first")
    ]


# --- item 2: steps that depend on an earlier message wait for it ----------------------------


async def test_the_call_and_the_escalation_count_from_the_offers_send() -> None:
    e = await contended()
    assert steps(e, "retention_offer") == [
        ("deferred", "offer", 2),
        ("sent", "offer", 7),
        ("sent", "retention_call", 8),  # offer + 1 d, not journey start + 1 d (day 3)
        ("sent", "escalation", 10),  # offer + 3 d: "no response in 3 days" is true
    ]


async def test_the_re_engagement_csm_task_follows_the_in_app_message_it_cites() -> None:
    # Two upsell messages on day 13 and the summary on day 14 fill the cap: the in-app
    # message due on day 16 goes on day 20, and the CSM task two days after it (day 22).
    e = engine("re_engagement", "upsell_usage")
    await e.receive(D.SignalFact("engagement_low", True, at(0)))
    await e.receive(D.SignalFact("power_user", True, at(13)))
    await e.advance_to(at(40))
    assert steps(e, "re_engagement") == [
        ("sent", "summary", 14),
        ("deferred", "premium_trial", 16),
        ("sent", "premium_trial", 20),
        ("sent", "csm_help", 22),
    ]


# --- item 3: the cap counts what customers receive -------------------------------------------


async def course(*reports: tuple[str, float, str]) -> Sim:
    """course_upsell alone (emails due on days 1, 3, 5, 7, 10), each email reported by the
    notifier: (step, when, status)."""
    e = engine("course_upsell")
    await e.receive(D.JourneyEndFact("re_engagement", "re_engaged", T0))
    for step, when, status in sorted(reports, key=lambda r: r[1]):
        nid = D.notification_id("course_upsell-1", step)
        await e.receive(D.DeliveryFact(status, at(when), "course_upsell-1", nid))
    await e.advance_to(at(30))
    return e


async def test_the_cap_holds_on_send_times() -> None:
    lag = LAG / timedelta(days=1)
    e = await course(
        *((s, d + lag, "sent") for s, d in (("advantage", 1), ("roi", 3), ("last_chance", 5)))
    )
    sent = [(s, d) for k, s, d in steps(e, "course_upsell") if k == "sent"]
    # the fourth waits until the first one's *send* (day 1 + 20 min) leaves the window
    assert sent[3] == ("success_stories", round(8 + lag, 4))
    assert sent[3][1] - sent[0][1] >= 7  # never four within 7 days by send times


async def test_a_message_not_sent_releases_its_slot() -> None:
    # last_chance (day 5) bounced: success_stories goes when due, on day 7, not day 8
    e = await course(("last_chance", 5.01, "bounced"))
    assert ("sent", "success_stories", 7) in steps(e, "course_upsell")
    # reported after the fourth was deferred (day 7.25): it is woken and sent at once
    e = await course(("last_chance", 7.25, "failed"))
    assert [s for s in steps(e, "course_upsell") if s[1] == "success_stories"] == [
        ("deferred", "success_stories", 7),
        ("sent", "success_stories", 7.25),
    ]


# --- item 4: a need seen while blocked is postponed, not dropped ----------------------------


async def need(*facts: tuple[float, D.Fact]) -> Sim:
    e = engine("upsell_need")
    for _, fact in facts:
        await e.receive(fact)
    await e.advance_to(at(30))
    return e


async def test_a_need_seen_at_high_risk_starts_when_the_risk_falls() -> None:
    high = D.ScoreFact({}, at(0), tier="high")
    limit = D.SignalFact("limit_reached", True, at(1))
    medium = D.ScoreFact({}, at(5), tier="medium")
    e = await need((0, high), (1, limit), (5, medium))
    assert starts(e) == [("upsell_need", 5)]
    assert steps(e, "upsell_need") == [("sent", "plan_in_app", 5), ("sent", "plan_email", 5)]
    # the signal turned off meanwhile: nothing to start
    e = await need(
        (0, high), (1, limit), (3, D.SignalFact("limit_reached", False, at(3))), (5, medium)
    )
    assert starts(e) == []
    # another of the trigger's signals turning off does not drop it
    e = await need(
        (0, high), (1, limit), (3, D.SignalFact("limit_approaching", False, at(3))), (5, medium)
    )
    assert starts(e) == [("upsell_need", 5)]


# --- item 5: cancellation stops the churn playbooks ------------------------------------------


async def test_cancellation_ends_every_journey_but_win_back() -> None:
    # An upsell decided at 23:00 waits for 08:00 (quiet hours); the customer cancels at
    # 02:00: the journey ends, nothing is sent, win_back starts.
    e = engine("upsell_need", "win_back")
    await e.receive(D.SignalFact("limit_reached", True, at(13 / 24)))  # 23:00 UTC
    await e.receive(D.EventFact("subscription_cancelled", at(16 / 24)))
    await e.advance_to(at(100))
    assert [(x.playbook, x.kind, x.reason) for x in e.log if x.kind in ("exit", "start")] == [
        ("upsell_need", "start", "start"),
        ("upsell_need", "exit", "cancelled"),
        ("win_back", "start", "start"),
    ]
    assert {x.playbook for x in e.log if x.kind == "sent"} == {"win_back"}


async def test_a_cancelled_customers_churn_triggers_are_suspended_until_reactivation() -> None:
    e = engine("success_coaching", "win_back")
    await e.receive(D.SignalFact("usage_reduced", True, at(0)))
    await e.receive(D.EventFact("subscription_cancelled", at(10)))
    await e.advance_to(at(100))
    # usage_reduced is no longer evaluated: no re-check every 30 days, no journey
    assert e.armed == {} and e.blocked == {"success_coaching": ("cancelled", "usage_reduced")}
    assert starts(e) == [("win_back", 10)]
    await e.receive(D.EventFact("subscription_reactivated", at(100)))
    assert e.armed == {"success_coaching": (at(130), "usage_reduced")}  # held again, 30 days
    await e.advance_to(at(131))
    assert starts(e)[-1] == ("success_coaching", 130)
