"""The TRM message types and the clear header facts each carries (docs/design.md §6).

Headers hold no personal data: only the workflow facts the broker must enforce. Their
models forbid extra members, so no free text can slip into the clear part of an envelope.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from trm_broker.domain.countries import CountryCode
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.payload_codes import BestInterestsOutcome
from trm_broker.domain.times import UtcTime


class MessageType(StrEnum):
    REFERRAL = "referral"
    REFERRAL_RESPONSE = "referral_response"
    RISK_ASSESSMENT = "risk_assessment"
    RETURN_PREPARATION = "return_preparation"
    RECEPTION_CONFIRMATION = "reception_confirmation"
    CASE_MONITORING = "case_monitoring"
    CASE_CLOSURE = "case_closure"
    CONSENT_WITHDRAWAL = "consent_withdrawal"
    #: The designated receiving organisation's answer to the return plan, before travel.
    RECEPTION_PLAN_RESPONSE = "reception_plan_response"
    #: The receiving organisation's contact with the person before travel.
    PRE_DEPARTURE_CONTACT = "pre_departure_contact"


class DeliveryStatus(StrEnum):
    """Where a message's delivery to its recipient stands (docs/design.md §8)."""

    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    #: The recipient's node refused the payload in a signed answer: final, like an ack.
    REJECTED = "rejected"
    #: Retried for the maximum age without an answer: waits for an operator's re-queue.
    DEAD_LETTERED = "dead_lettered"
    #: Stopped for good by a consent withdrawal (docs/design.md §7).
    DROPPED = "dropped"


class DataCategory(StrEnum):
    """Categories of personal data a sealed payload may carry (docs/design.md §7)."""

    IDENTITY = "identity"
    CONTACT = "contact"
    HEALTH = "health"
    FAMILY = "family"
    TRAVEL = "travel"
    LEGAL = "legal"
    OTHER = "other"


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferralHeader(_Header):
    destination_country: CountryCode
    subject_is_minor: bool


class ReferralResponseHeader(_Header):
    accepted: bool


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RiskAssessmentHeader(_Header):
    risk_level: RiskLevel
    return_recommended: bool
    assessed_at: UtcTime


class ReturnPreparationHeader(_Header):
    receiving_org: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    planned_arrival: UtcTime
    best_interests_ref: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    best_interests_outcome: BestInterestsOutcome | None = Field(
        None, description="The best-interests determination's outcome, for a child."
    )
    subject_is_minor: bool = Field(
        False, description="The plan names a guardian or a best-interests determination."
    )


class ReceptionOutcome(StrEnum):
    RECEIVED = "received"
    NOT_ARRIVED = "not_arrived"
    DECLINED_ASSISTANCE = "declined_assistance"


class ReceptionConfirmationHeader(_Header):
    outcome: ReceptionOutcome
    at: UtcTime


class CaseMonitoringHeader(_Header):
    period_start: date
    period_end: date


class ClosureReason(StrEnum):
    REINTEGRATED = "reintegrated"
    MONITORING_COMPLETED = "monitoring_completed"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    LOST_CONTACT = "lost_contact"
    REFERRAL_DECLINED = "referral_declined"
    OTHER = "other"


class CaseClosureHeader(_Header):
    reason: ClosureReason


class ConsentWithdrawalHeader(_Header):
    pass


class Readiness(StrEnum):
    """The receiving organisation's answer to a return plan."""

    READY = "ready"
    #: Ready if the needs it names are met first.
    NEEDS_SUPPORT = "needs_support"
    CANNOT_RECEIVE = "cannot_receive"


class ReceptionPlanResponseHeader(_Header):
    readiness: Readiness


class PreDepartureContactHeader(_Header):
    at: UtcTime


HEADER_MODELS: dict[MessageType, type[_Header]] = {
    MessageType.REFERRAL: ReferralHeader,
    MessageType.REFERRAL_RESPONSE: ReferralResponseHeader,
    MessageType.RISK_ASSESSMENT: RiskAssessmentHeader,
    MessageType.RETURN_PREPARATION: ReturnPreparationHeader,
    MessageType.RECEPTION_CONFIRMATION: ReceptionConfirmationHeader,
    MessageType.CASE_MONITORING: CaseMonitoringHeader,
    MessageType.CASE_CLOSURE: CaseClosureHeader,
    MessageType.CONSENT_WITHDRAWAL: ConsentWithdrawalHeader,
    MessageType.RECEPTION_PLAN_RESPONSE: ReceptionPlanResponseHeader,
    MessageType.PRE_DEPARTURE_CONTACT: PreDepartureContactHeader,
}
