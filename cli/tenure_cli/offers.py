"""Playbook offers against the notifier's templates: the check that needs both services.

A step's ``offer`` block (orchestrator playbook YAML) is what its messages state as
``offer.<name>`` (notifier templates). Neither service imports the other, so the join
lives here, in the command above both: ``tenure playbooks validate`` reports a template
that reads a field its step does not define, and ``tenure templates render``/``check``
render each step with its playbook's offer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.cli import CliError
from common.messages import OfferValue
from notifier import cli as notifier_cli
from notifier.domain.render import TEMPLATES, Renderer, RenderError
from orchestrator import cli as orchestrator_cli
from orchestrator.domain.playbook import SHIPPED, Playbook, PlaybookError, load_playbooks


def offer_problems(book: Playbook, templates: Path | None = None) -> list[str]:
    """One line per step of ``book`` whose template reads an ``offer`` field the step
    does not define (or whose template cannot be read), naming playbook, step and field."""
    renderer = Renderer(templates or TEMPLATES)
    problems = []
    for step in book.steps:
        where = f"playbook {book.name}, step {step.id}"
        try:
            needed = renderer.offer_fields(step.template)
        except RenderError as exc:
            problems.append(f"{where}: template {step.template}: {exc}")
            continue
        for field in sorted(needed - set(step.offer)):
            problems.append(
                f"{where}: offer.{field}: the template {step.template} states it, "
                "the step's offer does not define it"
            )
    return problems


def step_offers(folder: Path | None = None) -> dict[str, dict[str, OfferValue]]:
    """Every step's offer of the playbooks in ``folder`` (default: shipped), by template."""
    try:
        books = load_playbooks(folder or SHIPPED)
    except PlaybookError as exc:
        raise CliError(f"--playbooks: {exc}") from None
    return {step.template: dict(step.offer) for book in books.values() for step in book.steps}


def register_playbooks(parser: argparse.ArgumentParser) -> None:
    """Validate playbook files (YAML) as the orchestrator loads them."""
    orchestrator_cli.register_playbooks(parser, step_check=offer_problems)


def register_templates(parser: argparse.ArgumentParser) -> None:
    """List, check and preview the notifier's message templates."""
    notifier_cli.register_templates(parser, offers=step_offers)
