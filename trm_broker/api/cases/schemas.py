"""Wire models of cases and alerts: metadata only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from trm_broker.domain.messages import DeliveryStatus


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
    given_by: str
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None


class CaseOut(BaseModel):
    case_ref: str
    stage: str
    state: dict[str, Any] = Field(description="The workflow's state of the case transfer.")
    timeline: list[TimelineItem]
    consents: list[ConsentSummary]
    alerts: list[AlertOut]


class AlertList(BaseModel):
    alerts: list[AlertOut]
