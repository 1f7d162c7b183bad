"""Wire models of the node's local case-worker API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import (
    CaseClosureHeader,
    CaseMonitoringHeader,
    ConsentWithdrawalHeader,
    DataCategory,
    MessageType,
    PreDepartureContactHeader,
    ReceptionConfirmationHeader,
    ReceptionPlanResponseHeader,
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
    PreDepartureContactPayload,
    ReceptionConfirmationPayload,
    ReceptionPlanResponsePayload,
    ReferralPayload,
    ReferralResponsePayload,
    ReturnPreparationPayload,
    RiskAssessmentPayload,
)
from trm_broker.domain.projections import project

_H = TypeVar("_H", bound=BaseModel)

#: The clear header and data categories are the payload's projection (docs/design.md §5).
_HEADER = (
    "Leave it out: the node computes the clear header from the payload "
    "(trm_broker/domain/projections.py), and the recipient's node rejects a header that "
    "says other than the payload. If given, it must be exactly that projection, or the "
    "request is refused (400 header-payload-mismatch)."
)
_CATEGORIES = (
    "Leave it out: the data categories are those of the payload members filled in "
    "(`x-trm-category` in contracts/schemas/payloads/), and the consent must cover them. "
    "If given, they must be exactly those, or the request is refused (400 "
    "header-payload-mismatch)."
)


class SendRequest(BaseModel):
    """A message for the node to seal, sign and send. The node builds the envelope, with the
    clear header and data categories it computes from the payload."""

    model_config = ConfigDict(extra="forbid")
    type: MessageType
    case_ref: str = Field(pattern=CASE_REF_PATTERN)
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    sender: str | None = Field(
        None, pattern=PARTICIPANT_ID_PATTERN, description="Needed when the node serves several."
    )
    header: dict[str, Any] | None = Field(None, description=_HEADER)
    payload: dict[str, Any] = Field(
        description="Personal data: sealed to the recipient. It must conform to the type's "
        "payload schema (contracts/schemas/payloads/)."
    )
    data_categories: list[DataCategory] | None = Field(None, description=_CATEGORIES)
    consent_ref: str | None = None
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)


class CaseMessage(BaseModel):
    """One message of a case, as a case worker gives it to `POST /cases/{case_ref}/<type>`:
    the type's typed payload. The node computes the clear header and data categories from
    the payload, and builds, seals and signs the envelope."""

    model_config = ConfigDict(extra="forbid")
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    sender: str | None = Field(
        None, pattern=PARTICIPANT_ID_PATTERN, description="Needed when the node serves several."
    )
    data_categories: list[DataCategory] | None = Field(None, description=_CATEGORIES)
    consent_ref: str | None = None
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)


class ReferralRequest(CaseMessage):
    header: ReferralHeader | None = Field(None, description=_HEADER)
    payload: ReferralPayload


class ReferralResponseRequest(CaseMessage):
    header: ReferralResponseHeader | None = Field(None, description=_HEADER)
    payload: ReferralResponsePayload


class RiskAssessmentRequest(CaseMessage):
    header: RiskAssessmentHeader | None = Field(None, description=_HEADER)
    payload: RiskAssessmentPayload


class ReturnPreparationRequest(CaseMessage):
    header: ReturnPreparationHeader | None = Field(None, description=_HEADER)
    payload: ReturnPreparationPayload


class ReceptionConfirmationRequest(CaseMessage):
    header: ReceptionConfirmationHeader | None = Field(None, description=_HEADER)
    payload: ReceptionConfirmationPayload


class CaseMonitoringRequest(CaseMessage):
    header: CaseMonitoringHeader | None = Field(None, description=_HEADER)
    payload: CaseMonitoringPayload


class CaseClosureRequest(CaseMessage):
    header: CaseClosureHeader | None = Field(None, description=_HEADER)
    payload: CaseClosurePayload


class ConsentWithdrawalRequest(CaseMessage):
    header: ConsentWithdrawalHeader | None = Field(None, description=_HEADER)
    payload: ConsentWithdrawalPayload = ConsentWithdrawalPayload()


_PROJECTED = (
    "Computed from the payload when left out (trm_broker/domain/projections.py); if given, it"
    " must say what the payload says."
)


def _projected(message_type: MessageType, payload: BaseModel, kind: type[_H]) -> _H:
    """The header of ``message_type`` that ``payload`` projects to (docs/design.md §6)."""
    header = project(message_type, payload, datetime.now(UTC)).header
    if not isinstance(header, kind):
        raise TypeError(f"expected a {kind.__name__}")  # pragma: no cover
    return header


class ReceptionPlanResponseRequest(CaseMessage):
    """The receiving organisation's answer to the return plan it was sent."""

    header: ReceptionPlanResponseHeader | None = Field(None, description=_PROJECTED)
    payload: ReceptionPlanResponsePayload

    @model_validator(mode="after")
    def _header_from_payload(self) -> ReceptionPlanResponseRequest:
        if self.header is None:
            self.header = _projected(
                MessageType.RECEPTION_PLAN_RESPONSE, self.payload, ReceptionPlanResponseHeader
            )
        return self


class PreDepartureContactRequest(CaseMessage):
    """The receiving organisation's contact with the person before travel."""

    header: PreDepartureContactHeader | None = Field(None, description=_PROJECTED)
    payload: PreDepartureContactPayload

    @model_validator(mode="after")
    def _header_from_payload(self) -> PreDepartureContactRequest:
        if self.header is None:
            self.header = _projected(
                MessageType.PRE_DEPARTURE_CONTACT, self.payload, PreDepartureContactHeader
            )
        return self


#: Where a message stands in the node's outbox (docs/node.md, "The outbox").
OutboxStateName = Literal["queued", "receipted", "refused"]


class SentOut(BaseModel):
    message_id: str
    envelope_digest: str
    accepted_at: str
    receipt: dict[str, str]


class PlanToReceivingOrgOut(BaseModel):
    """The same return plan, sent on to the receiving organisation it designates."""

    recipient: str = Field(description="The receiving organisation the payload names.")
    sent: bool = Field(description="Whether the broker accepted the plan for it.")
    message_id: str | None = None
    envelope_digest: str | None = None
    accepted_at: str | None = None
    receipt: dict[str, str] | None = None
    refused: dict[str, Any] | None = Field(
        None,
        description="When not sent: why (problem+json, as the node answers a refusal). The"
        " plan sent to the destination focal point stands; fix what it says and send the plan"
        " again, to the receiving organisation as `recipient`.",
    )
    status: OutboxStateName | None = Field(
        None,
        description="The plan's state in the node's outbox: `queued` (not yet receipted: "
        "`GET /outbox/{message_id}` follows it), `receipted` or `refused`; null when it could "
        "not be queued at all (`refused` says why).",
    )


class ReturnPreparationSentOut(SentOut):
    """The plan as sent to the destination focal point (the fields above) and, sealed to its
    own key, to the receiving organisation it designates (``to_receiving_org``)."""

    to_receiving_org: PlanToReceivingOrgOut


class QueuedOut(BaseModel):
    """A message stored, signed, in the node's outbox: the node submits it to the broker in
    the background, again and again, until it has a receipt or a final refusal. Follow it
    with `GET /outbox/{message_id}`, or send `Prefer: wait=<seconds>` to wait for it."""

    message_id: str
    status: Literal["queued"] = "queued"


class QueuedPlanOut(QueuedOut):
    """A return plan queued for the destination focal point and, after it, for the
    receiving organisation (``to_receiving_org``)."""

    to_receiving_org: PlanToReceivingOrgOut


class OutboxOut(BaseModel):
    """A message this node sent or is sending, and where it stands."""

    seq: int = Field(description="Its place in the outbox; page with ?after=<seq>.")
    message_id: str
    type: MessageType
    case_ref: str
    sender: str
    recipient: str
    state: OutboxStateName = Field(
        description="`queued`: waiting at the node (the broker not reached, or an earlier "
        "message of the case still queued); `receipted`: the broker accepted it (`receipt`); "
        "`refused`: the broker refused it for good (`refused` says what to fix)."
    )
    queued_at: datetime
    attempts: int = Field(description="Submissions to the broker so far.")
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = Field(None, description="While queued: the next try.")
    last_error: str | None = Field(
        None, description="Why the last submission failed (`broker_unreachable`, `http_503`)."
    )
    waits_for: str | None = Field(
        None, description="A message it is sent after (the plan to the focal point)."
    )
    settled_at: datetime | None = None
    receipt: SentOut | None = None
    refused: dict[str, Any] | None = Field(
        None, description="The refusal (problem+json): the broker's rule, gaps and detail."
    )


class OutboxList(BaseModel):
    messages: list[OutboxOut]


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
    payload: dict[str, Any] | None = Field(
        description="The decrypted payload; null while the message is restricted."
    )
    restricted: bool = Field(
        False,
        description="The person withdrew the consent it came under: its content is withheld "
        "and deleted after the node's retention (TRM_NODE_WITHDRAWN_RETENTION_SECONDS).",
    )
    restricted_at: datetime | None = None
    delete_after: datetime | None = Field(
        None, description="When the node deletes the content of a restricted message."
    )
    notice: str | None = Field(None, description="What a restriction means, in a sentence.")


class NextStepOut(BaseModel):
    """A message the receiving organisation may send next in the case, as the broker's case
    view says (`GET /v1/cases/{case_ref}`, `next_steps`)."""

    type: MessageType
    recipient: str
    allowed: bool = Field(description="Whether the broker's workflow accepts it now.")
    consent_needed: bool = Field(
        description="Whether it cites a consent (not a consent_withdrawal; a case_closure only "
        "with personal data)."
    )
    consents: list[str] = Field(
        description="The case's consents that would cover it now. With exactly one, leave "
        "consent_ref out when sending it: the node fills it in."
    )
    rule: str | None = Field(None, description="When not allowed: the rule that refuses it now.")
    detail: str | None = Field(None, description="When not allowed: that rule in one sentence.")
    window_seconds: int | None = Field(
        None, description="When the rule has a window: its length in seconds."
    )


class ReceivedMessageOut(ReceivedOut):
    """A received message with what it came under and what its recipient may do next."""

    consent_ref: str | None = Field(
        description="The consent it came under, as its envelope names it (a "
        "consent_withdrawal: the consent withdrawn; null: a case_closure without personal "
        "data)."
    )
    next_steps: list[NextStepOut] | None = Field(
        None,
        description="What the recipient may send next in the case, now, and under which "
        "consents (from the broker's case view, read as the recipient). Null when it could "
        "not be read: see `next_steps_unavailable`.",
    )
    next_steps_unavailable: str | None = Field(
        None,
        description="Why `next_steps` is null: `broker-unavailable` (try again later), or "
        "`not-asked` (`?next_steps=false`).",
    )


class ReceivedList(BaseModel):
    messages: list[ReceivedMessageOut]


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
