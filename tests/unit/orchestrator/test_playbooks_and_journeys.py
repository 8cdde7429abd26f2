from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.domain import decisions
from orchestrator.domain import rules as R
from orchestrator.domain.journey import (
    FINAL,
    Event,
    Facts,
    IllegalTransition,
    State,
    operator_transition,
    transition,
)
from orchestrator.domain.playbook import SHIPPED, PlaybookError, load_playbook, load_playbooks
from orchestrator.settings import OrchestratorSettings

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
RETENTION = load_playbooks(SHIPPED)["retention_offer"]
RULES = OrchestratorSettings().rules()


def test_retention_offer_steps_on_day_0_1_3() -> None:
    # The call and the escalation are timed from the offer's send: no due time until then.
    plan = decisions.schedule(RETENTION, T0)
    assert plan == [("offer", T0), ("retention_call", None), ("escalation", None)]
    sent = T0 + timedelta(days=5, minutes=20)  # held by the cap, then sent
    assert decisions.follow_ups(RETENTION, "offer", sent) == [
        ("retention_call", sent + timedelta(days=1)),
        ("escalation", sent + timedelta(days=3)),
    ]
    assert decisions.follow_ups(RETENTION, "retention_call", sent) == []
    assert [RETENTION.nominal_offset(s.id).days for s in RETENTION.steps] == [0, 1, 3]
    assert [s.channel for s in RETENTION.steps] == ["email", "webhook", "webhook"]
    assert RETENTION.step("retention_call").priority == "high"


CUSTOMER = R.Customer("acme-3", email="a@b.example", consent_email=True)


def start_block(**kw: object) -> str | None:
    args: dict[str, object] = dict(
        live_lanes=frozenset(), last_ended_at=None, has_live_journey=False, paused=False, now=T0
    )
    args.update(kw)
    return decisions.start_block(RETENTION, CUSTOMER, **args)  # type: ignore[arg-type]


def test_trigger_is_strictly_above_070_and_respects_cooldown() -> None:
    def effect(p: float) -> str | None:
        return decisions.trigger_effect(
            RETENTION, decisions.ScoreFact({"churn_probability": p}, T0)
        )

    assert effect(0.70) is None
    assert effect(0.71) == "start"
    assert start_block() is None
    assert start_block(has_live_journey=True) == "journey already live"
    assert start_block(last_ended_at=T0 - timedelta(days=29)) == "cooldown"
    assert start_block(last_ended_at=T0 - timedelta(days=30)) is None
    assert start_block(paused=True) == "playbook paused"


def test_exits() -> None:
    def delivery(status: str, journey: str = "j-1") -> str | None:
        return decisions.exit_reason(RETENTION, decisions.DeliveryFact(status, T0, journey), "j-1")

    assert delivery("clicked") == "responded"
    assert delivery("replied") == "responded"
    assert delivery("opened") is None
    assert delivery("clicked", journey="another") is None
    score = decisions.ScoreFact
    assert decisions.exit_reason(RETENTION, score({"churn_probability": 0.39}, T0), "j-1") == (
        "risk_recovered"
    )
    assert decisions.exit_reason(RETENTION, score({"churn_probability": 0.40}, T0), "j-1") is None
    assert decisions.exit_reason(RETENTION, score({"risk_score": 1.0}, T0), "j-1") is None


def test_notification_id_is_stable_per_journey_and_step() -> None:
    a = decisions.notification_id("j-1", "offer")
    assert a == decisions.notification_id("j-1", "offer")
    assert a != decisions.notification_id("j-1", "retention_call")
    assert a != decisions.notification_id("j-2", "offer")


def test_variant_is_deterministic_and_split() -> None:
    picks = [decisions.pick_variant(RETENTION, f"c-{i}") for i in range(3000)]
    assert picks[:50] == [decisions.pick_variant(RETENTION, f"c-{i}") for i in range(50)]
    counts = Counter(picks)
    assert set(counts) == set(RETENTION.variants)
    assert min(counts.values()) > 3000 / 3 * 0.85


def decide(step: str, customer: R.Customer) -> decisions.StepDecision:
    return decisions.decide_step(
        RETENTION,
        RETENTION.step(step),
        decisions.Situation(customer=customer),
        now=T0,
        rules=RULES,
    )


def test_consent_and_address_decide_email_steps() -> None:
    assert decide("offer", CUSTOMER).send
    no_consent = decide("offer", R.Customer("c", email="a@b.c"))
    assert no_consent.action == "skip" and no_consent.reason == "no email consent"
    unsubscribed = decide(
        "offer", R.Customer("c", email="a@b.c", consent_email=True, unsubscribed=True)
    )
    assert unsubscribed.reason == "unsubscribed"
    assert decide("offer", R.Customer("c", consent_email=True)).reason == "no email address"
    csm = decide("retention_call", R.Customer("c", consent_in_app=False))
    assert csm.send  # CSM tasks are not marketing


def test_journey_machine_rejects_illegal_transitions() -> None:
    one = Facts(pending_steps=1)
    state = transition(None, Event.START)
    assert state is State.ACTIVE
    assert transition(state, Event.STEP_SENT, one) is State.ACTIVE
    with pytest.raises(IllegalTransition, match="needs facts"):
        transition(state, Event.STEP_SENT)
    with pytest.raises(IllegalTransition, match="guard has_pending_step"):
        transition(state, Event.STEP_SENT, Facts(pending_steps=0))
    with pytest.raises(IllegalTransition, match="guard no_pending_step"):
        transition(state, Event.FINISH, one)
    assert transition(State.ACTIVE, Event.PAUSE) is State.PAUSED
    assert transition(State.PAUSED, Event.RESUME) is State.ACTIVE
    with pytest.raises(IllegalTransition):
        transition(State.PAUSED, Event.STEP_SENT, one)
    with pytest.raises(IllegalTransition):
        transition(State.PAUSED, Event.PAUSE)
    assert operator_transition(State.PAUSED, Event.CANCEL) is State.CANCELLED
    with pytest.raises(IllegalTransition, match="not an operator action"):
        operator_transition(State.ACTIVE, Event.EXIT)
    for final_event, final_state, facts in (
        (Event.EXIT, State.EXITED, None),
        (Event.FINISH, State.COMPLETED, Facts(pending_steps=0)),
        (Event.CANCEL, State.CANCELLED, None),
    ):
        assert transition(State.ACTIVE, final_event, facts) is final_state
        assert final_state in FINAL
        for event in Event:
            with pytest.raises(IllegalTransition):
                transition(final_state, event, one)
    with pytest.raises(IllegalTransition):
        transition(None, Event.STEP_SENT, one)


def test_invalid_playbook_names_file_field_and_reason(tmp_path: Path) -> None:
    text = (SHIPPED / "retention_offer.yaml").read_text()
    bad = tmp_path / "broken.yaml"
    bad.write_text(text.replace("channel: email", "channel: pigeon"))
    with pytest.raises(PlaybookError, match=r"broken\.yaml: steps\.0\.channel"):
        load_playbook(bad)
    bad.write_text(text.replace("after: P3D", "after: P0D"))
    with pytest.raises(PlaybookError, match="order of their offsets"):
        load_playbook(bad)
    bad.write_text(text.replace("recipient: csm,", "recipient: customer,", 1))
    with pytest.raises(PlaybookError, match="webhook step goes to csm or escalation"):
        load_playbook(bad)


def test_a_step_is_timed_only_from_an_earlier_step(tmp_path: Path) -> None:
    text = (SHIPPED / "retention_offer.yaml").read_text()
    bad = tmp_path / "broken.yaml"
    bad.write_text(text.replace("from: offer,", "from: nowhere,"))
    with pytest.raises(PlaybookError, match="step retention_call: from: 'nowhere' is not a step"):
        load_playbook(bad)
    bad.write_text(text.replace("from: offer,", "from: escalation,"))
    with pytest.raises(PlaybookError, match="from: 'escalation' is not a step listed before it"):
        load_playbook(bad)
    bad.write_text(text.replace("from: offer,", "from: retention_call,"))  # itself
    with pytest.raises(PlaybookError, match="from: 'retention_call' is not a step listed"):
        load_playbook(bad)
    # nominal offsets stay in order: a call at +3.5 d would come after the +3 d escalation
    bad.write_text(text.replace("after: P1D, from: offer", "after: P3DT12H, from: offer"))
    with pytest.raises(PlaybookError, match="order of their offsets"):
        load_playbook(bad)


def test_every_shipped_playbook_matches_the_contract() -> None:
    books = load_playbooks(SHIPPED)
    contract = {
        "re_engagement": [
            ("summary", "email", 0),
            ("premium_trial", "in_app", 2),
            ("csm_help", "webhook", 4),
        ],
        "success_coaching": [
            ("coaching_guide", "email", 1),
            ("training_invite", "webhook", 3),
            ("follow_up", "email", 8),
        ],
        "retention_offer": [
            ("offer", "email", 0),
            ("retention_call", "webhook", 1),
            ("escalation", "webhook", 3),
        ],
        "win_back": [
            ("we_miss_you", "email", 30),
            ("offer", "email", 37),
            ("personal_call", "webhook", 45),
            ("last_chance", "email", 60),
        ],
        "upsell_usage": [("next_plan_in_app", "in_app", 0), ("next_plan", "email", 0)],
        "upsell_need": [("plan_in_app", "in_app", 0), ("plan_email", "email", 0)],
        "upsell_results": [("first_month_free", "email", 0)],
        "cross_sell": [("bundle_offer", "email", 0)],
        "onboarding": [
            (s, "email", d)
            for s, d in (
                ("welcome", 1),
                ("first_success", 3),
                ("check_in", 7),
                ("results", 14),
                ("growth_plan", 30),
            )
        ],
        "course_upsell": [
            (s, "email", d)
            for s, d in (
                ("advantage", 1),
                ("roi", 3),
                ("last_chance", 5),
                ("success_stories", 7),
                ("final_reminder", 10),
            )
        ],
        "saas_upsell": [
            (s, "email", d)
            for s, d in (
                ("pro_features", 1),
                ("pro_roi", 3),
                ("pro_offer", 5),
                ("pro_last_call", 8),
            )
        ],
        "downgrade_save": [("value_in_app", "in_app", 0), ("value_email", "email", 0)],
    }
    assert set(books) == set(contract)
    for name, steps in contract.items():
        book = books[name]
        offsets = [(s.id, s.channel, book.nominal_offset(s.id).days) for s in book.steps]
        assert offsets == steps, name
        for step in book.steps:
            assert step.template == f"{name}/{step.id}"
            assert step.marketing == (step.channel != "webhook")
        assert book.cooldown == timedelta(days=30) and book.holdout == 0.10
        assert book.attribution_window == timedelta(days=14)
    assert books["win_back"].step("personal_call").recipient == "csm"
    assert books["retention_offer"].step("escalation").recipient == "escalation"


def test_a_playbook_folder_with_a_dangling_journey_trigger_fails(tmp_path: Path) -> None:
    text = (SHIPPED / "course_upsell.yaml").read_text()
    (tmp_path / "course_upsell.yaml").write_text(text)
    with pytest.raises(PlaybookError, match=r"course_upsell\.yaml: trigger\.playbook: no playbook"):
        load_playbooks(tmp_path)
    (tmp_path / "copy.yaml").write_text(text)
    with pytest.raises(PlaybookError, match=r"course_upsell\.yaml: name: another file"):
        load_playbooks(tmp_path)


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    text = (SHIPPED / "re_engagement.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    cases = {
        "held: P14D}": ("held: P14D, signal: x}", r"trigger\.signal.*signal: Extra inputs"),
        "holdout: 0.10": ("holdout: 1.5", r"holdout: Input should be less than 1"),
        "summary,": ("summary!,", r"steps\.0\.id: String should match"),
        "priority: 80": ("priority: -1", r"priority: Input should be greater than or equal to 0"),
    }
    for old, (new, pattern) in cases.items():
        bad.write_text(text.replace(old, new))
        with pytest.raises(PlaybookError, match=pattern):
            load_playbook(bad)


def test_recipient_per_channel() -> None:
    books = load_playbooks(SHIPPED)
    step = books["re_engagement"].step
    assert decisions.recipient(step("summary"), "a@b.example") == "a@b.example"
    assert decisions.recipient(step("premium_trial"), "a@b.example") is None
    assert decisions.recipient(step("csm_help"), "a@b.example") == "csm"
    assert decisions.recipient(RETENTION.step("escalation"), None) == "escalation"
