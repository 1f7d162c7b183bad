"""Wire models of the node's local case-worker API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN


class SendRequest(BaseModel):
    """A message for the node to seal, sign and send. The node builds the envelope."""

    model_config = ConfigDict(extra="forbid")
    type: MessageType
    case_ref: str = Field(pattern=CASE_REF_PATTERN)
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    sender: str | None = Field(
        None, pattern=PARTICIPANT_ID_PATTERN, description="Needed when the node serves several."
    )
    header: dict[str, Any]
    payload: dict[str, Any] = Field(description="Personal data: sealed to the recipient.")
    data_categories: list[DataCategory] = Field(default_factory=list)
    consent_ref: str | None = None
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)


class SentOut(BaseModel):
    message_id: str
    envelope_digest: str
    accepted_at: str
    receipt: dict[str, str]


class ReceivedOut(BaseModel):
    seq: int = Field(description="Arrival order at this node; page with ?after=<seq>.")
    message_id: str
    type: MessageType
    case_ref: str
    sender: str
    recipient: str
    created_at: datetime
    received_at: datetime
    header: dict[str, Any]
    payload: dict[str, Any]


class ReceivedList(BaseModel):
    messages: list[ReceivedOut]
