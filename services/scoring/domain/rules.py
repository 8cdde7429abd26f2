"""Churn risk (DOMAIN section 3) as pure functions over :class:`CustomerState`.

``score(state, event, model)`` folds one event into the state and returns the new
state, the edge-triggered signal changes and, when the score changed, a snapshot.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.events import Event, IntentEvent, PaymentEvent, SupportEvent
from common.messages import RedFlag, ScoreSnapshot, SignalChange, SignalExplanation, Tier
from scoring.domain.model import ScoringModel
from scoring.domain.state import CustomerState, day_number

COMPETITION_TYPES = frozenset(
    {
        "competitor_visit",
        "alternative_search",
        "competitor_evaluation",
        "competitor_trial",
        "contract_review",
    }
)


def _count(state: CustomerState, counter: str, when: datetime) -> None:
    buckets = state.counters.setdefault(counter, {})
    day = day_number(when)
    buckets[day] = buckets.get(day, 0) + 1


def _set_latest(state: CustomerState, source: str, when: datetime, value: float) -> None:
    previous = state.latest.get(source)
    # Out-of-order events: the newest by event time wins, whatever the arrival order.
    if previous is None or previous[0] <= when.isoformat():
        state.latest[source] = (when.isoformat(), value)


def fold(state: CustomerState, event: Event, model: ScoringModel) -> None:
    """Record what ``event`` says about the customer into ``state`` (in place)."""
    when = event.occurred_at
    negative = model.sentiment.negative_below
    if isinstance(event, SupportEvent):
        if event.type == "ticket_opened":
            _count(state, "ticket_opened", when)
            if event.sentiment is not None and event.sentiment < negative:
                _count(state, "ticket_negative", when)
        elif event.type == "nps_response" and event.score is not None:
            _set_latest(state, "nps", when, event.score)
        elif event.type == "survey_response" and event.score is not None:
            _set_latest(state, "survey", when, event.score)
        elif event.type == "comment" and event.sentiment is not None:
            _set_latest(state, "comment_sentiment", when, event.sentiment)
    elif isinstance(event, IntentEvent):
        if event.type in COMPETITION_TYPES:
            _count(state, event.type, when)
        elif (
            event.type == "social_mention"
            and event.sentiment is not None
            and event.sentiment < negative
        ):
            _count(state, "social_negative", when)
    elif isinstance(event, PaymentEvent):
        invoice = event.invoice_id or "(unnamed)"
        if event.type in ("invoice_overdue", "payment_failed"):
            since = when - timedelta(days=event.days_late or 0)
            current = state.overdue.get(invoice)
            if current is None or since.isoformat() < current:
                state.overdue[invoice] = since.isoformat()
        elif event.type == "invoice_paid":
            state.overdue.pop(invoice, None)
    if state.as_of is None or when.isoformat() > state.as_of:
        state.as_of = when.isoformat()


def prune(state: CustomerState, model: ScoringModel, now: datetime) -> None:
    """Drop daily buckets older than the longest window (bounded memory)."""
    oldest = day_number(now) - model.longest_window_days
    for name, buckets in list(state.counters.items()):
        kept = {d: n for d, n in buckets.items() if d > oldest}
        if kept:
            state.counters[name] = kept
        else:
            del state.counters[name]


def _window_count(state: CustomerState, counter: str, now: datetime, days: int) -> int:
    today = day_number(now)
    return sum(n for d, n in state.counters.get(counter, {}).items() if today - days < d <= today)


@dataclass(frozen=True)
class Evaluation:
    signals: dict[str, SignalExplanation]
    risk_score: float
    tier: Tier
    churn_probability: float
    red_flags: tuple[RedFlag, ...] = field(default_factory=tuple)


def measure(
    state: CustomerState, model: ScoringModel, now: datetime
) -> dict[str, tuple[float | None, float | None, bool]]:
    """Each signal's (value, threshold, active) at ``now``."""
    out: dict[str, tuple[float | None, float | None, bool]] = {}
    for name, spec in model.signals.items():
        if spec.rule in ("count_above", "count_at_least"):
            assert spec.counter and spec.window_days and spec.threshold is not None
            count = _window_count(state, spec.counter, now, spec.window_days)
            active = (
                count > spec.threshold if spec.rule == "count_above" else count >= spec.threshold
            )
            out[name] = (count, spec.threshold, active)
        elif spec.rule == "latest_below":
            assert spec.source and spec.threshold is not None
            latest = state.latest.get(spec.source)
            if latest is None:
                out[name] = (None, spec.threshold, False)
            else:
                out[name] = (latest[1], spec.threshold, latest[1] < spec.threshold)
        elif spec.rule == "invoice_late":
            assert spec.threshold is not None
            late = [
                (now - datetime.fromisoformat(since)).total_seconds() / 86400
                for since in state.overdue.values()
            ]
            days_late = round(max(late), 2) if late else 0.0
            out[name] = (days_late, spec.threshold, days_late > spec.threshold)
        else:
            out[name] = (None, None, False)
    return out


def tier_for(active_count: int, model: ScoringModel) -> Tier:
    if active_count >= model.tiers.high_from:
        return "high"
    if active_count >= model.tiers.medium_from:
        return "medium"
    return "low"


def probability_for(tier: Tier, risk_score: float, model: ScoringModel) -> float:
    """Place risk_score/100 inside the tier's probability range."""
    low, high = {
        "low": model.probability.low,
        "medium": model.probability.medium,
        "high": model.probability.high,
    }[tier]
    return low + (high - low) * risk_score / 100


def evaluate(state: CustomerState, model: ScoringModel, now: datetime) -> Evaluation:
    measured = measure(state, model, now)
    active = {
        name: SignalExplanation(
            name=name,
            group=model.signals[name].group,
            value=value,
            threshold=threshold,
            contribution=round(model.contribution(name), 4),
        )
        for name, (value, threshold, on) in measured.items()
        if on
    }
    risk = min(100.0, round(sum(s.contribution for s in active.values()), 4))
    tier = tier_for(len(active), model)
    probability = probability_for(tier, risk, model)
    flags = []
    nps = state.latest.get("nps")
    for flag in model.red_flags:
        if not all(s in active for s in flag.signals):
            continue
        if flag.nps_below is not None and (nps is None or nps[1] >= flag.nps_below):
            continue
        flags.append(RedFlag(name=flag.name, signals=flag.signals, floor=flag.floor))
        probability = max(probability, flag.floor)
    return Evaluation(active, risk, tier, round(probability, 4), tuple(flags))


@dataclass(frozen=True)
class Outcome:
    state: CustomerState
    changes: tuple[SignalChange, ...] = ()
    snapshot: ScoreSnapshot | None = None
    duplicate: bool = False


def _fingerprint(ev: Evaluation) -> str:
    parts = [f"{ev.risk_score}|{ev.tier}|{ev.churn_probability}"]
    parts += [f"{s.name}={s.value}" for s in sorted(ev.signals.values(), key=lambda s: s.name)]
    parts += [f.name for f in ev.red_flags]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def reevaluate(state: CustomerState, model: ScoringModel, now: datetime) -> Outcome:
    """Evaluate at ``now`` and report what changed since the last emitted score."""
    state = copy.deepcopy(state)
    prune(state, model, now)
    ev = evaluate(state, model, now)
    changes: list[SignalChange] = []
    for name, sig in ev.signals.items():
        if name not in state.active:
            changes.append(
                SignalChange(
                    customer_id=state.customer_id,
                    occurred_at=now,
                    change="signal_on",
                    name=name,
                    value=sig.value,
                    threshold=sig.threshold,
                )
            )
    for name in state.active:
        if name not in ev.signals:
            changes.append(
                SignalChange(
                    customer_id=state.customer_id,
                    occurred_at=now,
                    change="signal_off",
                    name=name,
                )
            )
    if ev.tier != state.tier:
        changes.append(
            SignalChange(
                customer_id=state.customer_id,
                occurred_at=now,
                change="tier_changed",
                name="tier",
                previous=state.tier,
                current=ev.tier,
            )
        )
    state.active = {name: sig.value for name, sig in ev.signals.items()}
    state.tier = ev.tier
    fingerprint = _fingerprint(ev)
    snapshot = None
    if fingerprint != state.last_snapshot:
        state.last_snapshot = fingerprint
        snapshot = ScoreSnapshot(
            customer_id=state.customer_id,
            as_of=now,
            risk_score=ev.risk_score,
            tier=ev.tier,
            churn_probability=ev.churn_probability,
            signals=tuple(sorted(ev.signals.values(), key=lambda s: -s.contribution)),
            red_flags=ev.red_flags,
            events_counted=state.events_counted,
        )
    return Outcome(state=state, changes=tuple(changes), snapshot=snapshot)


def score(state: CustomerState, event: Event, model: ScoringModel) -> Outcome:
    """Fold one event and re-evaluate at its event time (or the newest seen, if later).

    Idempotent per ``event_id``: a duplicate returns ``duplicate=True`` and changes nothing.
    """
    if event.event_id in state.seen:
        return Outcome(state=state, duplicate=True)
    state = copy.deepcopy(state)
    state.seen.append(event.event_id)
    del state.seen[: -model.dedup_ids_per_customer]
    fold(state, event, model)
    state.events_counted += 1
    assert state.as_of is not None
    return reevaluate(state, model, max(event.occurred_at, datetime.fromisoformat(state.as_of)))
