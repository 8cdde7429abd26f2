from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.domain import decisions
from orchestrator.domain.journey import FINAL, Event, IllegalTransition, State, transition
from orchestrator.domain.playbook import SHIPPED, PlaybookError, load_playbook, load_playbooks

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
RETENTION = load_playbooks(SHIPPED)["retention_offer"]


def test_retention_offer_steps_on_day_0_1_3() -> None:
    plan = decisions.schedule(RETENTION, T0)
    assert plan == [
        ("offer", T0),
        ("retention_call", T0 + timedelta(days=1)),
        ("escalation", T0 + timedelta(days=3)),
    ]
    assert [s.channel for s in RETENTION.steps] == ["email", "webhook", "webhook"]
    assert RETENTION.step("retention_call").priority == "high"


def test_trigger_is_strictly_above_070_and_respects_cooldown() -> None:
    start = dict(last_ended_at=None, has_live_journey=False, now=T0)
    assert not decisions.should_start(RETENTION, churn_probability=0.70, **start)
    assert decisions.should_start(RETENTION, churn_probability=0.71, **start)
    assert not decisions.should_start(
        RETENTION, churn_probability=0.9, last_ended_at=None, has_live_journey=True, now=T0
    )
    recent = T0 - timedelta(days=29)
    assert not decisions.should_start(
        RETENTION, churn_probability=0.9, last_ended_at=recent, has_live_journey=False, now=T0
    )
    assert decisions.should_start(
        RETENTION,
        churn_probability=0.9,
        last_ended_at=T0 - timedelta(days=30),
        has_live_journey=False,
        now=T0,
    )


def test_exits() -> None:
    assert decisions.exit_on_delivery(RETENTION, "clicked") == "responded"
    assert decisions.exit_on_delivery(RETENTION, "replied") == "responded"
    assert decisions.exit_on_delivery(RETENTION, "opened") is None
    assert decisions.exit_on_score(RETENTION, 0.39) == "risk_recovered"
    assert decisions.exit_on_score(RETENTION, 0.40) is None


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


def test_consent_and_address_decide_email_steps() -> None:
    send = decisions.decide_step(
        RETENTION, "offer", email="a@b.c", consent_email=True, consent_in_app=True
    )
    assert send.send
    no_consent = decisions.decide_step(
        RETENTION, "offer", email="a@b.c", consent_email=False, consent_in_app=True
    )
    assert not no_consent.send and no_consent.reason == "no email consent"
    no_address = decisions.decide_step(
        RETENTION, "offer", email=None, consent_email=True, consent_in_app=True
    )
    assert no_address.reason == "no email address"
    csm = decisions.decide_step(
        RETENTION, "retention_call", email=None, consent_email=False, consent_in_app=False
    )
    assert csm.send  # CSM tasks are not marketing


def test_journey_machine_rejects_illegal_transitions() -> None:
    state = transition(None, Event.START)
    assert state is State.ACTIVE
    assert transition(state, Event.STEP_SENT) is State.ACTIVE
    for final_event, final_state in (
        (Event.EXIT, State.EXITED),
        (Event.FINISH, State.COMPLETED),
        (Event.CANCEL, State.CANCELLED),
    ):
        assert transition(State.ACTIVE, final_event) is final_state
        assert final_state in FINAL
        for event in Event:
            with pytest.raises(IllegalTransition):
                transition(final_state, event)
    with pytest.raises(IllegalTransition):
        transition(None, Event.STEP_SENT)


def test_invalid_playbook_names_file_field_and_reason(tmp_path: Path) -> None:
    text = (SHIPPED / "retention_offer.yaml").read_text()
    bad = tmp_path / "broken.yaml"
    bad.write_text(text.replace("channel: email", "channel: pigeon"))
    with pytest.raises(PlaybookError, match=r"broken\.yaml: steps\.0\.channel"):
        load_playbook(bad)
    bad.write_text(text.replace("after: P3D", "after: P0D"))
    with pytest.raises(PlaybookError, match="order of their offsets"):
        load_playbook(bad)
    bad.write_text(text.replace("recipient: csm,", "recipient: customer,"))
    with pytest.raises(PlaybookError, match="webhook step goes to csm or escalation"):
        load_playbook(bad)
