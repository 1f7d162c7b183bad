"""Wire models of message acceptance and status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from trm_broker.domain.signed_objects import RejectionCode


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
        "envelope_digest, accepted_at and ledger_entry (the digest of the ledger entry "
        "recording the acceptance)."
    )


DeliveryState = Literal["pending", "acknowledged", "rejected", "dead_lettered", "dropped"]
MessageState = Literal[
    "accepted", "delivered", "acknowledged", "rejected", "dead_lettered", "dropped"
]


class DeliveryOut(BaseModel):
    status: DeliveryState
    attempts: int = Field(description="Pushes tried, and answers received through the pull inbox.")
    last_attempt_at: datetime | None
    last_error: str | None = Field(
        description="Why the last push failed, as a code (timeout, http_503, "
        "transport_ConnectError, ack_bad_signature …); never content."
    )
    fetched_at: datetime | None = Field(
        description="When the recipient first fetched it from the pull inbox."
    )
    acknowledged_at: datetime | None = Field(description="When the signed answer was recorded.")
    dead_lettered_at: datetime | None


class RejectionOut(BaseModel):
    """Why the recipient's node rejected a message, from its signed answer (recorded at
    `delivery.acknowledged_at`): locations and kinds of error only, never a value of the
    payload."""

    code: RejectionCode = Field(
        description="`payload-invalid`: the payload does not conform to its type's schema. "
        "`header-payload-mismatch`: the clear header or data categories say other than the "
        "payload."
    )
    reasons: list[str] = Field(
        description="Where, e.g. `payload/immediate_needs/0: not a known code` or "
        "`header/risk_level: does not match the payload`."
    )


class MessageStatusOut(BaseModel):
    """Where a message is; never its content."""

    message_id: str
    status: MessageState = Field(
        description="`accepted`: queued, not yet answered. `delivered`: fetched by the "
        "recipient through the pull inbox, not yet acknowledged. `acknowledged`: the "
        "recipient's signed acknowledgement is recorded. `rejected`: the recipient's node "
        "refused the payload in a signed answer (its schema); final, like `acknowledged`. "
        "`dead_lettered`: retried for TRM_DELIVERY_MAX_AGE_SECONDS without an answer; an "
        "operator may re-queue it. `dropped`: the consent was withdrawn before delivery."
    )
    accepted_at: datetime
    envelope_digest: str
    ledger_index: int | None = Field(
        description="Index of the acceptance's ledger entry; null until the sequencer has "
        "integrated it (within a second)."
    )
    payload_purged_at: datetime | None = Field(
        description="When the sealed payload left the broker (retention or withdrawal)."
    )
    delivery: DeliveryOut
    rejection: RejectionOut | None = Field(
        None,
        description="To the sender only, when the status is `rejected`: the recipient's code "
        "and reasons, so it can fix the payload and send a corrected message.",
    )
