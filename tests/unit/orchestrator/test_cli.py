"""``tenure playbooks validate``: what the operator sees for valid and invalid files."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.domain.playbook import SHIPPED
from tenure_cli.command import main


def test_the_shipped_folder_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["playbooks", "validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 12 and all(line.startswith("ok    ") for line in out)
    assert any(
        "re_engagement (retention, trigger: signal engagement_low held 14d; summary +0d" in line
        for line in out
    )


def test_an_invalid_file_names_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "win_back.yaml"
    text = (SHIPPED / "win_back.yaml").read_text()
    bad.write_text(text.replace("after: P37D", "after: P99D"))
    assert main(["playbooks", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"tenure: invalid playbook: {bad}: (top): Value error, "
        "steps must be listed in the order of their offsets"
    )


def test_a_folder_reports_every_bad_file_and_the_good_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "onboarding.yaml").write_text((SHIPPED / "onboarding.yaml").read_text())
    text = (SHIPPED / "cross_sell.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text.replace("lane: expansion", "lane: growth"))
    (tmp_path / "b.yaml").write_text(text.replace("holdout: 0.10", "holdout: ten"))
    (tmp_path / "c.yaml").write_text("name: [unclosed")
    assert main(["playbooks", "validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 3
    assert "a.yaml: lane: Input should be 'retention', 'expansion' or 'lifecycle'" in errors[0]
    assert "b.yaml: holdout: Input should be a valid number" in errors[1]
    assert "c.yaml: cannot read" in errors[2]
    assert captured.out.startswith(f"ok    {tmp_path / 'onboarding.yaml'}: onboarding")


def test_cross_file_rules_and_missing_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "saas_upsell.yaml").write_text((SHIPPED / "saas_upsell.yaml").read_text())
    assert main(["playbooks", "validate", str(tmp_path)]) == 1
    assert "trigger.playbook: no playbook named 're_engagement'" in capsys.readouterr().err
    assert main(["playbooks", "validate", str(tmp_path / "nope")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["playbooks"])
    assert usage.value.code == 2


def test_analytics_rebuild_says_when_kafka_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENURE_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    assert main(["analytics", "rebuild", "--since", "2026-11-01"]) == 1
    assert capsys.readouterr().err.strip() == ("tenure: error: Kafka unreachable at 127.0.0.1:9")


def test_analytics_rebuild_refuses_a_malformed_since(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["analytics", "rebuild", "--since", "last tuesday"])
    assert exited.value.code == 2
    assert "is not a date or ISO 8601 instant" in capsys.readouterr().err


def test_a_step_whose_template_reads_an_offer_field_it_lacks_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The template states offer.discount_pct; the step's offer calls it pct."""
    bad = tmp_path / "cross_sell.yaml"
    text = (SHIPPED / "cross_sell.yaml").read_text()
    assert "offer: {discount_pct: 30}" in text
    bad.write_text(text.replace("offer: {discount_pct: 30}", "offer: {pct: 30}"))
    assert main(["playbooks", "validate", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"tenure: invalid playbook: {bad}: playbook cross_sell, step bundle_offer: "
        "offer.discount_pct: the template cross_sell/bundle_offer states it, "
        "the step's offer does not define it"
    )
    assert captured.out == ""


def test_steps_are_checked_against_the_templates_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator's own templates: a field no shipped step defines is reported, and a
    step whose template is missing is too."""
    templates = tmp_path / "templates"
    (templates / "win_back").mkdir(parents=True)
    (templates / "win_back" / "offer.txt.j2").write_text("{{ offer.code }}: {{ offer.months }}")
    (templates / "win_back" / "we_miss_you.txt.j2").write_text("Hello")
    (templates / "win_back" / "personal_call.txt.j2").write_text("Call")
    book = tmp_path / "win_back.yaml"
    book.write_text((SHIPPED / "win_back.yaml").read_text())
    assert main(["playbooks", "validate", str(book), "--templates", str(templates)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"tenure: invalid playbook: {book}: playbook win_back, step offer: offer.code: "
        "the template win_back/offer states it, the step's offer does not define it",
        f"tenure: invalid playbook: {book}: playbook win_back, step last_chance: template "
        f"win_back/last_chance: no template 'win_back/last_chance' under {templates}",
    ]
