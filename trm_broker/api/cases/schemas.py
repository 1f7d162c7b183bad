"""Wire models of cases and alerts: metadata only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class TimelineItem(BaseModel):
    message_id: str
    type: str
    sender: str
    recipient: str
    accepted_at: datetime
    consent_ref: str | None
    payload_purged_at: datetime | None
    delivery: str | None = Field(
        None,
        description="Where its delivery stands: pending, acknowledged (the recipient's node"
        " opened and stored it), rejected, dead_lettered or dropped.",
    )


class AlertOut(BaseModel):
    id: str
    case_ref: str
    kind: str = Field(description="reception_overdue, monitoring_overdue or consent_withdrawn.")
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
