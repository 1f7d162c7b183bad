"""The sealed payload of each message type (docs/design.md §6): what the TRM standard forms carry.

Payloads hold the personal data, sealed to the recipient: the broker never reads them, the
recipient's node checks them against these models (strictly, as their JSON Schemas in
`contracts/schemas/payloads/` say) and refuses, with a signed negative acknowledgement, one
that does not conform. Every member is optional where a real form may be left blank, and no
model takes members it does not name, so a payload means the same thing at every node.
The codes, and the vocabularies they follow, are in `trm_broker.domain.payload_codes`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from trm_broker.domain.countries import is_country
from trm_broker.domain.messages import (
    ClosureReason,
    DataCategory,
    MessageType,
    Readiness,
    ReceptionOutcome,
    RiskLevel,
)
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.payload_codes import (
    Assistance,
    BestInterestsOutcome,
    CannotReceiveReason,
    DeclineReason,
    DocumentStatus,
    EscortRole,
    FamilyTracingOutcome,
    FormOfExploitation,
    Gender,
    LabourExploitationType,
    MeansOfControl,
    MonitoringContact,
    NotReceivedReason,
    OrganisationType,
    ProtectiveFactor,
    Recommendation,
    SexualExploitationType,
    TraffickingStatus,
    TransportMode,
    TravelDocumentKind,
    WellbeingRating,
)
from trm_broker.domain.times import UtcTime

PAYLOAD_VERSION = 1
MAX_REASONS = 20  # as AckClaims.reasons allows
MAX_REASON_LENGTH = 200

FreeText = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
#: An ISO 639 language code ("en", "pcm"), optionally with BCP 47 subtags ("pt-BR").
LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")]
#: As ReturnPreparationHeader.best_interests_ref: a reference, never a name.
Reference = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    # pydantic alone would also take "1700000000" or "10:00+0100"; the schema's format does not.
    if not isinstance(value, str):
        return value
    if not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 date-time with a time offset")
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError:  # its message would quote the value
        raise ValueError("not a valid date-time") from None


#: RFC 3339 §5.6 date-time, with an offset (JSON Schema ``format: date-time``).
Moment = Annotated[UtcTime, BeforeValidator(_rfc3339)]


def _country(code: str) -> str:
    if not is_country(code):
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return code


#: ISO 3166-1 alpha-2, as HTCDS asks for nationality; the pattern is for the JSON Schema.
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]


#: The annotations every payload member carries in its JSON Schema (docs/design.md §6):
#: ``x-trm-category``, the category of personal data the member holds (a message's
#: categories are those of the members it fills), and ``x-trm-header``, the clear-header
#: fields the member is projected into (``trm_broker.domain.projections``). A member with
#: only ``x-trm-header`` is a workflow fact, not personal data; one with neither inherits
#: the category of the member it is part of.
CATEGORY_KEY = "x-trm-category"
HEADER_KEY = "x-trm-header"


def _extra(category: DataCategory | None, header: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if category is not None:
        extra[CATEGORY_KEY] = category.value
    if header:
        extra[HEADER_KEY] = list(header)
    return extra


def data(category: DataCategory, default: Any = None, **kwargs: Any) -> Any:
    """A member holding personal data of ``category``."""
    return Field(default, json_schema_extra=_extra(category, ()), **kwargs)


def fact(
    *header: str, default: Any = None, category: DataCategory | None = None, **kwargs: Any
) -> Any:
    """A member the clear header is computed from (``header`` names its fields)."""
    return Field(default, json_schema_extra=_extra(category, header), **kwargs)


def _codes(category: DataCategory | None = None, **kwargs: Any) -> Any:
    """A list of codes (a repeat is not refused), bounded so a payload stays small."""
    return Field(
        default_factory=list, max_length=32, json_schema_extra=_extra(category, ()), **kwargs
    )


_OTHER = DataCategory.OTHER
_IDENTITY = DataCategory.IDENTITY
_CONTACT = DataCategory.CONTACT
_HEALTH = DataCategory.HEALTH
_FAMILY = DataCategory.FAMILY
_TRAVEL = DataCategory.TRAVEL
_LEGAL = DataCategory.LEGAL

#: A participant id of the registry (``ng.shelter``): an organisation, never a person.
ParticipantId = Annotated[str, StringConstraints(pattern=PARTICIPANT_ID_PATTERN)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Payload(_Part):
    notes: FreeText | None = data(_OTHER, description="Anything the form's codes do not say.")


# --- referral -----------------------------------------------------------------------------


class Person(_Part):
    """Who is referred: HTCDS ``prs_FirstName``, ``prs_SecondName``, ``prs_Birthdate``,
    ``prs_Gender``, ``prs_Nationality``."""

    given_name: ShortText | None = None
    family_name: ShortText | None = None
    date_of_birth: date | None = fact("subject_is_minor", category=_IDENTITY)
    gender: Gender | None = None
    nationality: Country | None = None


class ReferralPayload(_Payload):
    destination_country: Country = fact(
        "destination_country",
        default=...,
        description="The country of return: the referral goes to its focal point.",
    )
    identification_summary: FreeText | None = data(
        _OTHER, description="How and when the person was identified, in the referrer's words."
    )
    identified_on: date | None = data(_OTHER)
    trafficking_status: TraffickingStatus | None = data(_LEGAL)
    person: Person | None = data(_IDENTITY)
    is_child: bool | None = fact(
        "subject_is_minor",
        description="True if the person is, or is presumed to be, under 18; a date of birth"
        " under 18 years before the message makes the case a child's whatever this says.",
    )
    form_of_exploitation: FormOfExploitation | None = data(_OTHER, description="The main form.")
    other_forms_of_exploitation: list[FormOfExploitation] = _codes(_OTHER)
    labour_exploitation: list[LabourExploitationType] = _codes(_OTHER)
    sexual_exploitation: list[SexualExploitationType] = _codes(_OTHER)
    means_of_control: list[MeansOfControl] = _codes(_OTHER)
    immediate_needs: list[Assistance] = _codes(_OTHER)
    languages: list[LanguageTag] = _codes(
        _IDENTITY, description="Languages the person speaks, best first."
    )
    interpreter_needed: bool | None = data(_IDENTITY)


class ReferralResponsePayload(_Payload):
    accepted: bool = fact("accepted", default=..., description="Whether the case is taken on.")
    decline_reason: DeclineReason | None = data(_OTHER, description="When it is not.")
    contact_point: ShortText | None = data(_CONTACT, description="Who handles the case now.")

    @model_validator(mode="after")
    def _reason_only_when_declined(self) -> ReferralResponsePayload:
        if self.accepted and self.decline_reason is not None:
            raise ValueError("decline_reason is only for a referral not accepted")
        return self


# --- risk_assessment ----------------------------------------------------------------------


class Threat(_Part):
    identified: bool | None = None
    level: RiskLevel | None = None
    notes: FreeText | None = None


class Threats(_Part):
    """The threats a TRM risk assessment weighs, each from its own source."""

    traffickers: Threat | None = None
    family: Threat | None = None
    community: Threat | None = None
    stigma: Threat | None = None
    re_trafficking: Threat | None = None


class Health(_Part):
    medical_needs: bool | None = None
    psychological_needs: bool | None = None
    fit_to_travel: bool | None = None
    notes: FreeText | None = None


#: The recommendations that recommend return (``return_recommended`` in the header).
RETURN_RECOMMENDATIONS = frozenset({Recommendation.RETURN, Recommendation.RETURN_WITH_CONDITIONS})


class RiskAssessmentPayload(_Payload):
    risk_level: RiskLevel = fact("risk_level", default=...)
    recommendation: Recommendation = fact(
        "return_recommended",
        default=...,
        description="return and return_with_conditions recommend return; the others do not.",
    )
    assessed_at: Moment = fact("assessed_at", default=..., description="When it was made.")
    threats: Threats | None = data(_OTHER)
    protective_factors: list[ProtectiveFactor] = _codes(_OTHER)
    family_situation: FreeText | None = data(_FAMILY)
    health: Health | None = data(_HEALTH)
    assessor_organisation: ShortText | None = data(_OTHER)
    assessor_organisation_type: OrganisationType | None = data(_OTHER)


# --- return_preparation -------------------------------------------------------------------


class TravelLeg(_Part):
    mode: TransportMode | None = None
    departure_place: ShortText | None = None
    arrival_place: ShortText | None = None
    departs_at: Moment | None = None
    arrives_at: Moment | None = None
    reference: ShortText | None = Field(None, description="Flight number or booking reference.")


class TravelDocuments(_Part):
    status: DocumentStatus | None = None
    kind: TravelDocumentKind | None = None
    notes: FreeText | None = None


class Escort(_Part):
    required: bool | None = None
    roles: list[EscortRole] = _codes()
    organisation: ShortText | None = None
    notes: FreeText | None = None


class FamilyTracing(_Part):
    outcome: FamilyTracingOutcome | None = None
    notes: FreeText | None = None


class ReintegrationPlan(_Part):
    services: list[Assistance] = _codes()
    accommodation_arranged: bool | None = None
    responsible_organisation: ShortText | None = None
    notes: FreeText | None = None


class Guardian(_Part):
    """A child's guardian (CETS 197 Art. 10(4))."""

    name: ShortText | None = None
    organisation: ShortText | None = None
    appointed_on: date | None = None


class BestInterestsDetermination(_Part):
    """A child is returned only if it is in their best interests (CETS 197 Art. 16(7))."""

    ref: Reference | None = fact("best_interests_ref", description="A reference, never a name.")
    decided_on: date | None = None
    decided_by: ShortText | None = None
    outcome: BestInterestsOutcome | None = fact(
        "best_interests_outcome",
        description="A return not in the child's best interests is refused, as one no risk"
        " assessment recommends.",
    )
    notes: FreeText | None = None


class ReturnPreparationPayload(_Payload):
    receiving_org: ParticipantId = fact(
        "receiving_org",
        default=...,
        description="The receiving organisation designated to receive the person: its"
        " participant id in the registry, in the country of return.",
    )
    planned_arrival: Moment = fact("planned_arrival", default=...)
    travel_date: date | None = data(_TRAVEL)
    route: list[TravelLeg] = Field(
        default_factory=list, max_length=10, json_schema_extra=_extra(_TRAVEL, ())
    )
    travel_documents: TravelDocuments | None = data(_TRAVEL)
    escort: Escort | None = data(_TRAVEL)
    health: Health | None = data(_HEALTH, description="Medical and psychological needs.")
    family_tracing: FamilyTracing | None = data(_FAMILY)
    reintegration_plan: ReintegrationPlan | None = data(_OTHER)
    contact_person: ShortText | None = data(
        _CONTACT, description="Who the receiving organisation contacts before travel."
    )
    languages: list[LanguageTag] = _codes(
        _IDENTITY, description="Languages the person speaks, best first."
    )
    guardian: Guardian | None = fact(
        "subject_is_minor", category=_LEGAL, description="For a child: makes the case a child's."
    )
    best_interests_determination: BestInterestsDetermination | None = fact(
        "subject_is_minor", category=_LEGAL, description="For a child: makes the case a child's."
    )


# --- reception_confirmation ---------------------------------------------------------------


class Receiver(_Part):
    name: ShortText | None = None
    role: ShortText | None = None
    organisation: ShortText | None = None


class ReceptionConfirmationPayload(_Payload):
    outcome: ReceptionOutcome = fact("outcome", default=...)
    received_at: Moment = fact(
        "at",
        default=...,
        description="When the person was received; if not, when that was established.",
    )
    received_by: Receiver | None = data(_OTHER)
    place: ShortText | None = data(_TRAVEL)
    reason_not_received: NotReceivedReason | None = data(_OTHER)

    @model_validator(mode="after")
    def _reason_only_when_not_received(self) -> ReceptionConfirmationPayload:
        if self.outcome is ReceptionOutcome.RECEIVED and self.reason_not_received is not None:
            raise ValueError("reason_not_received is only for a person not received")
        return self


# --- case_monitoring ----------------------------------------------------------------------


class Wellbeing(_Part):
    """The three dimensions of sustainable reintegration (IOM Reintegration Handbook, 2019)."""

    economic: WellbeingRating | None = None
    social: WellbeingRating | None = None
    psychosocial: WellbeingRating | None = None
    notes: FreeText | None = None


class CaseMonitoringPayload(_Payload):
    period_start: date = fact("period_start", default=...)
    period_end: date = fact("period_end", default=...)
    contact: MonitoringContact | None = data(_CONTACT)
    services_received: list[Assistance] = _codes(_OTHER)
    wellbeing: Wellbeing | None = data(_HEALTH)
    re_trafficking_risk: RiskLevel | None = data(_OTHER)

    @model_validator(mode="after")
    def _period_in_order(self) -> CaseMonitoringPayload:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


# --- case_closure, consent_withdrawal -----------------------------------------------------


class CaseClosurePayload(_Payload):
    reason: ClosureReason = fact("reason", default=...)


class ConsentWithdrawalPayload(_Payload):
    withdrawn_on: date | None = data(_OTHER)


# --- reception_plan_response, pre_departure_contact --------------------------------------


class ReceptionPlanResponsePayload(_Payload):
    readiness: Readiness = fact("readiness", default=...)
    cannot_receive_reason: CannotReceiveReason | None = data(
        _OTHER, description="When the organisation cannot receive the person."
    )
    needs: list[Assistance] = _codes(
        _OTHER, description="What must be arranged first (ready with support, or not ready)."
    )
    contact_person: ShortText | None = data(
        _CONTACT, description="Who at the organisation the person and escort meet."
    )

    @model_validator(mode="after")
    def _reason_only_when_not_ready(self) -> ReceptionPlanResponsePayload:
        if (self.readiness is Readiness.CANNOT_RECEIVE) != (self.cannot_receive_reason is not None):
            raise ValueError(
                "cannot_receive_reason is given exactly when readiness is cannot_receive"
            )
        return self


class PreDepartureContactPayload(_Payload):
    contacted_at: Moment = fact("at", default=..., description="When the contact took place.")
    mode: MonitoringContact | None = data(_CONTACT)
    counselling_given: bool | None = data(
        _OTHER, description="Pre-departure counselling: the person knows what awaits them."
    )
    languages: list[LanguageTag] = _codes(_IDENTITY, description="Languages used.")


PAYLOAD_MODELS: dict[MessageType, type[_Payload]] = {
    MessageType.REFERRAL: ReferralPayload,
    MessageType.REFERRAL_RESPONSE: ReferralResponsePayload,
    MessageType.RISK_ASSESSMENT: RiskAssessmentPayload,
    MessageType.RETURN_PREPARATION: ReturnPreparationPayload,
    MessageType.RECEPTION_CONFIRMATION: ReceptionConfirmationPayload,
    MessageType.CASE_MONITORING: CaseMonitoringPayload,
    MessageType.CASE_CLOSURE: CaseClosurePayload,
    MessageType.CONSENT_WITHDRAWAL: ConsentWithdrawalPayload,
    MessageType.RECEPTION_PLAN_RESPONSE: ReceptionPlanResponsePayload,
    MessageType.PRE_DEPARTURE_CONTACT: PreDepartureContactPayload,
}


# --- checking a payload -------------------------------------------------------------------

_KINDS = {
    "missing": "required",
    "extra_forbidden": "unknown member",
    "enum": "not a known code",
    "string_too_short": "empty",
    "string_too_long": "too long",
    "too_long": "too many items",
    "string_pattern_mismatch": "not in the expected format",
    "timezone_aware": "needs a time offset",
    "model_type": "expected an object",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "date_type": "expected a date (YYYY-MM-DD)",
    "date_parsing": "expected a date (YYYY-MM-DD)",
    "datetime_type": "expected an RFC 3339 date-time",
    "datetime_parsing": "expected an RFC 3339 date-time",
    "json_invalid": "not JSON",
}


def check_payload(message_type: MessageType, payload: bytes | str) -> list[str]:
    """Why a payload's JSON text does not conform to its type's schema; empty if it does.

    Validation is strict, as the JSON Schema is: no string for a boolean, no number for a
    date. Each reason names a location and a kind of error, never a value or an unknown
    member's name, so a refusal can be signed, sent back and logged without personal data.
    """
    try:
        PAYLOAD_MODELS[message_type].model_validate_json(payload, strict=True)
    except ValidationError as exc:
        reasons = list(dict.fromkeys(_reason(e) for e in exc.errors(include_input=False)))
        if len(reasons) > MAX_REASONS:
            more = len(reasons) - (MAX_REASONS - 1)
            reasons = [*reasons[: MAX_REASONS - 1], f"payload: {more} more errors"]
        return reasons
    return []


def read_payload(message_type: MessageType, payload: bytes | str) -> BaseModel:
    """The payload's model, read as :func:`check_payload` checks it (call that first: this
    raises ``ValidationError`` on a payload that does not conform)."""
    return PAYLOAD_MODELS[message_type].model_validate_json(payload, strict=True)


def _reason(error: Any) -> str:
    location = [str(part) for part in error["loc"]]
    kind = str(error["type"])
    if kind == "extra_forbidden":
        location = location[:-1]  # the member's name is the sender's text
    if kind == "value_error":  # our own validators' fixed sentences
        text = str(error.get("ctx", {}).get("error", "not valid"))
    else:
        text = _KINDS.get(kind, f"not valid ({kind})")
    return ("/".join(["payload", *location]) + ": " + text)[:MAX_REASON_LENGTH]
