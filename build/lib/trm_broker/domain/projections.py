"""The clear header as a projection of the sealed payload (docs/design.md §6).

Every fact the broker's safeguards read in a header (risk level, return recommended, a
child's case, the receiving organisation, the planned arrival, …) is computed here from the
payload, by one pure function per message type, and so are the envelope's data categories:
the categories of the payload members a message fills, as the payload schemas annotate them
(``x-trm-category``). The sending node computes the header with :func:`project`; the
receiving node, which alone can open the payload, computes it again and compares it with the
signed header (:func:`mismatches`). A header that says something the payload does not is
refused there with a signed rejection, so the broker can enforce the safeguards on the clear
header without ever seeing the payload: a sender that lies is caught by the recipient and
its message never counts (docs/consent-and-workflow.md).

The functions depend on the payload and on the envelope's ``created_at`` only (a date of
birth makes a child's case by the age on the day the message was made), so both nodes
compute the same header from the same sealed bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel

from trm_broker.domain.messages import (
    HEADER_MODELS,
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
from trm_broker.domain.payloads import (
    CATEGORY_KEY,
    HEADER_KEY,
    PAYLOAD_MODELS,
    RETURN_RECOMMENDATIONS,
    CaseClosurePayload,
    CaseMonitoringPayload,
    PreDepartureContactPayload,
    ReceptionConfirmationPayload,
    ReceptionPlanResponsePayload,
    ReferralPayload,
    ReferralResponsePayload,
    ReturnPreparationPayload,
    RiskAssessmentPayload,
)

#: A person under this age is a child (CETS 197 Art. 4(d)).
ADULT_AGE = 18


@dataclass(frozen=True)
class Projection:
    """What a payload says in the clear: the header and the data categories."""

    header: BaseModel
    data_categories: frozenset[DataCategory]

    def header_json(self) -> dict[str, Any]:
        """The header as the envelope carries it (JSON, no null members)."""
        return self.header.model_dump(mode="json", exclude_none=True)

    def categories_json(self) -> list[str]:
        """The data categories as the envelope carries them (sorted)."""
        return sorted(category.value for category in self.data_categories)


def age_on(born: date, day: date) -> int:
    """Completed years of life on ``day`` (someone born on 29 February turns a year older on
    1 March in common years)."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _referral(payload: ReferralPayload, made: date) -> ReferralHeader:
    born = payload.person.date_of_birth if payload.person is not None else None
    # A child if the referrer says so or the date of birth does: in doubt, a child (the TRM
    # guidelines' presumption of minority).
    minor = payload.is_child is True or (born is not None and age_on(born, made) < ADULT_AGE)
    return ReferralHeader(destination_country=payload.destination_country, subject_is_minor=minor)


def _referral_response(payload: ReferralResponsePayload, made: date) -> ReferralResponseHeader:
    return ReferralResponseHeader(accepted=payload.accepted)


def _risk_assessment(payload: RiskAssessmentPayload, made: date) -> RiskAssessmentHeader:
    return RiskAssessmentHeader(
        risk_level=payload.risk_level,
        return_recommended=payload.recommendation in RETURN_RECOMMENDATIONS,
        assessed_at=payload.assessed_at,
    )


def _return_preparation(payload: ReturnPreparationPayload, made: date) -> ReturnPreparationHeader:
    determination = payload.best_interests_determination
    return ReturnPreparationHeader(
        receiving_org=payload.receiving_org,
        planned_arrival=payload.planned_arrival,
        best_interests_ref=determination.ref if determination is not None else None,
        best_interests_outcome=determination.outcome if determination is not None else None,
        subject_is_minor=payload.guardian is not None or determination is not None,
    )


def _reception_confirmation(
    payload: ReceptionConfirmationPayload, made: date
) -> ReceptionConfirmationHeader:
    return ReceptionConfirmationHeader(outcome=payload.outcome, at=payload.received_at)


def _case_monitoring(payload: CaseMonitoringPayload, made: date) -> CaseMonitoringHeader:
    return CaseMonitoringHeader(period_start=payload.period_start, period_end=payload.period_end)


def _case_closure(payload: CaseClosurePayload, made: date) -> CaseClosureHeader:
    return CaseClosureHeader(reason=payload.reason)


def _consent_withdrawal(payload: BaseModel, made: date) -> ConsentWithdrawalHeader:
    return ConsentWithdrawalHeader()


def _reception_plan_response(
    payload: ReceptionPlanResponsePayload, made: date
) -> ReceptionPlanResponseHeader:
    return ReceptionPlanResponseHeader(readiness=payload.readiness)


def _pre_departure_contact(
    payload: PreDepartureContactPayload, made: date
) -> PreDepartureContactHeader:
    return PreDepartureContactHeader(at=payload.contacted_at)


_HEADERS: Mapping[MessageType, Callable[[Any, date], BaseModel]] = {
    MessageType.REFERRAL: _referral,
    MessageType.REFERRAL_RESPONSE: _referral_response,
    MessageType.RISK_ASSESSMENT: _risk_assessment,
    MessageType.RETURN_PREPARATION: _return_preparation,
    MessageType.RECEPTION_CONFIRMATION: _reception_confirmation,
    MessageType.CASE_MONITORING: _case_monitoring,
    MessageType.CASE_CLOSURE: _case_closure,
    MessageType.CONSENT_WITHDRAWAL: _consent_withdrawal,
    MessageType.RECEPTION_PLAN_RESPONSE: _reception_plan_response,
    MessageType.PRE_DEPARTURE_CONTACT: _pre_departure_contact,
}


def _filled(value: object) -> bool:
    return value is not None and value != [] and value != ""


def categories(payload: BaseModel, inherited: DataCategory | None = None) -> set[DataCategory]:
    """The categories of personal data ``payload`` holds: of every member it fills.

    A member's category is its own ``x-trm-category`` or, if it has none, that of the member
    it is part of; a member with only ``x-trm-header`` is a workflow fact, not personal data.
    """
    found: set[DataCategory] = set()
    for name, field in type(payload).model_fields.items():
        value = getattr(payload, name)
        if not _filled(value):
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        own = extra.get(CATEGORY_KEY)
        if own is None and HEADER_KEY in extra:
            category = None
        else:
            category = DataCategory(own) if isinstance(own, str) else inherited
        items: Iterable[object] = value if isinstance(value, list) else (value,)
        for item in items:
            if isinstance(item, BaseModel):
                found |= categories(item, category)
            elif category is not None:
                found.add(category)
    return found


def project(message_type: MessageType, payload: BaseModel, created_at: datetime) -> Projection:
    """The header and data categories of a message of ``message_type`` carrying ``payload``
    (a model of ``PAYLOAD_MODELS[message_type]``), made at ``created_at``."""
    model = PAYLOAD_MODELS[message_type]
    if not isinstance(payload, model):
        raise TypeError(f"a {message_type.value} message carries a {model.__name__}")
    if created_at.utcoffset() is None:
        raise ValueError("created_at must be a timezone-aware datetime")
    made = created_at.astimezone(UTC).date()
    header = _HEADERS[message_type](payload, made)
    return Projection(header=header, data_categories=frozenset(categories(payload)))


def mismatches(
    message_type: MessageType,
    payload: BaseModel,
    created_at: datetime,
    header: Mapping[str, Any],
    data_categories: Iterable[DataCategory | str],
) -> list[str]:
    """Where a signed header (and the envelope's data categories) says other than the payload:
    ``header/<field>`` for each header field, ``data_categories`` for the categories; empty
    if they agree. Locations only, never a value: a rejection carries them."""
    expected = project(message_type, payload, created_at)
    found: list[str] = []
    try:
        stated = HEADER_MODELS[message_type].model_validate(dict(header))
    except ValueError:
        stated = None
    for name in HEADER_MODELS[message_type].model_fields:
        projected = getattr(expected.header, name)
        if stated is None or getattr(stated, name) != projected:
            found.append(f"header/{name}")
    try:
        declared = frozenset(DataCategory(category) for category in data_categories)
    except ValueError:
        declared = None
    if declared != expected.data_categories:
        found.append("data_categories")
    return found
