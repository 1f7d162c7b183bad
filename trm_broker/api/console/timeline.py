"""A case transfer's messages as the console's timeline shows them (issue 20): who sent
what to whom, when the broker accepted it, when it was delivered and answered, and which
steps came later than the workflow's deadlines. Metadata only.

No deadline is set here: each is the domain's own (``workflow.deadlines``, the deadlines
whose missing raises an alert), asked of the case's state as it stood before the step that
meets it; and what the case still waits for is ``next_steps.deadlines``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from trm_broker.domain import next_steps, workflow
from trm_broker.domain.case_state import CaseTransfer, Rules, Stage
from trm_broker.domain.messages import DeliveryStatus, MessageType
from trm_broker.store.models import Delivery, Message

#: The deadline each kind of message meets (``workflow.Deadline.name``).
MEETS = {
    MessageType.RECEPTION_CONFIRMATION: "reception_due",
    MessageType.CASE_MONITORING: "monitoring_due",
}


@dataclass(frozen=True)
class TimelineStep:
    message_id: str
    type: str
    sender: str
    recipient: str
    accepted_at: datetime
    #: The last push attempt, or when the recipient's node fetched it.
    delivered_at: datetime | None
    delivery_status: str
    answered_at: datetime | None
    since_before: timedelta | None
    since_referral: timedelta | None
    #: The workflow's deadline this step met or missed, and by when it was due.
    deadline: str | None = None
    due_at: datetime | None = None
    late: bool = False


def _due(case: CaseTransfer, name: str, rules: Rules) -> datetime | None:
    """When ``case`` (a state it was in) had to have the step ``name`` by."""
    return next((d.due_at for d in workflow.deadlines(case, rules) if d.name == name), None)


def steps(
    messages: Sequence[tuple[Message, Delivery | None]],
    case: CaseTransfer | None,
    rules: Rules,
) -> list[TimelineStep]:
    """The case's messages in acceptance order, each measured against its deadline."""
    found: list[TimelineStep] = []
    referred: datetime | None = None
    before: datetime | None = None
    last_monitoring: datetime | None = None
    for message, delivery in messages:
        at = message.accepted_at
        if message.type is MessageType.REFERRAL and referred is None:
            referred = at
        step = TimelineStep(
            message_id=message.id,
            type=message.type.value,
            sender=message.sender_id,
            recipient=message.recipient_id,
            accepted_at=at,
            delivered_at=(delivery.fetched_at or delivery.last_attempt_at) if delivery else None,
            delivery_status=(delivery.status if delivery else DeliveryStatus.PENDING).value,
            answered_at=delivery.acknowledged_at if delivery else None,
            since_before=at - before if before is not None else None,
            since_referral=at - referred if referred is not None else None,
        )
        name = MEETS.get(message.type)
        due = None
        if case is not None and name == "reception_due":
            due = _due(replace(case, stage=Stage.RETURN_PREPARED), name, rules)
        elif case is not None and name == "monitoring_due" and case.received_at is not None:
            then = replace(case, stage=Stage.RECEIVED, last_monitoring_at=last_monitoring)
            due = _due(then, name, rules)
            last_monitoring = at
        if due is not None:
            step = replace(step, deadline=name, due_at=due, late=at > due)
        found.append(step)
        before = at
    return found


def waiting(
    case: CaseTransfer | None, now: datetime, rules: Rules
) -> list[tuple[str, datetime, bool]]:
    """What the case waits for at ``now``: (deadline, due at, overdue)."""
    if case is None:
        return []
    return [(d.name, d.due_at, d.overdue) for d in next_steps.deadlines(case, now, rules)]
