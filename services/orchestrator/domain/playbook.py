"""Playbooks as data: the YAML schema, validated when loaded (file, field and reason on error).

A playbook declares its trigger (a signal held for a while, an event, a score
threshold, or the outcome of another playbook's journey), who is eligible, its
steps (offset from the trigger or from an earlier step's send, channel, template,
optional wait-for-event branch), its exits, its lane and priority (a higher priority
takes a capped slot first), the re-entry cooldown, the holdout share, the goal and the
attribution window. Every number lives in the file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.datafiles import load_yaml
from orchestrator.domain.errors import OrchestratorError

Channel = Literal["email", "in_app", "webhook"]
Lane = Literal["retention", "expansion", "lifecycle"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
DeliveryStatus = Literal[
    "sent", "failed", "bounced", "opened", "clicked", "replied", "unsubscribed", "read", "dismissed"
]
ScoreField = Literal["churn_probability", "risk_score", "feature_adoption", "health_score"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- triggers --------------------------------------------------------------------------


class ScoreTrigger(_Strict):
    """Start when a score snapshot's ``field`` is strictly above ``above``."""

    source: Literal["score"]
    field: ScoreField = "churn_probability"
    above: float


class SignalTrigger(_Strict):
    """Start when one of ``signals`` turns on; with ``held``, only once it has stayed on
    that long (its signal_off disarms it; a held trigger takes exactly one signal)."""

    source: Literal["signal"]
    signals: tuple[Name, ...] = Field(min_length=1)
    held: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _held_needs_one_signal(self) -> SignalTrigger:
        if self.held < timedelta(0):
            raise ValueError("held must not be negative")
        if self.held > timedelta(0) and len(self.signals) != 1:
            raise ValueError("a held trigger takes exactly one signal")
        return self


class EventTrigger(_Strict):
    """Start on a product event of one of ``types`` (e.g. subscription_cancelled)."""

    source: Literal["event"]
    types: tuple[Name, ...] = Field(min_length=1)


class JourneyTrigger(_Strict):
    """Start when a journey of ``playbook`` ends with one of ``reasons`` (e.g. re-engaged)."""

    source: Literal["journey"]
    playbook: Name
    reasons: tuple[Name, ...] = Field(min_length=1)


Trigger = Annotated[
    ScoreTrigger | SignalTrigger | EventTrigger | JourneyTrigger, Field(discriminator="source")
]


# --- exits -------------------------------------------------------------------------------


class DeliveryExit(_Strict):
    """Exit on a delivery outcome; ``any_message``: of any message to the customer, not
    only this journey's (an open of any email shows engagement)."""

    reason: Name
    source: Literal["delivery"]
    statuses: tuple[DeliveryStatus, ...] = Field(min_length=1)
    any_message: bool = False


class ScoreExit(_Strict):
    """Exit when a score snapshot's ``field`` is below ``below`` or at least ``at_least``."""

    reason: Name
    source: Literal["score"]
    field: ScoreField = "churn_probability"
    below: float | None = None
    at_least: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ScoreExit:
        if (self.below is None) == (self.at_least is None):
            raise ValueError("a score exit needs exactly one of below or at_least")
        return self


class EventExit(_Strict):
    """Exit on a product event; ``plans`` / ``products`` narrow it (e.g. upgraded to pro)."""

    reason: Name
    source: Literal["event"]
    types: tuple[Name, ...] = Field(min_length=1)
    plans: tuple[Name, ...] = ()
    products: tuple[Name, ...] = ()


class SignalExit(_Strict):
    """Exit when ``signal`` ``becomes`` inactive (turned off) or active (turned on)."""

    reason: Name
    source: Literal["signal"]
    signal: Name
    becomes: Literal["active", "inactive"] = "inactive"


Exit = Annotated[DeliveryExit | ScoreExit | EventExit | SignalExit, Field(discriminator="source")]


# --- eligibility, steps, the playbook ----------------------------------------------------


class Eligibility(_Strict):
    """Who may enter. Empty lists mean anyone."""

    plans: tuple[Name, ...] = ()
    segments: tuple[Literal["high", "medium", "low"], ...] = ()
    consent: tuple[Literal["email", "in_app"], ...] = ()
    not_purchased: tuple[Name, ...] = Field(
        default=(), description="Products the customer must not have bought."
    )
    subscription: tuple[Literal["active", "cancelled"], ...] = Field(
        default=(), description="Subscription states allowed (from payment events)."
    )


Revenue = Literal["amount", "mrr_delta", "mrr_after", "none"]


class Conversion(_Strict):
    """The payment events that meet the playbook's goal, and the revenue each one brings.

    ``types`` (narrowed by ``plans`` / ``products`` as for exits) are matched against the
    payment events the orchestrator consumes. ``revenue``: the event's ``amount`` (a
    purchase, an invoice), ``mrr_delta`` (``mrr_after - mrr_before`` of an upgrade, or
    ``amount`` when the MRR fields are missing), ``mrr_after`` (the MRR won back), or
    ``none`` (the conversion is counted without revenue).
    """

    types: tuple[Name, ...] = Field(min_length=1)
    plans: tuple[Name, ...] = ()
    products: tuple[Name, ...] = ()
    revenue: Revenue = "amount"


class Wait(_Strict):
    """Wait-for-event before a step: the step's offset is the timeout.

    If one of ``for_`` (delivery statuses or event types) was seen since the journey
    started, ``on_event`` is the branch taken (skip the step, or exit the journey);
    otherwise (the timeout) the step is sent.
    """

    for_: tuple[Name, ...] = Field(alias="for", min_length=1)
    on_event: Literal["skip", "exit"]
    reason: Name


class Step(_Strict):
    id: Name
    after: timedelta = Field(
        description="Offset (ISO 8601) from the moment the trigger fired, or with ``from``"
        " from the moment that earlier step was sent (or skipped)."
    )
    from_: Name | None = Field(
        default=None,
        alias="from",
        description="An earlier step of the playbook this step's offset counts from: its "
        "timer is set when that step is sent or skipped, however long the cap or quiet "
        "hours held it (a call about an offer, 'no answer in 3 days').",
    )
    channel: Channel
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$")
    recipient: Literal["customer", "csm", "escalation"] = "customer"
    priority: Literal["normal", "high"] = "normal"
    marketing: bool = Field(default=True, description="Marketing steps need consent, are capped.")
    offer: dict[str, str | int | float] = Field(default_factory=dict)
    wait: Wait | None = None

    @model_validator(mode="after")
    def _recipient_fits_channel(self) -> Step:
        if self.channel == "webhook" and self.recipient == "customer":
            raise ValueError("a webhook step goes to csm or escalation, not the customer")
        if self.channel != "webhook" and self.recipient != "customer":
            raise ValueError(f"a {self.channel} step goes to the customer")
        if self.channel == "webhook" and self.marketing:
            raise ValueError("a CSM task (webhook) is not marketing: set marketing: false")
        if self.after < timedelta(0):
            raise ValueError("after must not be negative")
        return self


class Playbook(_Strict):
    name: Name
    lane: Lane
    priority: int = Field(ge=0, le=1000)
    goal: Name
    attribution_window: timedelta = Field(description="After the last step.")
    conversion: Conversion | None = Field(
        default=None,
        description="Payment events that meet the goal, attributed with their revenue.",
    )
    cooldown: timedelta
    holdout: float = Field(ge=0, lt=1, description="Share of eligible customers in control.")
    trigger: Trigger
    eligibility: Eligibility = Eligibility()
    exits: tuple[Exit, ...] = ()
    variants: tuple[Name, ...] = ()
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _steps_ordered_and_unique(self) -> Playbook:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique: {ids}")
        for index, step in enumerate(self.steps):
            if step.from_ is not None and step.from_ not in ids[:index]:
                raise ValueError(
                    f"step {step.id}: from: {step.from_!r} is not a step listed before it"
                )
        offsets = [self.nominal_offset(s.id) for s in self.steps]
        if offsets != sorted(offsets):
            raise ValueError("steps must be listed in the order of their offsets")
        for step in self.steps:
            if not step.template.startswith(f"{self.name}/"):
                raise ValueError(f"step {step.id}: template must start with {self.name}/")
        if self.attribution_window < timedelta(0):
            raise ValueError("attribution_window must not be negative")
        if isinstance(self.trigger, JourneyTrigger) and self.trigger.playbook == self.name:
            raise ValueError("trigger.playbook: a playbook cannot be triggered by itself")
        return self

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"{self.name} has no step {step_id!r}")

    def is_last(self, step_id: str) -> bool:
        return self.steps[-1].id == step_id

    def nominal_offset(self, step_id: str) -> timedelta:
        """The step's offset from the trigger when every step goes when it is due (a step
        timed ``from`` another adds that step's nominal offset)."""
        step = self.step(step_id)
        base = self.nominal_offset(step.from_) if step.from_ else timedelta(0)
        return base + step.after

    def follow_ups(self, step_id: str) -> tuple[Step, ...]:
        """The steps timed from ``step_id``'s send (``from: step_id``), in order."""
        return tuple(s for s in self.steps if s.from_ == step_id)

    @property
    def admits_cancelled(self) -> bool:
        """Whether a customer whose subscription is cancelled may be in this playbook
        (its eligibility allows ``cancelled``, or says nothing about subscriptions)."""
        allowed = self.eligibility.subscription
        return not allowed or "cancelled" in allowed


class PlaybookError(OrchestratorError):
    """A playbook file is invalid."""


def load_playbook(path: Path) -> Playbook:
    """Read and validate one playbook file; :class:`PlaybookError` names file, field and reason."""
    book: Playbook = load_yaml(path, Playbook, PlaybookError)
    return book


def load_playbooks(folder: Path) -> dict[str, Playbook]:
    """Every ``*.yaml`` playbook of ``folder``, by name; checks references between them.

    Raises :class:`PlaybookError` naming the file (or folder), field and reason.
    """
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise PlaybookError(f"{folder}: no playbook files (*.yaml)")
    books = {p: load_playbook(p) for p in paths}
    by_name: dict[str, Playbook] = {}
    for path, book in books.items():
        if book.name in by_name:
            raise PlaybookError(f"{path}: name: another file already defines {book.name!r}")
        by_name[book.name] = book
    for path, book in books.items():
        trigger = book.trigger
        if isinstance(trigger, JourneyTrigger) and trigger.playbook not in by_name:
            raise PlaybookError(f"{path}: trigger.playbook: no playbook named {trigger.playbook!r}")
    return by_name


SHIPPED = Path(__file__).parent.parent / "playbooks"
