"""The step's playbook offer travels with its notification (``context["offer"]``), so
that a figure changed in the YAML is the figure the message states."""

from __future__ import annotations

from datetime import timedelta

from common.messages import Notification
from orchestrator.domain.playbook import SHIPPED, Playbook, load_playbooks
from orchestrator.settings import OrchestratorSettings
from tests.unit.orchestrator.sim import Sim
from tests.unit.orchestrator.test_timelines import CUSTOMER, T0, score

BOOKS = load_playbooks(SHIPPED)
RULES = OrchestratorSettings().rules()


def with_offer(book: Playbook, step_id: str, offer: dict[str, int]) -> Playbook:
    steps = tuple(
        s.model_copy(update={"offer": offer}) if s.id == step_id else s for s in book.steps
    )
    return book.model_copy(update={"steps": steps})


async def sent(books: dict[str, Playbook]) -> dict[str, Notification]:
    """The retention_offer journey's notifications, by step, after five days."""
    sim = Sim(books, CUSTOMER, RULES, T0)
    await sim.receive(score(churn_probability=0.9)(sim.now))
    await sim.advance_to(sim.now + timedelta(days=5))
    found = [Notification.model_validate_json(row.payload) for row in sim.stores.tables.outbox]
    return {n.step: n for n in found if n.playbook == "retention_offer"}


async def test_the_notification_carries_the_steps_offer() -> None:
    notes = await sent(BOOKS)
    assert notes["offer"].context["offer"] == {
        "discount_pct": 30,
        "discount_months": 3,
        "upgrade_months": 1,
    }
    assert notes["offer"].offer == BOOKS["retention_offer"].step("offer").offer
    assert notes["retention_call"].offer == {}
    assert not any(k.startswith("offer_") for k in notes["offer"].context)


async def test_a_figure_changed_in_the_playbook_is_the_one_sent() -> None:
    changed = with_offer(
        BOOKS["retention_offer"],
        "offer",
        {"discount_pct": 20, "discount_months": 6, "upgrade_months": 2},
    )
    notes = await sent({**BOOKS, "retention_offer": changed})
    assert notes["offer"].offer == {"discount_pct": 20, "discount_months": 6, "upgrade_months": 2}
