"""The case-transfer workflow (docs/design.md §6) and the return safeguards (§2, principle 5).

A *case transfer* links one case reference between a sending focal point (country of
exploitation) and a destination focal point (country of return). :func:`apply` is the whole
state machine: given the state and one message (a :class:`Step`, from the clear header and
the registry), it returns the new state or raises :class:`RuleBroken` naming the rule.
Stages only move forward (but for a return plan its recipient rejects, below); after
``case_closure`` only a ``consent_withdrawal`` is accepted.

Facts count once acknowledged (docs/consent-and-workflow.md): stages move when the broker
accepts a message, so the order of the workflow holds; a fact that *permits* a return (a
risk assessment that recommends it) counts only once the recipient's node has acknowledged
the message it came in (:func:`acknowledged`), while facts that *restrict* (a child's case, an
assessment against return, a best-interests determination against return) bind from
acceptance. A message its recipient's node rejects (:func:`rejected`) never counts.

Consent scope is checked apart (``domain.consent``); here only the children's rule on *who*
gave it applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn, TypeVar

from pydantic import BaseModel

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.case_state import (
    CaseTransfer,
    MonitoringReport,
    Party,
    RiskAssessment,
    Rules,
    Stage,
    Step,
)
from trm_broker.domain.consent import GivenBy, consent_needed
from trm_broker.domain.messages import (
    CaseMonitoringHeader,
    DataCategory,
    MessageType,
    PreDepartureContactHeader,
    ReceptionConfirmationHeader,
    ReceptionOutcome,
    ReceptionPlanResponseHeader,
    ReferralHeader,
    ReferralResponseHeader,
    ReturnPreparationHeader,
    RiskAssessmentHeader,
)
from trm_broker.domain.participants import ParticipantKind
from trm_broker.domain.payload_codes import BestInterestsOutcome

__all__ = [
    "PARTY_RULES",
    "RULES",
    "CaseTransfer",
    "Deadline",
    "Party",
    "RiskAssessment",
    "RuleBroken",
    "Rules",
    "Stage",
    "Step",
    "acknowledged",
    "apply",
    "consent_fits_case",
    "deadlines",
    "due_alerts",
    "rejected",
    "standing",
]

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
    "referral_rejected_by_recipient": "{type} needs the referral, which its recipient's node"
    " rejected: the sending focal point sends a corrected referral first",
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
    "risk_assessment_not_yet_acknowledged": "return_preparation counts only a risk_assessment"
    " its recipient has acknowledged: {which} is not yet acknowledged by its recipient; wait"
    " for it",
    "receiving_org_not_registered_in_country_of_return": "return_preparation must name a"
    " receiving organisation registered as a receiving_org in the country of return {country}",
    "planned_arrival_too_soon": "return_preparation needs the planned arrival at least {span}"
    " ahead, so the receiving organisation can prepare",
    "minor_needs_best_interests_determination": "return_preparation for a child needs a"
    " best-interests determination reference whose outcome is that return is in the child's"
    " best interests",
    "best_interests_do_not_support_return": "return_preparation is refused: its best-interests"
    " determination found that return is not in the child's best interests",
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


#: The rules on who sends a type to whom in a case (the rest say when): a participant one of
#: them bars never sends that type to that party of the case, at any stage.
PARTY_RULES: frozenset[str] = frozenset(
    {
        "not_a_party_of_this_case",
        "referral_only_by_focal_point",
        "referral_only_to_destination_focal_point",
        "referral_to_own_country",
        "referral_response_only_from_destination_to_sending",
        "risk_assessment_only_between_focal_points",
        "return_preparation_only_from_sending_to_destination",
        "reception_confirmation_only_by_designated_receiving_org",
        "case_monitoring_only_by_receiving_org_or_destination",
        "case_closure_only_between_focal_points",
        "consent_withdrawal_only_by_sending_focal_point",
        "reception_plan_response_only_by_designated_receiving_org",
        "pre_departure_contact_only_by_designated_receiving_org",
    }
)


class RuleBroken(Exception):
    """A message the workflow does not allow now (409). ``rule`` is a stable code (a key of
    :data:`RULES`), ``detail`` one sentence for a case worker; neither holds personal data."""

    def __init__(self, rule: str, detail: str, window: timedelta | None = None) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail
        #: The rule's window (``{span}`` in its sentence), for a refusal in another language.
        self.window = window


def _refuse(rule: str, **facts: object) -> NoReturn:
    """Refuses by ``rule``; a :class:`timedelta` fact is its window, stated as people do."""
    window = next((fact for fact in facts.values() if isinstance(fact, timedelta)), None)
    words = {k: span(v) if isinstance(v, timedelta) else v for k, v in facts.items()}
    raise RuleBroken(rule, RULES[rule].format(**words), window)


def _require(condition: bool, rule: str, **facts: object) -> None:
    if not condition:
        _refuse(rule, **facts)


def span_parts(length: timedelta) -> tuple[int, str]:
    """A rule's window as people state it: ``(30, "day")``, ``(72, "hour")`` (days from a
    week on, else the largest unit that divides it)."""
    seconds = int(length.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and (unit != "day" or seconds >= 7 * size):
            return seconds // size, unit
    return seconds, "second"


def span(length: timedelta) -> str:
    """``30 days``, ``72 hours``: a rule's window in the broker's English sentence."""
    count, unit = span_parts(length)
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _header(step: Step, kind: type[_H]) -> _H:
    # Step.__post_init__ already guarantees the match; this narrows the type for mypy.
    header = step.header
    if not isinstance(header, kind):
        raise TypeError(f"expected a {kind.__name__}")  # pragma: no cover
    return header


def _focal_points(case: CaseTransfer) -> frozenset[str]:
    return frozenset({case.sending, case.destination})


def consent_fits_case(
    is_minor: bool,
    given_by: GivenBy | None,
    message_type: MessageType,
    data_categories: frozenset[DataCategory],
) -> bool:
    """Whether a consent given by ``given_by`` may cover a message of this type and these
    categories in a case that is (``is_minor``) or is not a child's."""
    # TRM guidelines for children: a guardian consents on a child's behalf (principle 5), for
    # every message of the case that needs a consent; so after a guardian's withdrawal the
    # child's own consent covers nothing. A message that needs none (a closure without
    # personal data, a withdrawal) is free of the rule, so a child's case can be closed.
    if not consent_needed(message_type, data_categories):
        return True
    return not is_minor or given_by is GivenBy.GUARDIAN


def _require_guardian_for_child(is_minor: bool, step: Step) -> None:
    fits = consent_fits_case(is_minor, step.consent_given_by, step.type, step.data_categories)
    _require(fits, "minor_needs_guardian_consent", type=step.type.value)


def _says_minor(step: Step) -> bool:
    """Whether the message's own header says the case is a child's (a referral, a return plan
    naming a guardian or a best-interests determination): sticky once accepted."""
    header = step.header
    return isinstance(header, ReferralHeader | ReturnPreparationHeader) and header.subject_is_minor


def _referral(step: Step, rejected: CaseTransfer | None = None) -> CaseTransfer:
    header = _header(step, ReferralHeader)
    country = header.destination_country
    _referral_standing(step.sender)
    _require(
        step.recipient.kind is ParticipantKind.FOCAL_POINT and step.recipient.country == country,
        "referral_only_to_destination_focal_point",
        country=country,
    )
    _require(country != step.sender.country, "referral_to_own_country")
    # A corrected referral (after its recipient rejected the first) starts the case afresh,
    # but a child's case stays a child's: a restricting fact binds from acceptance.
    minor = header.subject_is_minor or (rejected is not None and rejected.subject_is_minor)
    _require_guardian_for_child(minor, step)
    return CaseTransfer(
        case_ref=step.case_ref,
        sending=step.sender.id,
        destination=step.recipient.id,
        destination_country=country,
        subject_is_minor=minor,
        stage=Stage.REFERRED,
        referred_at=step.at,
        referral_message_id=step.message_id,
    )


def _referral_standing(sender: Party) -> None:
    _require(sender.kind is ParticipantKind.FOCAL_POINT, "referral_only_by_focal_point")


# Each type's rules come in two parts: its *standing* (``_*_standing``: who may send it to whom
# and when, from the case's state, the parties and the time), and its handler (what its header
# must say, and the new state). :func:`apply` checks both; :func:`standing` only the first, so
# that what a party may send next (``domain.next_steps``) is read from the very same rules.


def _referral_response_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    _require(
        sender.id == case.destination and recipient.id == case.sending,
        "referral_response_only_from_destination_to_sending",
    )
    _require(case.stage is Stage.REFERRED, "referral_already_answered")


def _referral_response(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReferralResponseHeader)
    stage = Stage.ACCEPTED if header.accepted else Stage.DECLINED
    return replace(case, stage=stage, response_message_id=step.message_id)


def _risk_assessment_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    between = {sender.id, recipient.id} == _focal_points(case)
    _require(between, "risk_assessment_only_between_focal_points")
    _require(
        case.stage in (Stage.ACCEPTED, Stage.RETURN_PREPARED), "risk_assessment_needs_acceptance"
    )


def _risk_assessment(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, RiskAssessmentHeader)
    _require(header.assessed_at <= step.at + rules.clock_skew, "risk_assessment_in_future")
    new = RiskAssessment(
        header.assessed_at, header.risk_level, header.return_recommended, step.message_id
    )
    latest = case.last_risk_assessment
    # The latest assessment counts (docs/design.md §6): one made earlier but sent later is
    # accepted (it is a fact of the case) but does not displace it.
    if latest is not None and new.assessed_at < latest.assessed_at:
        return case
    # It counts once its recipient's node acknowledges it (:func:`acknowledged`); until then
    # it holds back any return preparation, whatever it recommends.
    return replace(case, pending_risk_assessments=(*case.pending_risk_assessments, new))


def _return_preparation_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    # The plan goes to the destination focal point, then, sealed to its own key, to the
    # receiving organisation it designates, so that it can prepare (TRM guidelines).
    _require(
        sender.id == case.sending and recipient.id in {case.destination, case.receiving_org},
        "return_preparation_only_from_sending_to_destination",
    )
    # A second return_preparation before reception replaces the plan (new date, escort or
    # organisation); every safeguard is checked again, against the new plan.
    prepared = case.stage in (Stage.ACCEPTED, Stage.RETURN_PREPARED)
    _require(prepared, "return_preparation_needs_acceptance")
    if recipient.id != case.destination:  # the plan in force, to its organisation
        _require(case.stage is Stage.RETURN_PREPARED, "return_plan_to_org_must_match_plan")
    # Principle 5: no return without a recent risk assessment that recommends it, and that
    # its recipient acknowledged: none accepted since may be waiting for its answer.
    _require_no_later_pending_assessment(case)
    risk = case.last_risk_assessment
    recent = risk is not None and risk.assessed_at >= at - rules.risk_max_age
    if risk is None:
        why = "there is none"
    elif not risk.return_recommended:
        why = "the latest does not recommend return"
    else:
        why = "the latest is older"
    _require(
        risk is not None and risk.return_recommended and recent,
        "return_preparation_needs_recent_recommending_risk_assessment",
        span=rules.risk_max_age,
        why=why,
    )


def _return_preparation(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReturnPreparationHeader)
    to_org = step.recipient.id != case.destination
    if to_org:  # the plan in force, to its organisation: it does not replace the plan
        same = (header.receiving_org, header.planned_arrival) == (
            case.receiving_org,
            case.planned_arrival,
        )
        _require(
            same and step.recipient.id == header.receiving_org,
            "return_plan_to_org_must_match_plan",
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
    _require(ahead, "planned_arrival_too_soon", span=rules.min_notice)
    # TRM guidelines for children (the guardian's consent is checked in :func:`apply`).
    minor = _require_best_interests_support_return(case, header)
    if to_org:
        return replace(case, plan_sent_to_org=step.message_id, subject_is_minor=minor)
    same_org = header.receiving_org == case.receiving_org
    return replace(
        case,
        stage=Stage.RETURN_PREPARED,
        receiving_org=header.receiving_org,
        planned_arrival=header.planned_arrival,
        subject_is_minor=minor,
        plan_message_id=step.message_id,
        plan_sent_to_org=None,
        readiness=None,
        pre_departure_contact_at=case.pre_departure_contact_at if same_org else None,
    )


def _require_no_later_pending_assessment(case: CaseTransfer) -> None:
    latest = case.last_risk_assessment
    waiting = [
        pending
        for pending in case.pending_risk_assessments
        if latest is None or pending.assessed_at >= latest.assessed_at
    ]
    which = "the risk assessment" if latest is None else "a later risk assessment"
    _require(not waiting, "risk_assessment_not_yet_acknowledged", which=which)


def _require_best_interests_support_return(
    case: CaseTransfer, header: ReturnPreparationHeader
) -> bool:
    """Whether the case is a child's after this plan; refused unless a best-interests
    determination supports the return where one is needed or given."""
    # Like a risk assessment against return, a determination against it blocks the return.
    against = header.best_interests_outcome is BestInterestsOutcome.RETURN_NOT_IN_BEST_INTERESTS
    _require(not against, "best_interests_do_not_support_return")
    minor = case.subject_is_minor or header.subject_is_minor
    supports = (
        header.best_interests_ref is not None
        and header.best_interests_outcome is BestInterestsOutcome.RETURN_IN_BEST_INTERESTS
    )
    _require(not minor or supports, "minor_needs_best_interests_determination")
    return minor


def _reception_confirmation_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    # Principle 5: reception is confirmed only by the designated receiving organisation.
    _require(
        sender.id == case.receiving_org and recipient.id in _focal_points(case),
        "reception_confirmation_only_by_designated_receiving_org",
    )
    _require(case.stage is Stage.RETURN_PREPARED, "reception_confirmation_needs_return_preparation")


def _reception_confirmation(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReceptionConfirmationHeader)
    _require(header.at <= step.at + rules.clock_skew, "reception_in_future")
    if header.outcome is ReceptionOutcome.RECEIVED:
        return replace(
            case, stage=Stage.RECEIVED, received_at=header.at, reception_message_id=step.message_id
        )
    return replace(case, stage=Stage.NOT_RECEIVED, reception_message_id=step.message_id)


def _from_org_before_travel(
    case: CaseTransfer, sender: Party, recipient: Party, kind: MessageType, sender_rule: str
) -> None:
    """A step of the receiving organisation before travel: from the designated one, to a
    focal point, once it was sent the plan and before reception."""
    _require(
        sender.id == case.receiving_org and recipient.id in _focal_points(case),
        sender_rule,
    )
    sent = case.stage is Stage.RETURN_PREPARED and case.plan_sent_to_org is not None
    _require(sent, "needs_plan_sent_to_receiving_org", type=kind.value)


def _reception_plan_response_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    _from_org_before_travel(
        case,
        sender,
        recipient,
        MessageType.RECEPTION_PLAN_RESPONSE,
        "reception_plan_response_only_by_designated_receiving_org",
    )


def _reception_plan_response(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, ReceptionPlanResponseHeader)
    # cannot_receive refuses nothing: the plan stands until the sending focal point sends a
    # new return_preparation (another date, or another organisation).
    return replace(case, readiness=header.readiness)


def _pre_departure_contact_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    _from_org_before_travel(
        case,
        sender,
        recipient,
        MessageType.PRE_DEPARTURE_CONTACT,
        "pre_departure_contact_only_by_designated_receiving_org",
    )


def _pre_departure_contact(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, PreDepartureContactHeader)
    _require(header.at <= step.at + rules.clock_skew, "pre_departure_contact_in_future")
    latest = case.pre_departure_contact_at
    return replace(case, pre_departure_contact_at=max(header.at, latest or header.at))


def _case_monitoring_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    _require(
        sender.id in {case.receiving_org, case.destination}
        and recipient.id in _focal_points(case) - {sender.id},
        "case_monitoring_only_by_receiving_org_or_destination",
    )
    _require(
        case.stage is Stage.RECEIVED and case.received_at is not None,
        "case_monitoring_needs_reception",
    )
    # TRM guidelines: monitoring lasts a stated period (one to three years) after return.
    end = (case.received_at or at) + rules.monitoring_period
    _require(at <= end, "monitoring_period_over", span=rules.monitoring_period)


def _case_monitoring(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    header = _header(step, CaseMonitoringHeader)
    _require(header.period_start <= header.period_end, "monitoring_period_reversed")
    if not step.message_id:  # nothing can answer it: it counts as it is
        return replace(case, last_monitoring_at=step.at)
    # It counts from acceptance, as a stage does, until its recipient's node rejects it
    # (:func:`rejected`): then the monitoring deadline is again that of the reports before.
    counted = case.monitoring_answered_at if case.monitoring_unanswered else case.last_monitoring_at
    return replace(
        case,
        last_monitoring_at=step.at,
        monitoring_answered_at=counted,
        monitoring_unanswered=(
            *case.monitoring_unanswered,
            MonitoringReport(step.message_id, step.at),
        ),
    )


def _case_closure_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    between = {sender.id, recipient.id} == _focal_points(case)
    _require(between, "case_closure_only_between_focal_points")


def _case_closure(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    return replace(case, stage=Stage.CLOSED, closed_at=step.at)


def _consent_withdrawal_standing(
    case: CaseTransfer, sender: Party, recipient: Party, at: datetime, rules: Rules
) -> None:
    by_sending = sender.id == case.sending
    _require(by_sending, "consent_withdrawal_only_by_sending_focal_point")


def _consent_withdrawal(case: CaseTransfer, step: Step, rules: Rules) -> CaseTransfer:
    # The consent record, not the case, carries the withdrawal (domain.consent): later
    # messages under it fail the scope check. The workflow state does not change.
    return case


_STANDING: dict[MessageType, Callable[[CaseTransfer, Party, Party, datetime, Rules], None]] = {
    MessageType.REFERRAL_RESPONSE: _referral_response_standing,
    MessageType.RISK_ASSESSMENT: _risk_assessment_standing,
    MessageType.RETURN_PREPARATION: _return_preparation_standing,
    MessageType.RECEPTION_CONFIRMATION: _reception_confirmation_standing,
    MessageType.CASE_MONITORING: _case_monitoring_standing,
    MessageType.CASE_CLOSURE: _case_closure_standing,
    MessageType.CONSENT_WITHDRAWAL: _consent_withdrawal_standing,
    MessageType.RECEPTION_PLAN_RESPONSE: _reception_plan_response_standing,
    MessageType.PRE_DEPARTURE_CONTACT: _pre_departure_contact_standing,
}

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
        _require_new_referral(case, step.sender)
        return _referral(step, case)
    case = _open_to(case, step.type, step.sender, step.recipient)
    # The children's rules hold for every message of a child's case (sticky, from the
    # referral or any later message that says so), not only for the referral and the return.
    _require_guardian_for_child(case.subject_is_minor or _says_minor(step), step)
    _STANDING[step.type](case, step.sender, step.recipient, step.at, rules)
    return _HANDLERS[step.type](case, step, rules)


def standing(
    case: CaseTransfer | None,
    message_type: MessageType,
    sender: Party,
    recipient: Party,
    at: datetime,
    rules: Rules,
) -> None:
    """:class:`RuleBroken` unless a message of this type from ``sender`` to ``recipient``
    could be accepted at ``at``, given a header that says what the rules ask: the rules of
    :func:`apply` that read the case's state, the parties and the time, in its order, and not
    those that read the header or who gave the consent. What :func:`apply` accepts, this
    accepts too; what this refuses, :func:`apply` refuses."""
    if message_type is MessageType.REFERRAL:
        _require_new_referral(case, sender)
        _referral_standing(sender)
        return
    case = _open_to(case, message_type, sender, recipient)
    _STANDING[message_type](case, sender, recipient, at, rules)


def _require_new_referral(case: CaseTransfer | None, sender: Party) -> None:
    # Once per case reference; again only to correct a referral its recipient rejected, by
    # the same sending focal point (nobody else takes over a case reference).
    _require(case is None or _may_correct_referral(case, sender), "case_already_referred")


def _open_to(
    case: CaseTransfer | None, message_type: MessageType, sender: Party, recipient: Party
) -> CaseTransfer:
    """The rules of every type but a referral: a case to send in, open, and between its
    parties; the case."""
    kind = message_type.value
    if case is None:
        _refuse("case_not_referred", type=kind)
    withdrawal = message_type is MessageType.CONSENT_WITHDRAWAL
    _require(case.stage is not Stage.CLOSED or withdrawal, "case_closed", type=kind)
    # Messages of a case go only between its parties (docs/design.md §4: focal points read their
    # own cases; receiving organisations what is addressed to them).
    parties = {party for party in (case.sending, case.destination, case.receiving_org) if party}
    among = sender.id in parties and recipient.id in parties
    _require(among, "not_a_party_of_this_case", type=kind)
    _require_referral_standing(case, message_type)
    return case


def _may_correct_referral(case: CaseTransfer, sender: Party) -> bool:
    return case.referral_rejected and sender.id == case.sending and case.stage is not Stage.CLOSED


def _require_referral_standing(case: CaseTransfer, message_type: MessageType) -> None:
    # A referral its recipient's node rejected never reached it: nothing builds on it until
    # a corrected one is accepted, but the case can still be closed or its consent withdrawn.
    free = message_type in (MessageType.CASE_CLOSURE, MessageType.CONSENT_WITHDRAWAL)
    standing = not case.referral_rejected or free
    _require(standing, "referral_rejected_by_recipient", type=message_type.value)


def acknowledged(case: CaseTransfer, message_id: str) -> CaseTransfer:
    """The state once the recipient's node has acknowledged message ``message_id`` of the
    case: a risk assessment it carried now counts, as the latest if it is (by
    ``assessed_at``); a monitoring report is no longer one a rejection could take back. Any
    other message leaves the state as it is (the same object)."""
    if not message_id:
        return case
    for report in case.monitoring_unanswered:
        if report.message_id == message_id:
            answered = case.monitoring_answered_at
            return replace(
                case,
                monitoring_unanswered=tuple(
                    r for r in case.monitoring_unanswered if r is not report
                ),
                monitoring_answered_at=report.at if answered is None else max(answered, report.at),
            )
    for pending in case.pending_risk_assessments:
        if pending.message_id == message_id:
            rest = tuple(p for p in case.pending_risk_assessments if p is not pending)
            latest = case.last_risk_assessment
            if latest is None or pending.assessed_at >= latest.assessed_at:
                latest = pending
            return replace(case, pending_risk_assessments=rest, last_risk_assessment=latest)
    return case


def rejected(case: CaseTransfer, message_id: str) -> CaseTransfer:
    """The state once the recipient's node has rejected message ``message_id`` of the case
    (its payload does not conform, or contradicts its header): what it brought never counts.

    - a risk assessment is dropped;
    - the current return plan is withdrawn: the case goes back to ``accepted``, without a
      plan or a designated receiving organisation, unless the reception was confirmed;
    - the plan's copy to its receiving organisation counts as not sent (nor answered);
    - a referral lets its sender send a corrected one on the same case reference (until
      then nothing else but a closure or a withdrawal is accepted);
    - the referral's answer is void: the case waits for the destination's answer again
      (``referred``), unless it has gone further since;
    - the reception confirmation is void: the case waits for one again
      (``return_prepared``, with its reception deadline), and the monitoring reports
      accepted since count for nothing, unless the case was closed;
    - a monitoring report does not count: the monitoring deadline runs from the reports
      before it that were not rejected.

    Any other message leaves the state as it is (the same object).
    """
    if not message_id:
        return case
    rest = tuple(p for p in case.pending_risk_assessments if p.message_id != message_id)
    if len(rest) != len(case.pending_risk_assessments):
        return replace(case, pending_risk_assessments=rest)
    reports = tuple(r for r in case.monitoring_unanswered if r.message_id != message_id)
    if len(reports) != len(case.monitoring_unanswered):
        times = [r.at for r in reports]
        if case.monitoring_answered_at is not None:
            times.append(case.monitoring_answered_at)
        return replace(
            case, monitoring_unanswered=reports, last_monitoring_at=max(times, default=None)
        )
    reception = (Stage.RECEIVED, Stage.NOT_RECEIVED)
    if message_id == case.reception_message_id and case.stage in reception:
        return replace(
            case,
            stage=Stage.RETURN_PREPARED,
            received_at=None,
            reception_message_id="",
            last_monitoring_at=None,
            monitoring_unanswered=(),
            monitoring_answered_at=None,
        )
    answered = (Stage.ACCEPTED, Stage.DECLINED)
    if message_id == case.response_message_id and case.stage in answered:
        return replace(case, stage=Stage.REFERRED, response_message_id="")
    if message_id == case.plan_message_id and case.stage is Stage.RETURN_PREPARED:
        return replace(
            case,
            stage=Stage.ACCEPTED,
            receiving_org=None,
            planned_arrival=None,
            plan_message_id="",
            plan_sent_to_org=None,
            readiness=None,
            pre_departure_contact_at=None,
        )
    if message_id == case.plan_sent_to_org:  # the organisation's copy: it was not sent
        return replace(case, plan_sent_to_org=None, readiness=None)
    if message_id == case.referral_message_id and case.stage is not Stage.CLOSED:
        return replace(case, referral_rejected=True)
    return case


@dataclass(frozen=True)
class Deadline:
    """A step the case waits for by a time (docs/design.md §6, alerts): ``name`` says which
    (``reception_due``: the receiving organisation's reception_confirmation;
    ``monitoring_due``: the next case_monitoring report), ``alert`` is raised once it is
    missed. ``until``: the end of the period in which it holds (monitoring), if any."""

    name: str
    due_at: datetime
    alert: AlertKind
    until: datetime | None = None

    def holds(self, now: datetime) -> bool:
        return self.until is None or now <= self.until

    def overdue(self, now: datetime) -> bool:
        return self.holds(now) and now > self.due_at


def deadlines(case: CaseTransfer, rules: Rules) -> tuple[Deadline, ...]:
    """What the case waits for, and by when: a reception confirmation by the planned
    arrival plus ``reception_grace``; during the monitoring period, a monitoring report
    ``monitoring_interval`` after the last (or after reception). None once closed."""
    found: list[Deadline] = []
    arrival = case.planned_arrival
    if case.stage is Stage.RETURN_PREPARED and arrival is not None:
        due = arrival + rules.reception_grace
        found.append(Deadline("reception_due", due, AlertKind.RECEPTION_OVERDUE))
    if case.stage is Stage.RECEIVED and case.received_at is not None:
        last = case.last_monitoring_at or case.received_at
        found.append(
            Deadline(
                "monitoring_due",
                last + rules.monitoring_interval,
                AlertKind.MONITORING_OVERDUE,
                until=case.received_at + rules.monitoring_period,
            )
        )
    return tuple(found)


def due_alerts(case: CaseTransfer, now: datetime, rules: Rules) -> frozenset[AlertKind]:
    """The alerts a case calls for at ``now`` (docs/design.md §6): those of its
    :func:`deadlines` that are overdue. None once closed."""
    return frozenset(deadline.alert for deadline in deadlines(case, rules) if deadline.overdue(now))
