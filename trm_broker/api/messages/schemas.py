"""Wire models of message acceptance and status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class SignedObject(BaseModel):
    """A JWS in flattened JSON serialisation (RFC 7515 §7.2.2)."""

    protected: str
    payload: str
    signature: str


class ReceiptOut(BaseModel):
    """The broker's answer to an accepted envelope: its signed receipt."""

    message_id: str
    status: Literal["accepted"] = "accepted"
    receipt: SignedObject = Field(
        description="JWS (typ trm-receipt+jws) by the broker's key over message_id, "
        "envelope_digest, accepted_at and ledger_index."
    )


class DeliveryOut(BaseModel):
    status: Literal["pending", "acknowledged"]
    attempts: int
    last_attempt_at: datetime | None
    last_error: str | None
    acknowledged_at: datetime | None


class MessageStatusOut(BaseModel):
    """Where a message is; never its content."""

    message_id: str
    status: Literal["accepted", "acknowledged"]
    accepted_at: datetime
    envelope_digest: str
    delivery: DeliveryOut
