"""Wire models of the node's local case-worker API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import (
    CaseClosureHeader,
    CaseMonitoringHeader,
    ConsentWithdrawalHeader,
    DataCategory,
    MessageType,
    ReceptionConfirmationHeader,
    ReferralHeader,
    ReferralResponseHeader,
    ReturnPreparationHeader,
    RiskAssessmentHeader,
)
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.payloads import (
    CaseClosurePayload,
    CaseMonitoringPayload,
    ConsentWithdrawalPayload,
    ReceptionConfirmationPayload,
    ReferralPayload,
    ReferralResponsePayload,
    ReturnPreparationPayload,
    RiskAssessmentPayload,
)


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
    payload: dict[str, Any] = Field(
        description="Personal data: sealed to the recipient. It must conform to the type's "
        "payload schema (contracts/schemas/payloads/)."
    )
    data_categories: list[DataCategory] = Field(default_factory=list)
    consent_ref: str | None = None
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)


class CaseMessage(BaseModel):
    """One message of a case, as a case worker gives it to `POST /cases/{case_ref}/<type>`:
    the type's typed header and payload. The node builds, seals and signs the envelope."""

    model_config = ConfigDict(extra="forbid")
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    sender: str | None = Field(
        None, pattern=PARTICIPANT_ID_PATTERN, description="Needed when the node serves several."
    )
    data_categories: list[DataCategory] = Field(
        default_factory=list, description="What the payload holds; the consent must cover it."
    )
    consent_ref: str | None = None
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)


class ReferralRequest(CaseMessage):
    header: ReferralHeader
    payload: ReferralPayload


class ReferralResponseRequest(CaseMessage):
    header: ReferralResponseHeader
    payload: ReferralResponsePayload


class RiskAssessmentRequest(CaseMessage):
    header: RiskAssessmentHeader
    payload: RiskAssessmentPayload


class ReturnPreparationRequest(CaseMessage):
    header: ReturnPreparationHeader
    payload: ReturnPreparationPayload


class ReceptionConfirmationRequest(CaseMessage):
    header: ReceptionConfirmationHeader
    payload: ReceptionConfirmationPayload


class CaseMonitoringRequest(CaseMessage):
    header: CaseMonitoringHeader
    payload: CaseMonitoringPayload


class CaseClosureRequest(CaseMessage):
    header: CaseClosureHeader
    payload: CaseClosurePayload


class ConsentWithdrawalRequest(CaseMessage):
    header: ConsentWithdrawalHeader = ConsentWithdrawalHeader()
    payload: ConsentWithdrawalPayload = ConsentWithdrawalPayload()


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


class ConsentRequest(BaseModel):
    """A consent to register at the broker (its body is the broker's `POST /v1/consents`
    body, contracts/openapi/broker.json `ConsentIn`), and which participant registers it."""

    model_config = ConfigDict(extra="forbid")
    sender: str | None = Field(None, description="The sending focal point, if several.")
    consent: dict[str, Any]


class Jws(BaseModel):
    """A JWS in flattened JSON serialisation (RFC 7515 §7.2.2)."""

    model_config = ConfigDict(extra="forbid")
    protected: str
    payload: str
    signature: str


class AckOut(BaseModel):
    """The node's answer to a push: its signed acknowledgement (``trm-ack+jws``)."""

    ack: Jws


_JWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["protected", "payload", "signature"],
    "additionalProperties": False,
    "properties": {name: {"type": "string"} for name in ("protected", "payload", "signature")},
}

#: The body of `POST /inbox`, read by the node itself once the broker's signature over the
#: raw bytes verifies; described here for the OpenAPI.
PUSH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "Push",
                    "type": "object",
                    "required": ["envelope", "receipt"],
                    "additionalProperties": False,
                    "properties": {
                        "envelope": {**_JWS_SCHEMA, "description": "The sender's envelope."},
                        "receipt": {**_JWS_SCHEMA, "description": "The broker's receipt."},
                    },
                }
            }
        },
    }
}
