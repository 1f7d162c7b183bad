"""Wire models of cases and alerts: metadata only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from trm_broker.domain.messages import DataCategory, DeliveryStatus, MessageType
from trm_broker.domain.next_steps import CaseRole


class TimelineItem(BaseModel):
    message_id: str
    type: str
    sender: str
    recipient: str
    accepted_at: datetime
    consent_ref: str | None
    payload_purged_at: datetime | None
    delivery_status: DeliveryStatus = Field(
        description="`pending` until the recipient's node answers; `acknowledged` (its facts "
        "now count for the safeguards) or `rejected` (they never will), both final; "
        "`dead_lettered`; `dropped` (the consent was withdrawn). Wait for `acknowledged` "
        "before a step that depends on it (a return preparation on its risk assessment)."
    )
    answered_at: datetime | None = Field(
        description="When the recipient's signed acknowledgement or rejection was recorded."
    )


class AlertOut(BaseModel):
    id: str
    case_ref: str
    kind: str = Field(
        description="reception_overdue, monitoring_overdue, delivery_dead_lettered, "
        "consent_withdrawn or header_payload_mismatch."
    )
    parties: list[str]
    raised_at: datetime
    closed_at: datetime | None


class ConsentSummary(BaseModel):
    id: str
    registered_by: str
    given_by: str
    purposes: list[MessageType] = Field(description="The message types it covers.")
    recipients: list[str] = Field(description="The participants data may go to under it.")
    recipient_countries: list[str] = Field(description="Or every participant of these.")
    data_categories: list[DataCategory]
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None


class NextStepOut(BaseModel):
    type: MessageType
    recipient: str
    allowed: bool = Field(
        description="Whether the workflow accepts it now (given a payload that says what the "
        "safeguards ask, e.g. a planned arrival far enough ahead)."
    )
    consent_needed: bool = Field(
        description="Whether it cites a consent: not a consent_withdrawal (it names the "
        "consent it withdraws); a case_closure only if it carries personal data."
    )
    consents: list[str] = Field(
        description="The consents that would cover it now (type, recipient, validity; in a "
        "child's case, a guardian's): cite one as consent_ref. The message's data categories "
        "must be among the consent's too."
    )
    rule: str | None = Field(
        description="When not allowed: the workflow rule that refuses it now (the `rule` of "
        "the 409 `workflow-rule` it would get)."
    )
    detail: str | None = Field(description="When not allowed: that rule in one sentence.")
    window_seconds: int | None = Field(
        None,
        description="When the rule has a window (a risk assessment's age, the notice before "
        "arrival, the monitoring period): its length in seconds, as `window_seconds` of the "
        "409 it would get; else null.",
    )


class PartyNextSteps(BaseModel):
    participant: str
    role: CaseRole
    steps: list[NextStepOut] = Field(
        description="By type, then recipient. Types this party never sends in the case, and "
        "steps done for good, are left out."
    )


class DeadlineOut(BaseModel):
    name: str = Field(
        description="`reception_due`: the receiving organisation's reception_confirmation; "
        "`monitoring_due`: the next case_monitoring report, during the monitoring period."
    )
    due_at: datetime
    overdue: bool
    alert: str = Field(description="The alert raised once it is overdue.")


class CaseOut(BaseModel):
    case_ref: str
    stage: str
    state: dict[str, Any] = Field(description="The workflow's state of the case transfer.")
    timeline: list[TimelineItem]
    consents: list[ConsentSummary]
    alerts: list[AlertOut]
    next_steps: list[PartyNextSteps] = Field(
        description="What each party of the case may send next, now, under which consents, "
        "and what blocks what it may not send yet (docs/design.md §6)."
    )
    deadlines: list[DeadlineOut] = Field(
        description="What the case waits for, by when, and whether it is overdue."
    )


class AlertList(BaseModel):
    alerts: list[AlertOut]
