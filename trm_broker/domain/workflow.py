"""The case-transfer workflow (docs/design.md §6) and the return safeguards (§2, principle 5).

A *case transfer* links one case reference between a sending focal point (country of
exploitation) and a destination focal point (country of return). :func:`apply` is the whole
state machine: given the state and one message (a :class:`Step`, from the clear header and
the registry), it returns the new state or raises :class:`RuleBroken` naming the rule.
Stages only move forward; after ``case_closure`` only a ``consent_withdrawal`` is accepted.

Consent scope is checked apart (``domain.consent``); here only the children's rule on *who*
gave it applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.consent import GivenBy
from trm_broker.domain.messages import (
    HEADER_MODELS,
    CaseMonitoringHeader,
    MessageType,
    PreDepartureContactHeader,
    Readiness,
    ReceptionConfirmationHeader,
    ReceptionOutcome,
    ReceptionPlanResponseHeader,
    ReferralHeader,
    ReferralResponseHeader,
    ReturnPreparationHeader,
    RiskAssessmentHeader,
    RiskLevel,
)
from trm_broker.domain.participants import ParticipantKind

_H = TypeVar("_H", bound=BaseModel)

#: Every rule :func:`apply` enforces: its stable code and the sentence a refusal carries
#: (``{type}``, ``{span}`` … are filled in; no placeholder ever holds personal data).
RULES: dict[str, str] = {
    "case_already_referred": "referral is sent once per case reference, and this case is"
    " already referred",
    "case_not_referred": "{type} needs a referral of this case first",
    "case_closed": "the case is closed: {type} is not accepted after case_closure",
    "not_a_party_of_this_case": "{type} goes only between the focal points of the case and its"
    " designated receiving organisation",
    "referral_only_by_focal_point": "referral is sent only by a focal point",
    "referral_only_to_destination_focal_point": "referral goes to a focal point of its"
    " destination country {country}",
    "referral_to_own_country": "referral goes to another country than the sending focal"
    " point's own",
    "minor_needs_guardian_consent": "{type} for a child needs a consent given by a guardian",
    "referral_response_only_from_destination_to_sending": "referral_response goes only from"
    " the destination focal point to the sending one",
    "referral_already_answered": "referral_response is sent once, while the referral awaits"
    " an answer",
    "risk_assessment_only_between_focal_points": "risk_assessment goes only from one focal"
    " point of the case to the other",
    "risk_assessment_needs_acceptance": "risk_assessment is accepted after the referral was"
    " accepted and before reception",
    "risk_assessment_in_future": "risk_assessment cannot have been made later than it is sent",
    "return_preparation_only_from_sending_to_destination": "return_preparation goes only from"
    " the sending focal point to the destination one, or to the receiving organisation its"
    " plan designates",
    "return_plan_to_org_must_match_plan": "return_preparation goes to the receiving"
    " organisation after the destination focal point was sent the plan, and with that plan:"
    " the same receiving organisation (the recipient) and the same planned arrival",
    "return_preparation_needs_acceptance": "return_preparation is accepted after the referral"
    " was accepted and before reception",
    "return_preparation_needs_recent_recommending_risk_assessment": "return_preparation needs"
    " a risk_assessment that recommends return, made within the last {span} ({why})",
    "receiving_org_not_registered_in_country_of_return": "return_preparation must name a"
    " receiving organisation registered as a receiving_org in the country of return {country}",
    "planned_arrival_too_soon": "return_preparation needs the planned arrival at least {span}"
    " ahead, so the receiving organisation can prepare",
    "minor_needs_best_interests_determination": "return_preparation for a child needs a"
    " best-interests determination reference",
    "reception_confirmation_needs_return_preparation": "reception_confirmation is accepted"
    " once, after a return_preparation",
    "reception_confirmation_only_by_designated_receiving_org": "reception_confirmation is"
    " sent only by the receiving organisation designated in the return_preparation, to a"
    " focal point of the case",
    "reception_in_future": "reception_confirmation cannot confirm a reception later than it"
    " is sent",
    "case_monitoring_only_by_receiving_org_or_destination": "case_monitoring is sent only by"
    " the case's receiving organisation or the destination focal point, to a focal point of"
    " the case",
    "case_monitoring_needs_reception": "case_monitoring is accepted only after the person was"
    " received",
    "monitoring_period_over": "case_monitoring is accepted for {span} after reception",
    "monitoring_period_reversed": "case_monitoring must cover a period whose start is not"
    " after its end",
    "case_closure_only_between_focal_points": "case_closure goes only from one focal point of"
    " the case to the other",
    "consent_withdrawal_only_by_sending_focal_point": "consent_withdrawal is sent only by the"
    " sending focal point, which registered the consent",
    "reception_plan_response_only_by_designated_receiving_org": "reception_plan_response is"
    " sent only by the receiving organisation designated in the return_preparation, to a"
    " focal point of the case",
    "pre_departure_contact_only_by_designated_receiving_org": "pre_departure_contact is sent"
    " only by the receiving organisation designated in the return_preparation, to a focal"
    " point of the case",
    "needs_plan_sent_to_receiving_org": "{type} is accepted after the return plan was sent to"
    " the receiving organisation (a return_preparation addressed to it), and before reception",
    "pre_departure_contact_in_future": "pre_departure_contact cannot record a contact later"
    " than it is sent",
}


class RuleBroken(Exception):
    """A message the workflow does not allow now (409). ``rule`` is a stable code (a key of
    :data:`RULES`), ``detail`` one sentence for a case worker; neither holds personal data."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def _refuse(rule: str, **facts: object) -> NoReturn:
    raise RuleBroken(rule, RULES[rule].format(**facts))


def _require(condition: bool, rule: str, **facts: object) -> None:
    if not condition:
        _refuse(rule, **facts)


def _aware(name: str, moment: datetime | None) -> datetime | None:
    # Naive times compare wrongly or not at all: refuse them at the boundary, keep UTC.
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return None if moment is None else moment.astimezone(UTC)


def _span(length: timedelta) -> str:
    """``30 days``, ``72 hours``: a rule's window as people state it (days from a week on)."""
    seconds = int(length.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and (unit != "day" or seconds >= 7 * size):
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")  # pragma: no cover - size 1 divides every int


@dataclass(frozen=True)
class Rules:
    """The safeguards' parameters (settings ``TRM_RISK_MAX_AGE_SECONDS``,
    ``TRM_MIN_NOTICE_SECONDS``, …).

    ``clock_skew`` tolerates a sender's clock a little ahead of the broker's for the times a
    header states (assessed at, received at); use the envelope freshness window.
    """

    risk_max_age: timedelta = timedelta(days=30)
    min_notice: timedelta = timedelta(hours=72)
    reception_grace: timedelta = timedelta(hours=48)
    monitoring_period: timedelta = timedelta(days=365)
    monitoring_interval: timedelta = timedelta(days=91)
    clock_skew: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        zero = timedelta(0)
        # TRM guidelines: monitoring after return lasts one to three years at most.
        if not zero < self.monitoring_period <= timedelta(days=3 * 365):
            raise ValueError("monitoring_period must be more than 0 and at most 3 years")
        if self.risk_max_age <= zero or self.monitoring_interval <= zero:
            raise ValueError("risk_max_age and monitoring_interval must be positive")
        if min(self.min_notice, self.reception_grace, self.clock_skew) < zero:
            raise ValueError("min_notice, reception_grace and clock_skew must not be negative")


@dataclass(frozen=True)
class Party:
    """A registry participant as the workflow needs it."""

    id: str
    kind: ParticipantKind
    country: str


@dataclass(frozen=True)
class Step:
    """One message, from its clear header. ``header`` is the model ``HEADER_MODELS[type]``
    of ``domain.messages``. ``receiving_org`` is, for a return_preparation, the registry
    entry of ``header.receiving_org`` (``None`` if it is not registered). ``case_ref`` is the
    envelope's; a referral needs it, as it starts the case. ``message_id`` is the envelope's
    id (the state keeps that of the plan sent to the receiving organisation)."""

    type: MessageType
    sender: Party
    recipient: Party
    header: BaseModel
    consent_given_by: GivenBy | None
    at: datetime
    receiving_org: Party | None = None
    case_ref: str = ""
    message_id: str = ""

    def __post_init__(self) -> None:
        _aware("at", self.at)
        if type(self.header) is not HEADER_MODELS[self.type]:
            raise ValueError(f"a {self.type.value} step needs a {self.type.value} header")
        if self.type is MessageType.REFERRAL and not self.case_ref:
            raise ValueError("a referral step needs the case_ref it starts")
        if self.sender.id == self.recipient.id:
            raise ValueError("sender and recipient must differ")  # as in the envelope (§5)


class Stage(StrEnum):
    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RETURN_PREPARED = "return_prepared"
    RECEIVED = "received"
    NOT_RECEIVED = "not_received"  # not arrived, or declined assistance
    CLOSED = "closed"


@dataclass(frozen=True)
class RiskAssessment:
    """The clear facts of the latest risk assessment of a case."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    assessed_at: datetime
    level: RiskLevel
    return_recommended: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "assessed_at", _aware("assessed_at", self.assessed_at))


_TIMES = (
    "referred_at",
    "planned_arrival",
    "pre_departure_contact_at",
    "received_at",
    "last_monitoring_at",
    "closed_at",
)


@dataclass(frozen=True)
class CaseTransfer:
    """The state of one case transfer. Times are aware and kept in UTC.

    Of the current plan: ``plan_sent_to_org`` is the message id of the return_preparation
    last sent to its receiving organisation (``None``: not sent yet), ``readiness`` the
    organisation's latest answer to it, ``pre_departure_contact_at`` when it last met the
    person before travel. A new plan clears the first two (and the third with a new
    organisation): the organisation is sent, and answers, the plan in force.
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    case_ref: str
    sending: str
    destination: str
    destination_country: str
    subject_is_minor: bool
    stage: Stage
    referred_at: datetime
    last_risk_assessment: RiskAssessment | None = None
    receiving_org: str | None = None
    planned_arrival: datetime | None = None
    plan_sent_to_org: str | None = None
    readiness: Readiness | None = None
    pre_departure_contact_at: datetime | None = None
    received_at: datetime | None = None
    last_monitoring_at: datetime | None = None
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in _TIMES:
            object.__setattr__(self, name, _aware(name, getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready members and ``v`` 1; times RFC 3339 in UTC, to the microsecond."""
        return {"v": 1, **_JSON.dump_python(self, mode="json")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseTransfer:
        """The state :meth:`to_json` gave; ``ValueError`` on anything else."""
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a version 1 case transfer")
        return _JSON.validate_python({name: value for name, value in data.items() if name != "v"})


_JSON = TypeAdapter(CaseTransfer)


def _header(step: Step, kind: type[_H]) -> _H:
    # Step.__post_init__ already guarantees the match; this narrows the type for mypy.
    header = step.header
    if not isinstance(header, kind):
        raise TypeError(f"expected a {kind.__name__}")  # pragma: no cover
    return header


def _focal_points(case: CaseTransfer) -> frozenset[str]:
    return frozenset({case.sending, case.destination})


def _require_guardian_for_child(is_minor: bool, step: Step) -> None:
    # TRM guidelines for children: a guardian consents on a child's behalf (principle 5).
    guardian = step.consent_given_by is GivenBy.GUARDIAN
    _require(not is_minor or guardian, "minor_needs_guardian_consent", type=step.type.value)


def _referral(step: Step) -> CaseTransfer:
    header = _header(step, ReferralHeader)
    country = header.destination_country
    _require(step.sender.kind is ParticipantKind.FOCAL_POINT, "referral_only_by_focal_point")
    _require(
        step.recipient.kind is ParticipantKind.FOCAL_POINT and step.recipient.country == country,
        "referral_only_to_destination_focal_point",
        country=country,
    )
    _require(country != step.sender.country, "referral_to_own_country")
    _require_guardian_for_child(header.subject_is_minor, step)
    return CaseTransfer(
        case_ref=step.case_ref,
        sending=step.sender.id,
        destination=step.recipient.id,
        destination_country=country,
        subject_is_minor=header.subject_is_minor,
        stage=Stage.REFERRED,
        referred_at=step.at,
    )


def _referral_response(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReferralResponseHeader)
    _require(
        step.sender.id == case.destination and step.recipient.id == case.sending,
        "referral_response_only_from_destination_to_sending",
    )
    _require(case.stage is Stage.REFERRED, "referral_already_answered")
    return replace(case, stage=Stage.ACCEPTED if header.accepted else Stage.DECLINED)


def _risk_assessment(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, RiskAssessmentHeader)
    between = {step.sender.id, step.recipient.id} == _focal_points(case)
    _require(between, "risk_assessment_only_between_focal_points")
    _require(
        case.stage in (Stage.ACCEPTED, Stage.RETURN_PREPARED), "risk_assessment_needs_acceptance"
    )
    _require(header.assessed_at <= step.at + rules.clock_skew, "risk_assessment_in_future")
    new = RiskAssessment(header.assessed_at, header.risk_level, header.return_recommended)
    latest = case.last_risk_assessment
    # The latest assessment counts (docs/design.md §6): one made earlier but sent later is
    # accepted (it is a fact of the case) but does not displace it.
    if latest is not None and new.assessed_at < latest.assessed_at:
        return case
    return replace(case, last_risk_assessment=new)


def _return_preparation(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReturnPreparationHeader)
    # The plan goes to the destination focal point, then, sealed to its own key, to the
    # receiving organisation it designates, so that it can prepare (TRM guidelines).
    to_org = step.recipient.id != case.destination
    _require(
        step.sender.id == case.sending
        and step.recipient.id in {case.destination, case.receiving_org},
        "return_preparation_only_from_sending_to_destination",
    )
    # A second return_preparation before reception replaces the plan (new date, escort or
    # organisation); every safeguard is checked again, against the new plan.
    prepared = case.stage in (Stage.ACCEPTED, Stage.RETURN_PREPARED)
    _require(prepared, "return_preparation_needs_acceptance")
    if to_org:  # the plan in force, to its organisation: it does not replace the plan
        same = (header.receiving_org, header.planned_arrival) == (
            case.receiving_org,
            case.planned_arrival,
        )
        _require(
            case.stage is Stage.RETURN_PREPARED
            and same
            and step.recipient.id == header.receiving_org,
            "return_plan_to_org_must_match_plan",
        )
    # Principle 5: no return without a recent risk assessment that recommends it.
    risk = case.last_risk_assessment
    recent = risk is not None and risk.assessed_at >= step.at - rules.risk_max_age
    if risk is None:
        why = "there is none"
    elif not risk.return_recommended:
        why = "the latest does not recommend return"
    else:
        why = "the latest is older"
    _require(
        risk is not None and risk.return_recommended and recent,
        "return_preparation_needs_recent_recommending_risk_assessment",
        span=_span(rules.risk_max_age),
        why=why,
    )
    # Principle 5: return only to a receiving organisation registered in the country of
    # return's NRM (the registry entry of the id the header names).
    org = step.receiving_org
    _require(
        org is not None
        and org.id == header.receiving_org
        and org.kind is ParticipantKind.RECEIVING_ORG
        and org.country == case.destination_country,
        "receiving_org_not_registered_in_country_of_return",
        country=case.destination_country,
    )
    # Principle 5: enough notice for the receiving organisation to prepare the reception.
    ahead = header.planned_arrival >= step.at + rules.min_notice
    _require(ahead, "planned_arrival_too_soon", span=_span(rules.min_notice))
    # TRM guidelines for children: guardian consent and a best-interests determination.
    _require_guardian_for_child(case.subject_is_minor, step)
    determined = not case.subject_is_minor or header.best_interests_ref is not None
    _require(determined, "minor_needs_best_interests_determination")
    if to_org:
        return replace(case, plan_sent_to_org=step.message_id)
    same_org = header.receiving_org == case.receiving_org
    return replace(
        case,
        stage=Stage.RETURN_PREPARED,
        receiving_org=header.receiving_org,
        planned_arrival=header.planned_arrival,
        plan_sent_to_org=None,
        readiness=None,
        pre_departure_contact_at=case.pre_departure_contact_at if same_org else None,
    )


def _reception_confirmation(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReceptionConfirmationHeader)
    # Principle 5: reception is confirmed only by the designated receiving organisation.
    _require(
        step.sender.id == case.receiving_org and step.recipient.id in _focal_points(case),
        "reception_confirmation_only_by_designated_receiving_org",
    )
    _require(case.stage is Stage.RETURN_PREPARED, "reception_confirmation_needs_return_preparation")
    _require(header.at <= step.at + rules.clock_skew, "reception_in_future")
    if header.outcome is ReceptionOutcome.RECEIVED:
        return replace(case, stage=Stage.RECEIVED, received_at=header.at)
    return replace(case, stage=Stage.NOT_RECEIVED)


def _from_org_before_travel(case: CaseTransfer, step: Step, sender_rule: str) -> None:
    """A step of the receiving organisation before travel: from the designated one, to a
    focal point, once it was sent the plan and before reception."""
    _require(
        step.sender.id == case.receiving_org and step.recipient.id in _focal_points(case),
        sender_rule,
    )
    sent = case.stage is Stage.RETURN_PREPARED and case.plan_sent_to_org is not None
    _require(sent, "needs_plan_sent_to_receiving_org", type=step.type.value)


def _reception_plan_response(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReceptionPlanResponseHeader)
    _from_org_before_travel(case, step, "reception_plan_response_only_by_designated_receiving_org")
    # cannot_receive refuses nothing: the plan stands until the sending focal point sends a
    # new return_preparation (another date, or another organisation).
    return replace(case, readiness=header.readiness)


def _pre_departure_contact(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, PreDepartureContactHeader)
    _from_org_before_travel(case, step, "pre_departure_contact_only_by_designated_receiving_org")
    _require(header.at <= step.at + rules.clock_skew, "pre_departure_contact_in_future")
    latest = case.pre_departure_contact_at
    return replace(case, pre_departure_contact_at=max(header.at, latest or header.at))


def _case_monitoring(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, CaseMonitoringHeader)
    _require(
        step.sender.id in {case.receiving_org, case.destination}
        and step.recipient.id in _focal_points(case) - {step.sender.id},
        "case_monitoring_only_by_receiving_org_or_destination",
    )
    _require(
        case.stage is Stage.RECEIVED and case.received_at is not None,
        "case_monitoring_needs_reception",
    )
    # TRM guidelines: monitoring lasts a stated period (one to three years) after return.
    end = (case.received_at or step.at) + rules.monitoring_period
    _require(step.at <= end, "monitoring_period_over", span=_span(rules.monitoring_period))
    _require(header.period_start <= header.period_end, "monitoring_period_reversed")
    return replace(case, last_monitoring_at=step.at)


def _case_closure(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    between = {step.sender.id, step.recipient.id} == _focal_points(case)
    _require(between, "case_closure_only_between_focal_points")
    return replace(case, stage=Stage.CLOSED, closed_at=step.at)


def _consent_withdrawal(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    by_sending = step.sender.id == case.sending
    _require(by_sending, "consent_withdrawal_only_by_sending_focal_point")
    # The consent record, not the case, carries the withdrawal (domain.consent): later
    # messages under it fail the scope check. The workflow state does not change.
    return case


_HANDLERS: dict[MessageType, Callable[[CaseTransfer, Step, Rules], CaseTransfer]] = {
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


def apply(case: CaseTransfer | None, step: Step, rules: Rules) -> CaseTransfer:
    """The state after ``step``, or :class:`RuleBroken`.

    ``case`` is the current state of the step's case reference (``None`` if never
    referred). A ``referral`` needs ``case`` None; every other type needs an existing case,
    ``consent_withdrawal`` included: withdrawing a consent of a case never referred is a
    matter of the consent record alone (``domain.consent``), not of a case transfer.
    """
    if case is not None and step.case_ref and step.case_ref != case.case_ref:
        raise ValueError("the step is of another case than the state given")
    if step.type is MessageType.REFERRAL:
        _require(case is None, "case_already_referred")
        return _referral(step)
    kind = step.type.value
    if case is None:
        _refuse("case_not_referred", type=kind)
    withdrawal = step.type is MessageType.CONSENT_WITHDRAWAL
    _require(case.stage is not Stage.CLOSED or withdrawal, "case_closed", type=kind)
    # Messages of a case go only between its parties (docs/design.md §4: focal points read their
    # own cases; receiving organisations what is addressed to them).
    parties = {party for party in (case.sending, case.destination, case.receiving_org) if party}
    among = step.sender.id in parties and step.recipient.id in parties
    _require(among, "not_a_party_of_this_case", type=kind)
    return _HANDLERS[step.type](case, step, rules)


def due_alerts(case: CaseTransfer, now: datetime, rules: Rules) -> frozenset[AlertKind]:
    """The alerts a case calls for at ``now`` (docs/design.md §6): a reception confirmation
    overdue after the planned arrival plus grace, or a monitoring report overdue after
    ``monitoring_interval`` without one, during the monitoring period. None once closed."""
    alerts: set[AlertKind] = set()
    arrival = case.planned_arrival
    if case.stage is Stage.RETURN_PREPARED and arrival and now > arrival + rules.reception_grace:
        alerts.add(AlertKind.RECEPTION_OVERDUE)
    if case.stage is Stage.RECEIVED and case.received_at is not None:
        last = case.last_monitoring_at or case.received_at
        in_period = now <= case.received_at + rules.monitoring_period
        if in_period and now > last + rules.monitoring_interval:
            alerts.add(AlertKind.MONITORING_OVERDUE)
    return frozenset(alerts)
