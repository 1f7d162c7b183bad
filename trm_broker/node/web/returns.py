"""A receiving organisation's returns (issue 19): the cases whose return plan was sent to it,
each with where it stands, what to do next and the reminders it is due, read from the case
view (node/case_view.py) as the JSON API shows it to the organisation.

Where a return stands is the broker's state of the case (its stage, the organisation's
answer to the plan, its contact before travel); when a monitoring report is due, the
broker's deadlines (``monitoring_due``, ``reception_due``). Nothing here is stored: a return
is a case of the organisation's with a ``return_preparation`` received, sealed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import (
    Escort,
    FamilyTracing,
    Health,
    ReintegrationPlan,
    ReturnPreparationPayload,
    TravelDocuments,
)
from trm_broker.node.sent_schemas import CaseViewOut, TimelineEntry

#: A report due within this time is shown as due (a reminder); past it, as overdue.
REMINDER_AHEAD = timedelta(days=14)

#: The order a receiving organisation's steps come in, and so what it does next.
_ACTIONS = (
    MessageType.RECEPTION_PLAN_RESPONSE,
    MessageType.PRE_DEPARTURE_CONTACT,
    MessageType.RECEPTION_CONFIRMATION,
    MessageType.CASE_MONITORING,
)


@dataclass(frozen=True)
class Action:
    """A step the organisation may send now, to ``recipient`` (the plan's sender first)."""

    type: str
    recipient: str


@dataclass(frozen=True)
class Reminder:
    """A deadline of the return: ``late`` once it is past."""

    name: str
    due_at: datetime
    late: bool


@dataclass
class Return:
    """A return the organisation was designated for, as its pages show it."""

    case_ref: str
    #: The return plan in force (the latest received), and its message.
    plan: dict[str, Any]
    plan_message_id: str
    plan_from: str
    planned_arrival: datetime | None
    #: ``to_answer``, ``cannot_receive``, ``awaiting_travel``, ``arrived``, ``not_received``,
    #: ``closed``, or ``unknown`` (the exchange could not be asked).
    state: str
    readiness: str | None = None
    contacted_at: datetime | None = None
    received_at: datetime | None = None
    actions: list[Action] = field(default_factory=list)
    reminders: list[Reminder] = field(default_factory=list)
    #: What the organisation sent in the case, with each message's status.
    sent: list[TimelineEntry] = field(default_factory=list)

    @property
    def next_action(self) -> Action | None:
        """What to do next: a step not done yet (the plan answered, the person met before
        travel), else the first step allowed."""
        done = set()
        if self.readiness is not None:
            done.add(MessageType.RECEPTION_PLAN_RESPONSE.value)
        if self.contacted_at is not None:
            done.add(MessageType.PRE_DEPARTURE_CONTACT.value)
        for action in self.actions:
            if action.type not in done:
                return action
        return self.actions[-1] if self.actions else None

    @property
    def monitoring(self) -> str | None:
        """``due`` or ``overdue`` when a monitoring report is; else None."""
        for reminder in self.reminders:
            if reminder.name == "monitoring_due":
                return "overdue" if reminder.late else "due"
        return None

    @property
    def late(self) -> bool:
        return any(r.late for r in self.reminders)


def _plan_entry(view: CaseViewOut) -> TimelineEntry | None:
    """The latest return plan sealed to the reader that designates it."""
    plans = [
        entry
        for entry in view.timeline
        if entry.direction == "received"
        and entry.type == MessageType.RETURN_PREPARATION.value
        and entry.recipient == view.reader
        and entry.received is not None
        # The destination focal point is sent the plan too: designated is the one it names.
        and (entry.received.header or {}).get("receiving_org") == view.reader
    ]
    return plans[-1] if plans else None


#: The plan's groups shown even when the plan leaves them out ("not stated" in each).
_GROUPS: dict[str, type[BaseModel]] = {
    "escort": Escort,
    "travel_documents": TravelDocuments,
    "health": Health,
    "reintegration_plan": ReintegrationPlan,
    "family_tracing": FamilyTracing,
}


def readable_plan(payload: dict[str, Any]) -> dict[str, Any]:
    """The plan with every member present (None, or an empty list, when not stated), so
    the page says what the plan leaves out."""
    try:
        plan = ReturnPreparationPayload.model_validate(payload).model_dump(mode="json")
    except ValidationError:  # checked at receipt; an older payload shows what it has
        plan = dict(payload)
    for name, model in _GROUPS.items():
        if not isinstance(plan.get(name), dict):
            plan[name] = model().model_dump(mode="json")
    for name in ("route", "languages"):
        plan.setdefault(name, [])
    for name in ("travel_date", "contact_person", "guardian", "best_interests_determination"):
        plan.setdefault(name, None)
    plan.setdefault("notes", None)
    return plan


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def return_of(
    view: CaseViewOut,
    steps: list[dict[str, Any]],
    deadlines: list[dict[str, Any]],
    now: datetime,
) -> Return | None:
    """The case as a return the reader was designated for; None if it was sent no plan.

    ``steps`` and ``deadlines`` are the reader's, as the case page reads them from the view.
    """
    entry = _plan_entry(view)
    if entry is None or entry.received is None:
        return None
    plan = entry.received.payload or {}
    header = entry.received.header or {}
    broker = view.broker or {}
    stated = broker.get("state")
    state: dict[str, Any] = stated if isinstance(stated, dict) else {}
    found = Return(
        case_ref=view.case_ref,
        plan=readable_plan(plan),
        plan_message_id=entry.message_id,
        plan_from=entry.sender,
        planned_arrival=_moment(header.get("planned_arrival") or plan.get("planned_arrival")),
        state=_state_of(view.stage, state, view.reader),
        readiness=state.get("readiness") if isinstance(state.get("readiness"), str) else None,
        contacted_at=_moment(state.get("pre_departure_contact_at")),
        received_at=_moment(state.get("received_at")),
        sent=[e for e in view.timeline if e.direction == "sent"],
    )
    found.actions = _actions(steps, entry.sender)
    found.reminders = [
        Reminder(name, due, bool(d.get("overdue")))
        for d in deadlines
        if (name := str(d.get("name"))) in ("monitoring_due", "reception_due")
        and (due := _moment(d.get("due_at"))) is not None
        and (d.get("overdue") or due - now <= REMINDER_AHEAD)
    ]
    return found


def _state_of(stage: str | None, state: dict[str, Any], reader: str) -> str:
    if stage is None:
        return "unknown"
    if stage == "return_prepared":
        if state.get("receiving_org") not in (None, reader):
            return "closed"  # a new plan designated another organisation
        readiness = state.get("readiness")
        if readiness is None:
            return "to_answer"
        return "cannot_receive" if readiness == "cannot_receive" else "awaiting_travel"
    if stage == "received":
        return "arrived"
    if stage == "not_received":
        return "not_received"
    return "closed"


def _actions(steps: list[dict[str, Any]], plan_from: str) -> list[Action]:
    """The steps allowed now, in the order of a return, each to the plan's sender when it
    may go there (else to the other focal point)."""
    allowed = [s for s in steps if s.get("allowed")]
    found = []
    for kind in _ACTIONS:
        to = [str(s.get("recipient")) for s in allowed if s.get("type") == kind.value]
        if to:
            found.append(Action(kind.value, plan_from if plan_from in to else to[0]))
    return found
