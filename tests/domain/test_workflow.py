"""The case-transfer workflow (docs/design.md §6) and its return safeguards (§2, principle 5):
every rule accepts what it should and refuses, by name and in words, what it should not."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import BaseModel

from tests.pace import examples
from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.consent import GivenBy, consent_needed
from trm_broker.domain.messages import (
    HEADER_MODELS,
    CaseClosureHeader,
    CaseMonitoringHeader,
    ClosureReason,
    ConsentWithdrawalHeader,
    DataCategory,
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
from trm_broker.domain.payload_codes import BestInterestsOutcome
from trm_broker.domain.workflow import (
    RULES,
    CaseTransfer,
    Party,
    RiskAssessment,
    RuleBroken,
    Rules,
    Stage,
    Step,
    acknowledged,
    apply,
    deadlines,
    due_alerts,
    rejected,
)

FOCAL, ORG_KIND = ParticipantKind.FOCAL_POINT, ParticipantKind.RECEIVING_ORG
NG = Party("ng.naptip", FOCAL, "NG")  # sending focal point (country of exploitation)
GB = Party("gb.nrm", FOCAL, "GB")  # destination focal point (country of return)
ORG = Party("gb.shelter", ORG_KIND, "GB")  # the receiving organisation designated
OTHER_ORG = Party("gb.caritas", ORG_KIND, "GB")  # registered in GB, not designated
FR = Party("fr.ofpra", FOCAL, "FR")  # a focal point with no part in the case
FR_ORG = Party("fr.accueil", ORG_KIND, "FR")
NG_ORG = Party("ng.shelter", ORG_KIND, "NG")
NG_OTHER = Party("ng.police", FOCAL, "NG")
REGISTRY = {p.id: p for p in (NG, GB, ORG, OTHER_ORG, FR, FR_ORG, NG_ORG, NG_OTHER)}

CASE = "NG-2025-0001"
RULES_ = Rules()
TICK = timedelta(microseconds=1)
T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
T_RESPONSE = T0 + timedelta(hours=1)
T_RISK = T0 + timedelta(days=1)
T_PREPARE = T0 + timedelta(days=2)
T_PLAN_TO_ORG = T_PREPARE + timedelta(minutes=1)
T_READY = T_PREPARE + timedelta(days=1)
T_CONTACT = T_PREPARE + timedelta(days=2)
PLAN_TO_ORG_ID = "0199aa00-0000-7000-8000-00000000000a"
ARRIVAL = T0 + timedelta(days=10)
T_MONITOR = ARRIVAL + timedelta(days=30)
SKEW = RULES_.clock_skew

# --- steps -------------------------------------------------------------------------------

TYPE_OF: dict[type[BaseModel], MessageType] = {model: kind for kind, model in HEADER_MODELS.items()}
#: Each step is a message of its own, as the broker's envelope ids are.
_IDS = itertools.count(1)
IN_BEST_INTERESTS = BestInterestsOutcome.RETURN_IN_BEST_INTERESTS
NOT_IN_BEST_INTERESTS = BestInterestsOutcome.RETURN_NOT_IN_BEST_INTERESTS


def step(
    header: BaseModel,
    sender: Party,
    recipient: Party,
    at: datetime,
    given_by: GivenBy | None = GivenBy.PERSON,
    receiving_org: Party | None = None,
    message_id: str = "",
) -> Step:
    return Step(
        type=TYPE_OF[type(header)],
        sender=sender,
        recipient=recipient,
        header=header,
        consent_given_by=given_by,
        at=at,
        receiving_org=receiving_org,
        case_ref=CASE,
        message_id=message_id or f"m-{next(_IDS)}",
    )


def guardian(message: Step) -> Step:
    """The message under a guardian's consent, as every message of a child's case must be."""
    return replace(message, consent_given_by=GivenBy.GUARDIAN)


def without_data(message: Step) -> Step:
    """The message carrying no personal data, under no consent (a closure may)."""
    return replace(message, data_categories=frozenset(), consent_given_by=None)


def referral(
    at: datetime = T0,
    *,
    minor: bool = False,
    given_by: GivenBy | None = None,
    sender: Party = NG,
    recipient: Party = GB,
    country: str = "GB",
) -> Step:
    if given_by is None:
        given_by = GivenBy.GUARDIAN if minor else GivenBy.PERSON
    header = ReferralHeader(destination_country=country, subject_is_minor=minor)
    return step(header, sender, recipient, at, given_by)


def response(
    at: datetime = T_RESPONSE, *, accepted: bool = True, sender: Party = GB, recipient: Party = NG
) -> Step:
    return step(ReferralResponseHeader(accepted=accepted), sender, recipient, at)


def assessment(
    at: datetime = T_RISK,
    *,
    assessed_at: datetime | None = None,
    recommended: bool = True,
    level: RiskLevel = RiskLevel.LOW,
    sender: Party = GB,
    recipient: Party = NG,
) -> Step:
    header = RiskAssessmentHeader(
        risk_level=level,
        return_recommended=recommended,
        assessed_at=at - timedelta(hours=2) if assessed_at is None else assessed_at,
    )
    return step(header, sender, recipient, at)


_UNSET: Any = object()


def preparation(
    at: datetime = T_PREPARE,
    *,
    arrival: datetime = ARRIVAL,
    org: str = ORG.id,
    registered: Party | None = _UNSET,
    best_interests: str | None = None,
    outcome: BestInterestsOutcome | None = None,
    minor: bool = False,
    given_by: GivenBy | None = GivenBy.PERSON,
    sender: Party = NG,
    recipient: Party = GB,
    message_id: str = "",
) -> Step:
    header = ReturnPreparationHeader(
        receiving_org=org,
        planned_arrival=arrival,
        best_interests_ref=best_interests,
        best_interests_outcome=outcome,
        subject_is_minor=minor,
    )
    entry = REGISTRY.get(org) if registered is _UNSET else registered
    return step(header, sender, recipient, at, given_by, entry, message_id)


def plan_to_org(at: datetime = T_PLAN_TO_ORG, **changes: Any) -> Step:
    """The plan in force, sent on to the receiving organisation it designates."""
    return preparation(at, **{"recipient": ORG, "message_id": PLAN_TO_ORG_ID, **changes})


def plan_response(
    at: datetime = T_READY,
    *,
    readiness: Readiness = Readiness.READY,
    sender: Party = ORG,
    recipient: Party = NG,
) -> Step:
    return step(ReceptionPlanResponseHeader(readiness=readiness), sender, recipient, at)


def contact(
    at: datetime = T_CONTACT,
    *,
    contacted_at: datetime | None = None,
    sender: Party = ORG,
    recipient: Party = NG,
) -> Step:
    moment = at - timedelta(hours=3) if contacted_at is None else contacted_at
    return step(PreDepartureContactHeader(at=moment), sender, recipient, at)


def child_preparation(at: datetime = T_PREPARE, **changes: Any) -> Step:
    child = {"given_by": GivenBy.GUARDIAN, "best_interests": "bid:7", "minor": True}
    return preparation(at, **{**child, "outcome": IN_BEST_INTERESTS, **changes})


def reception(
    at: datetime = ARRIVAL + timedelta(hours=1),
    *,
    outcome: ReceptionOutcome = ReceptionOutcome.RECEIVED,
    received_at: datetime = ARRIVAL,
    sender: Party = ORG,
    recipient: Party = GB,
) -> Step:
    header = ReceptionConfirmationHeader(outcome=outcome, at=received_at)
    return step(header, sender, recipient, at)


def monitoring(
    at: datetime = T_MONITOR,
    *,
    start: date = date(2025, 3, 11),
    end: date = date(2025, 4, 10),
    sender: Party = ORG,
    recipient: Party = GB,
) -> Step:
    header = CaseMonitoringHeader(period_start=start, period_end=end)
    return step(header, sender, recipient, at)


def closure(
    at: datetime = T_MONITOR + timedelta(days=1), *, sender: Party = NG, recipient: Party = GB
) -> Step:
    return step(CaseClosureHeader(reason=ClosureReason.REINTEGRATED), sender, recipient, at)


def withdrawal(
    at: datetime = T_MONITOR + timedelta(days=2), *, sender: Party = NG, recipient: Party = GB
) -> Step:
    return step(ConsentWithdrawalHeader(), sender, recipient, at, given_by=None)


# --- states, reached by applying steps ----------------------------------------------------


def run(*steps: Step, case: CaseTransfer | None = None) -> CaseTransfer:
    """Apply each step, and acknowledge it as its recipient's node does when all is well."""
    for one in steps:
        case = acknowledged(apply(case, one, RULES_), one.message_id)
    assert case is not None
    return case


def referred(minor: bool = False) -> CaseTransfer:
    return run(referral(minor=minor))


def accepted(minor: bool = False) -> CaseTransfer:
    return run(guardian(response()) if minor else response(), case=referred(minor))


def declined() -> CaseTransfer:
    return run(response(accepted=False), case=referred())


def assessed(**changes: Any) -> CaseTransfer:
    return run(assessment(**changes), case=accepted())


def child_assessed() -> CaseTransfer:
    return run(guardian(assessment()), case=accepted(minor=True))


def prepared() -> CaseTransfer:
    return run(preparation(), case=assessed())


def plan_sent() -> CaseTransfer:
    return run(plan_to_org(), case=prepared())


def child_plan_prepared() -> CaseTransfer:
    return run(child_preparation(), case=child_assessed())


def received() -> CaseTransfer:
    return run(reception(), case=prepared())


def not_received() -> CaseTransfer:
    return run(reception(outcome=ReceptionOutcome.NOT_ARRIVED), case=prepared())


def monitored() -> CaseTransfer:
    return run(monitoring(), case=received())


def closed() -> CaseTransfer:
    return run(closure(), case=received())


def referral_rejected(minor: bool = False) -> CaseTransfer:
    case = apply(None, referral(minor=minor), RULES_)
    return rejected(case, case.referral_message_id)


# --- happy paths --------------------------------------------------------------------------


def test_adult_case_from_referral_to_closure() -> None:
    sent = referral()
    case = apply(None, sent, RULES_)
    assert case == CaseTransfer(
        case_ref=CASE,
        sending="ng.naptip",
        destination="gb.nrm",
        destination_country="GB",
        subject_is_minor=False,
        stage=Stage.REFERRED,
        referred_at=T0,
        referral_message_id=sent.message_id,
    )
    case = apply(case, response(), RULES_)
    assert case.stage is Stage.ACCEPTED
    risk = assessment(level=RiskLevel.MEDIUM)
    case = acknowledged(apply(case, risk, RULES_), risk.message_id)
    assert case.last_risk_assessment == RiskAssessment(
        T_RISK - timedelta(hours=2), RiskLevel.MEDIUM, True, risk.message_id
    )
    assert case.pending_risk_assessments == ()
    case = apply(case, preparation(), RULES_)
    assert (case.stage, case.receiving_org, case.planned_arrival) == (
        Stage.RETURN_PREPARED,
        "gb.shelter",
        ARRIVAL,
    )
    case = apply(case, reception(), RULES_)
    assert (case.stage, case.received_at) == (Stage.RECEIVED, ARRIVAL)
    case = apply(case, monitoring(), RULES_)
    assert case.last_monitoring_at == T_MONITOR
    case = apply(case, monitoring(T_MONITOR + timedelta(days=90), sender=GB, recipient=NG), RULES_)
    assert case.last_monitoring_at == T_MONITOR + timedelta(days=90)
    case = apply(case, closure(T_MONITOR + timedelta(days=100)), RULES_)
    assert (case.stage, case.closed_at) == (Stage.CLOSED, T_MONITOR + timedelta(days=100))
    assert due_alerts(case, T_MONITOR + timedelta(days=300), RULES_) == frozenset()


def test_child_case_from_referral_to_closure() -> None:
    case = run(
        referral(minor=True, given_by=GivenBy.GUARDIAN),
        guardian(response()),
        guardian(assessment(sender=NG, recipient=GB)),
        child_preparation(),
        guardian(reception(recipient=NG)),
        guardian(monitoring(sender=GB, recipient=NG)),
        guardian(closure(sender=GB, recipient=NG)),
    )
    assert case.subject_is_minor
    assert (case.stage, case.receiving_org, case.received_at) == (Stage.CLOSED, ORG.id, ARRIVAL)


# --- every rule: accepted -----------------------------------------------------------------

State = Callable[[], CaseTransfer | None]

ACCEPTED = [
    # (id, state, step, stage expected after)
    ("referral-adult", lambda: None, referral(), Stage.REFERRED),
    ("referral-child-guardian", lambda: None, referral(minor=True), Stage.REFERRED),
    ("response-accepts", referred, response(), Stage.ACCEPTED),
    ("response-declines", referred, response(accepted=False), Stage.DECLINED),
    ("assessment-by-destination", accepted, assessment(), Stage.ACCEPTED),
    ("assessment-by-sending", accepted, assessment(sender=NG, recipient=GB), Stage.ACCEPTED),
    ("assessment-at-skew-edge", accepted, assessment(assessed_at=T_RISK + SKEW), Stage.ACCEPTED),
    ("assessment-after-preparation", prepared, assessment(T_PREPARE), Stage.RETURN_PREPARED),
    ("preparation", assessed, preparation(), Stage.RETURN_PREPARED),
    (
        "preparation-assessment-exactly-30-days-old",
        lambda: assessed(assessed_at=T_PREPARE - timedelta(days=30)),
        preparation(),
        Stage.RETURN_PREPARED,
    ),
    (
        "preparation-exactly-72-hours-notice",
        assessed,
        preparation(arrival=T_PREPARE + timedelta(hours=72)),
        Stage.RETURN_PREPARED,
    ),
    ("preparation-child", child_assessed, child_preparation(), Stage.RETURN_PREPARED),
    (
        "preparation-replaces-plan",
        prepared,
        preparation(T_PREPARE + timedelta(days=1), org=OTHER_ORG.id, arrival=ARRIVAL),
        Stage.RETURN_PREPARED,
    ),
    ("reception-to-destination", prepared, reception(), Stage.RECEIVED),
    ("reception-to-sending", prepared, reception(recipient=NG), Stage.RECEIVED),
    (
        "reception-at-skew-edge",
        prepared,
        reception(ARRIVAL, received_at=ARRIVAL + SKEW),
        Stage.RECEIVED,
    ),
    (
        "reception-not-arrived",
        prepared,
        reception(outcome=ReceptionOutcome.NOT_ARRIVED),
        Stage.NOT_RECEIVED,
    ),
    (
        "reception-declined-assistance",
        prepared,
        reception(outcome=ReceptionOutcome.DECLINED_ASSISTANCE),
        Stage.NOT_RECEIVED,
    ),
    ("monitoring-by-org-to-destination", received, monitoring(), Stage.RECEIVED),
    ("monitoring-by-org-to-sending", received, monitoring(recipient=NG), Stage.RECEIVED),
    (
        "monitoring-by-destination",
        received,
        monitoring(sender=GB, recipient=NG),
        Stage.RECEIVED,
    ),
    (
        "monitoring-on-last-day",
        received,
        monitoring(ARRIVAL + timedelta(days=365)),
        Stage.RECEIVED,
    ),
    (
        "monitoring-one-day-period",
        received,
        monitoring(start=date(2025, 4, 1), end=date(2025, 4, 1)),
        Stage.RECEIVED,
    ),
    ("closure-referred", referred, closure(), Stage.CLOSED),
    ("closure-declined", declined, closure(), Stage.CLOSED),
    ("closure-accepted-by-destination", accepted, closure(sender=GB, recipient=NG), Stage.CLOSED),
    ("closure-prepared", prepared, closure(), Stage.CLOSED),
    ("closure-received", received, closure(), Stage.CLOSED),
    ("closure-not-received", not_received, closure(), Stage.CLOSED),
    ("withdrawal-referred", referred, withdrawal(), Stage.REFERRED),
    ("withdrawal-to-receiving-org", received, withdrawal(recipient=ORG), Stage.RECEIVED),
    ("withdrawal-after-closure", closed, withdrawal(), Stage.CLOSED),
    ("plan-to-org", prepared, plan_to_org(), Stage.RETURN_PREPARED),
    ("plan-to-org-again", plan_sent, plan_to_org(T_READY), Stage.RETURN_PREPARED),
    (
        "plan-to-org-child",
        child_plan_prepared,
        child_preparation(T_PLAN_TO_ORG, recipient=ORG),
        Stage.RETURN_PREPARED,
    ),
    ("plan-response-ready", plan_sent, plan_response(), Stage.RETURN_PREPARED),
    (
        "plan-response-cannot-receive",
        plan_sent,
        plan_response(readiness=Readiness.CANNOT_RECEIVE, recipient=GB),
        Stage.RETURN_PREPARED,
    ),
    (
        "plan-response-needs-support",
        plan_sent,
        plan_response(readiness=Readiness.NEEDS_SUPPORT),
        Stage.RETURN_PREPARED,
    ),
    ("contact-to-destination", plan_sent, contact(recipient=GB), Stage.RETURN_PREPARED),
    (
        "contact-at-skew-edge",
        plan_sent,
        contact(contacted_at=T_CONTACT + SKEW),
        Stage.RETURN_PREPARED,
    ),
    (
        "withdrawal-to-org-before-travel",
        plan_sent,
        withdrawal(recipient=ORG),
        Stage.RETURN_PREPARED,
    ),
]


@pytest.mark.parametrize(
    ("state", "message", "stage"), [pytest.param(*case[1:], id=case[0]) for case in ACCEPTED]
)
def test_rule_accepts(state: State, message: Step, stage: Stage) -> None:
    assert apply(state(), message, RULES_).stage is stage


def test_a_withdrawal_leaves_the_case_as_it_was() -> None:
    case = received()
    assert apply(case, withdrawal(), RULES_) == case


def test_an_assessment_made_earlier_but_sent_later_does_not_displace_the_latest() -> None:
    case = assessed(recommended=True)
    late = assessment(T_RISK + timedelta(hours=1), assessed_at=T0, recommended=False)
    assert apply(case, late, RULES_) == case
    newer = assessment(T_RISK + timedelta(hours=1), recommended=False)
    assert run(newer, case=case).last_risk_assessment == RiskAssessment(
        T_RISK - timedelta(hours=1), RiskLevel.LOW, False, newer.message_id
    )


def test_the_plan_sent_to_the_organisation_is_recorded_and_changes_nothing_else() -> None:
    case = prepared()
    assert case.plan_sent_to_org is None
    assert apply(case, plan_to_org(), RULES_) == replace(case, plan_sent_to_org=PLAN_TO_ORG_ID)


def test_the_organisations_readiness_and_contact_are_recorded() -> None:
    case = run(plan_response(readiness=Readiness.NEEDS_SUPPORT), contact(), case=plan_sent())
    assert (case.readiness, case.pre_departure_contact_at) == (
        Readiness.NEEDS_SUPPORT,
        T_CONTACT - timedelta(hours=3),
    )
    # An earlier contact reported later does not move the latest back.
    earlier = contact(T_CONTACT + timedelta(hours=1), contacted_at=T_CONTACT - timedelta(days=1))
    assert apply(case, earlier, RULES_).pre_departure_contact_at == T_CONTACT - timedelta(hours=3)
    assert (
        apply(case, plan_response(readiness=Readiness.READY), RULES_).readiness is Readiness.READY
    )


def test_cannot_receive_keeps_the_plan_until_a_new_one_names_another_organisation() -> None:
    case = run(plan_response(readiness=Readiness.CANNOT_RECEIVE), contact(), case=plan_sent())
    assert (case.stage, case.receiving_org, case.readiness) == (
        Stage.RETURN_PREPARED,
        ORG.id,
        Readiness.CANNOT_RECEIVE,
    )
    new_plan = preparation(T_CONTACT + timedelta(hours=1), org=OTHER_ORG.id)
    case = apply(case, new_plan, RULES_)
    assert (case.receiving_org, case.plan_sent_to_org, case.readiness) == (OTHER_ORG.id, None, None)
    assert case.pre_departure_contact_at is None  # that contact was the other organisation's
    with pytest.raises(RuleBroken) as raised:  # the first organisation is out of the case
        apply(case, plan_response(T_CONTACT + timedelta(hours=2)), RULES_)
    assert raised.value.rule == "not_a_party_of_this_case"
    with pytest.raises(RuleBroken) as raised:  # the new one answers once it has the plan
        apply(case, plan_response(T_CONTACT + timedelta(hours=2), sender=OTHER_ORG), RULES_)
    assert raised.value.rule == "needs_plan_sent_to_receiving_org"
    to_other = plan_to_org(T_CONTACT + timedelta(hours=2), recipient=OTHER_ORG, org=OTHER_ORG.id)
    case = apply(case, to_other, RULES_)
    case = apply(case, plan_response(T_CONTACT + timedelta(hours=3), sender=OTHER_ORG), RULES_)
    assert (case.plan_sent_to_org, case.readiness) == (PLAN_TO_ORG_ID, Readiness.READY)


def test_a_new_plan_with_the_same_organisation_is_sent_and_answered_again() -> None:
    case = run(plan_response(), contact(), case=plan_sent())
    later = ARRIVAL + timedelta(days=2)
    case = apply(case, preparation(T_CONTACT + timedelta(hours=1), arrival=later), RULES_)
    assert (case.plan_sent_to_org, case.readiness) == (None, None)
    assert case.pre_departure_contact_at == T_CONTACT - timedelta(hours=3)  # same organisation
    with pytest.raises(RuleBroken) as raised:  # the old plan is no longer the plan
        apply(case, plan_to_org(T_CONTACT + timedelta(hours=2)), RULES_)
    assert raised.value.rule == "return_plan_to_org_must_match_plan"
    plan = plan_to_org(T_CONTACT + timedelta(hours=2), arrival=later)
    assert apply(case, plan, RULES_).plan_sent_to_org == PLAN_TO_ORG_ID


def test_reception_is_confirmed_whatever_the_organisation_answered() -> None:
    case = run(plan_response(readiness=Readiness.CANNOT_RECEIVE), reception(), case=plan_sent())
    assert case.stage is Stage.RECEIVED


def test_a_replaced_plan_designates_the_new_organisation() -> None:
    case = run(preparation(T_PREPARE + timedelta(days=1), org=OTHER_ORG.id), case=prepared())
    assert case.receiving_org == OTHER_ORG.id
    assert apply(case, reception(sender=OTHER_ORG), RULES_).stage is Stage.RECEIVED
    with pytest.raises(RuleBroken) as raised:
        apply(case, reception(sender=ORG), RULES_)
    assert raised.value.rule == "not_a_party_of_this_case"


# --- facts count once acknowledged ----------------------------------------------------------


def test_a_risk_assessment_counts_once_its_recipient_acknowledged_it() -> None:
    risk = assessment()
    case = apply(accepted(), risk, RULES_)
    assert case.stage is Stage.ACCEPTED
    assert case.last_risk_assessment is None
    assert [p.message_id for p in case.pending_risk_assessments] == [risk.message_id]
    with pytest.raises(RuleBroken, match="not yet acknowledged by its recipient; wait for it"):
        apply(case, preparation(), RULES_)
    case = acknowledged(case, risk.message_id)
    assert case.pending_risk_assessments == ()
    assert case.last_risk_assessment is not None
    assert case.last_risk_assessment.message_id == risk.message_id
    assert apply(case, preparation(), RULES_).stage is Stage.RETURN_PREPARED


def test_a_rejected_risk_assessment_never_counts() -> None:
    risk = assessment()
    case = rejected(apply(accepted(), risk, RULES_), risk.message_id)
    assert (case.pending_risk_assessments, case.last_risk_assessment) == ((), None)
    with pytest.raises(RuleBroken, match=r"\(there is none\)"):
        apply(case, preparation(), RULES_)
    # An answer that comes after (it cannot: the first answer stands) changes nothing.
    assert acknowledged(case, risk.message_id) is case


@pytest.mark.parametrize("recommended", [True, False])
def test_a_later_assessment_holds_back_a_return_from_acceptance(recommended: bool) -> None:
    later = assessment(T_RISK + timedelta(hours=1), recommended=recommended)
    case = apply(assessed(), later, RULES_)  # the acknowledged one recommends return
    with pytest.raises(RuleBroken) as waiting:
        apply(case, preparation(), RULES_)
    assert waiting.value.rule == "risk_assessment_not_yet_acknowledged"
    # Acknowledged, it is the latest and decides; rejected, the earlier one counts again.
    counted = acknowledged(case, later.message_id)
    assert counted.last_risk_assessment is not None
    assert counted.last_risk_assessment.message_id == later.message_id
    if recommended:
        assert apply(counted, preparation(), RULES_).stage is Stage.RETURN_PREPARED
    else:
        with pytest.raises(RuleBroken, match="the latest does not recommend return"):
            apply(counted, preparation(), RULES_)
    dropped = rejected(case, later.message_id)
    assert dropped.last_risk_assessment == case.last_risk_assessment
    assert dropped.pending_risk_assessments == ()
    assert apply(dropped, preparation(), RULES_).stage is Stage.RETURN_PREPARED


def test_acknowledgements_in_any_order_leave_the_latest_assessment_counted() -> None:
    first = assessment(T_RISK, assessed_at=T_RISK - timedelta(hours=3))
    second = assessment(T_RISK + TICK, assessed_at=T_RISK - timedelta(hours=2), recommended=False)
    case = run(first, second, case=accepted())
    both = apply(apply(accepted(), first, RULES_), second, RULES_)
    reversed_ = acknowledged(acknowledged(both, second.message_id), first.message_id)
    assert case.last_risk_assessment == reversed_.last_risk_assessment
    assert reversed_.last_risk_assessment is not None
    assert reversed_.last_risk_assessment.message_id == second.message_id
    assert reversed_.pending_risk_assessments == ()


def test_an_answer_to_a_message_without_facts_leaves_the_state_as_it_is() -> None:
    case = apply(accepted(), assessment(), RULES_)
    other = response()  # never applied: any id the case does not know
    assert acknowledged(case, other.message_id) is case
    assert rejected(case, other.message_id) is case
    assert acknowledged(case, "") is case
    assert rejected(case, "") is case


def test_a_rejected_return_plan_takes_the_case_back_to_accepted() -> None:
    plan = preparation()
    case = apply(assessed(), plan, RULES_)
    assert case.plan_message_id == plan.message_id
    back = rejected(case, plan.message_id)
    assert (back.stage, back.receiving_org, back.planned_arrival, back.plan_message_id) == (
        Stage.ACCEPTED,
        None,
        None,
        "",
    )
    # The organisation it named is no longer a party; a corrected plan is accepted.
    with pytest.raises(RuleBroken) as raised:
        apply(back, reception(), RULES_)
    assert raised.value.rule == "not_a_party_of_this_case"
    again = preparation(T_PREPARE + timedelta(hours=1))
    assert apply(back, again, RULES_).plan_message_id == again.message_id


def test_a_rejected_plan_changes_nothing_once_replaced_or_after_reception() -> None:
    first = preparation()
    case = apply(assessed(), first, RULES_)
    second = preparation(T_PREPARE + timedelta(hours=1), org=OTHER_ORG.id)
    replaced = apply(case, second, RULES_)
    assert rejected(replaced, first.message_id) is replaced
    arrived = apply(case, reception(), RULES_)
    assert rejected(arrived, first.message_id) is arrived


def test_a_rejected_reception_confirmation_is_void_and_the_reception_awaited_again() -> None:
    confirmed = reception()
    case = apply(prepared(), confirmed, RULES_)
    report = monitoring()
    case = acknowledged(apply(case, report, RULES_), report.message_id)
    back = rejected(case, confirmed.message_id)
    assert (back.stage, back.received_at, back.last_monitoring_at) == (
        Stage.RETURN_PREPARED,
        None,
        None,
    )
    assert [d.name for d in deadlines(back, RULES_)] == ["reception_due"]
    with pytest.raises(RuleBroken) as raised:
        apply(back, monitoring(T_MONITOR + TICK), RULES_)
    assert raised.value.rule == "case_monitoring_needs_reception"
    honest = reception(outcome=ReceptionOutcome.NOT_ARRIVED)
    assert apply(back, honest, RULES_).stage is Stage.NOT_RECEIVED
    # A not-received rejected is void too; once closed, a rejection changes nothing.
    assert rejected(apply(back, honest, RULES_), honest.message_id).stage is Stage.RETURN_PREPARED
    ended = apply(case, closure(), RULES_)
    assert rejected(ended, confirmed.message_id) is ended


def test_a_rejected_monitoring_report_does_not_count() -> None:
    case = received()
    first, second = monitoring(), monitoring(T_MONITOR + timedelta(days=30))
    case = apply(apply(case, first, RULES_), second, RULES_)
    assert case.last_monitoring_at == second.at
    # The later is rejected: the deadline runs from the earlier, answered or not.
    assert rejected(case, second.message_id).last_monitoring_at == first.at
    # Both rejected, in either order: from the reception, as if none was sent.
    for order in ([first, second], [second, first]):
        none = case
        for one in order:
            none = rejected(none, one.message_id)
        assert none.last_monitoring_at is None
        assert none.monitoring_unanswered == ()
        assert [d.due_at for d in deadlines(none, RULES_)] == [
            d.due_at for d in deadlines(received(), RULES_)
        ]
    # Acknowledged, a report stands, whatever is rejected after it.
    kept = rejected(acknowledged(case, first.message_id), second.message_id)
    assert kept.last_monitoring_at == first.at
    assert acknowledged(case, second.message_id).last_monitoring_at == second.at


def test_a_rejected_referral_response_is_void_and_the_answer_awaited_again() -> None:
    for answer in (response(), response(accepted=False)):
        case = rejected(apply(referred(), answer, RULES_), answer.message_id)
        assert case.stage is Stage.REFERRED
        with pytest.raises(RuleBroken) as raised:
            apply(case, assessment(), RULES_)
        assert raised.value.rule == "risk_assessment_needs_acceptance"
        assert apply(case, response(T_RESPONSE + TICK), RULES_).stage is Stage.ACCEPTED
    # Once the case has gone further, the answer's rejection changes nothing.
    answer = response()
    further = run(assessment(), preparation(), case=apply(referred(), answer, RULES_))
    assert rejected(further, answer.message_id) is further


def test_a_rejected_referral_is_corrected_on_the_same_case_reference() -> None:
    case = referral_rejected()
    assert case.referral_rejected
    # Nothing builds on it; it can still be closed, or its consent withdrawn.
    assert apply(case, closure(T_RESPONSE), RULES_).stage is Stage.CLOSED
    assert apply(case, withdrawal(T_RESPONSE), RULES_) == case
    # Only its sender sends the corrected referral, which starts the case afresh.
    with pytest.raises(RuleBroken) as raised:
        apply(case, referral(T_RESPONSE, sender=NG_OTHER), RULES_)
    assert raised.value.rule == "case_already_referred"
    corrected = referral(T_RESPONSE)
    again = apply(case, corrected, RULES_)
    assert (again.stage, again.referral_rejected, again.referral_message_id) == (
        Stage.REFERRED,
        False,
        corrected.message_id,
    )
    assert apply(again, response(T_RISK), RULES_).stage is Stage.ACCEPTED
    with pytest.raises(RuleBroken) as twice:
        apply(again, referral(T_RISK), RULES_)
    assert twice.value.rule == "case_already_referred"
    # A closed case is not reopened by a corrected referral.
    with pytest.raises(RuleBroken, match="already referred"):
        apply(run(closure(T_RESPONSE), case=case), referral(T_RISK), RULES_)


def test_a_child_stays_a_child_through_a_corrected_referral() -> None:
    case = referral_rejected(minor=True)
    with pytest.raises(RuleBroken) as raised:
        apply(case, referral(T_RESPONSE, minor=False, given_by=GivenBy.PERSON), RULES_)
    assert raised.value.rule == "minor_needs_guardian_consent"
    again = apply(case, referral(T_RESPONSE, minor=False, given_by=GivenBy.GUARDIAN), RULES_)
    assert again.subject_is_minor


# --- children: every message of a child's case ----------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        pytest.param(lambda: referred(minor=True), response(), id="response"),
        pytest.param(lambda: accepted(minor=True), assessment(), id="assessment"),
        pytest.param(
            lambda: run(child_preparation(), case=child_assessed()),
            reception(),
            id="reception",
        ),
        pytest.param(
            lambda: run(
                guardian(reception()), case=run(child_preparation(), case=child_assessed())
            ),
            monitoring(),
            id="monitoring",
        ),
        pytest.param(lambda: accepted(minor=True), closure(), id="closure-with-notes"),
    ],
)
def test_every_message_of_a_childs_case_needs_a_guardians_consent(
    state: State, message: Step
) -> None:
    case = state()
    for given_by in (GivenBy.PERSON, None):
        with pytest.raises(RuleBroken) as raised:
            apply(case, replace(message, consent_given_by=given_by), RULES_)
        assert raised.value.rule == "minor_needs_guardian_consent"
    assert apply(case, guardian(message), RULES_).case_ref == CASE


def test_a_childs_case_is_closed_without_data_under_no_consent() -> None:
    # After a guardian's withdrawal nothing covers the case, but it can still be closed.
    case = accepted(minor=True)
    assert apply(case, without_data(closure()), RULES_).stage is Stage.CLOSED
    with pytest.raises(RuleBroken, match="for a child needs a consent given by a guardian"):
        apply(case, replace(closure(), consent_given_by=None), RULES_)


def test_a_plan_that_says_the_person_is_a_child_makes_the_case_a_childs() -> None:
    plan = child_preparation()
    case = apply(assessed(), plan, RULES_)  # referred as an adult
    assert case.subject_is_minor
    with pytest.raises(RuleBroken, match="needs a consent given by a guardian"):
        apply(assessed(), replace(plan, consent_given_by=GivenBy.PERSON), RULES_)
    # Sticky: a later plan that says nothing of a child does not undo it.
    later = preparation(T_PREPARE + timedelta(hours=1), given_by=GivenBy.GUARDIAN)
    with pytest.raises(RuleBroken) as raised:
        apply(case, later, RULES_)
    assert raised.value.rule == "minor_needs_best_interests_determination"
    with pytest.raises(RuleBroken) as assessing:
        apply(case, assessment(T_PREPARE + timedelta(hours=1)), RULES_)
    assert assessing.value.rule == "minor_needs_guardian_consent"


# --- every rule: refused, by code and in words --------------------------------------------

GB_ORG_AS_FOCAL = Party("gb.shelter", FOCAL, "GB")

REFUSED = [
    # (rule, state, step, words the detail must hold)
    ("case_already_referred", referred, referral(T_RESPONSE), "already referred"),
    ("case_already_referred", closed, referral(T_RESPONSE), "already referred"),
    ("case_not_referred", lambda: None, response(), "response needs a referral"),
    ("case_not_referred", lambda: None, withdrawal(), "withdrawal needs a referral"),
    ("case_closed", closed, monitoring(ARRIVAL + timedelta(days=60)), "closed"),
    ("case_closed", closed, closure(T_MONITOR + timedelta(days=5)), "closure is not accepted"),
    ("case_closed", closed, assessment(T_MONITOR + timedelta(days=5)), "after case_closure"),
    ("not_a_party_of_this_case", accepted, assessment(sender=FR, recipient=NG), "only between"),
    ("not_a_party_of_this_case", accepted, assessment(sender=NG, recipient=FR), "only between"),
    ("not_a_party_of_this_case", prepared, reception(sender=OTHER_ORG), "receiving organisation"),
    ("not_a_party_of_this_case", assessed, reception(T_PREPARE), "designated"),
    ("not_a_party_of_this_case", referred, withdrawal(recipient=FR), "only between"),
    (
        "referral_only_by_focal_point",
        lambda: None,
        referral(sender=NG_ORG),
        "referral is sent only by a focal point",
    ),
    (
        "referral_only_to_destination_focal_point",
        lambda: None,
        referral(recipient=ORG),
        "to a focal point of its destination country GB",
    ),
    (
        "referral_only_to_destination_focal_point",
        lambda: None,
        referral(recipient=FR),
        "destination country GB",
    ),
    (
        "referral_to_own_country",
        lambda: None,
        referral(recipient=NG_OTHER, country="NG"),
        "another country",
    ),
    (
        "minor_needs_guardian_consent",
        lambda: None,
        referral(minor=True, given_by=GivenBy.PERSON),
        "referral for a child needs a consent given by a guardian",
    ),
    (
        "minor_needs_guardian_consent",
        child_assessed,
        child_preparation(given_by=GivenBy.PERSON),
        "return_preparation for a child needs a consent given by a guardian",
    ),
    (
        "referral_response_only_from_destination_to_sending",
        referred,
        response(sender=NG, recipient=GB),
        "from the destination focal point",
    ),
    ("referral_already_answered", accepted, response(T_RISK), "sent once"),
    ("referral_already_answered", declined, response(T_RISK), "awaits an answer"),
    (
        "risk_assessment_only_between_focal_points",
        prepared,
        assessment(T_PREPARE, sender=ORG, recipient=NG),
        "one focal point of the case to the other",
    ),
    ("risk_assessment_needs_acceptance", referred, assessment(), "after the referral was accepted"),
    ("risk_assessment_needs_acceptance", declined, assessment(), "accepted"),
    ("risk_assessment_needs_acceptance", received, assessment(T_MONITOR), "before reception"),
    (
        "risk_assessment_in_future",
        accepted,
        assessment(assessed_at=T_RISK + SKEW + TICK),
        "later than it is sent",
    ),
    (
        "return_preparation_only_from_sending_to_destination",
        assessed,
        preparation(sender=GB, recipient=NG),
        "from the sending focal point",
    ),
    ("return_preparation_needs_acceptance", referred, preparation(), "referral was accepted"),
    ("return_preparation_needs_acceptance", received, preparation(T_MONITOR), "before reception"),
    (
        "return_preparation_needs_recent_recommending_risk_assessment",
        accepted,
        preparation(),
        "needs a risk_assessment that recommends return, made within the last 30 days"
        " (there is none)",
    ),
    (
        "return_preparation_needs_recent_recommending_risk_assessment",
        lambda: assessed(recommended=False),
        preparation(),
        "(the latest does not recommend return)",
    ),
    (
        "return_preparation_needs_recent_recommending_risk_assessment",
        lambda: assessed(assessed_at=T_PREPARE - timedelta(days=30) - TICK),
        preparation(),
        "within the last 30 days (the latest is older)",
    ),
    (
        "receiving_org_not_registered_in_country_of_return",
        assessed,
        preparation(org="gb.unknown"),
        "registered as a receiving_org in the country of return GB",
    ),
    (
        "receiving_org_not_registered_in_country_of_return",
        assessed,
        preparation(org=FR_ORG.id),
        "country of return GB",
    ),
    (
        "receiving_org_not_registered_in_country_of_return",
        assessed,
        preparation(registered=GB_ORG_AS_FOCAL),
        "registered as a receiving_org",
    ),
    (
        "receiving_org_not_registered_in_country_of_return",
        assessed,
        preparation(registered=OTHER_ORG),  # the registry entry of another id
        "receiving organisation",
    ),
    (
        "planned_arrival_too_soon",
        assessed,
        preparation(arrival=T_PREPARE + timedelta(hours=72) - TICK),
        "planned arrival at least 72 hours ahead",
    ),
    (
        "minor_needs_best_interests_determination",
        child_assessed,
        child_preparation(best_interests=None),
        "best-interests determination",
    ),
    (
        "minor_needs_best_interests_determination",
        child_assessed,
        child_preparation(outcome=None),
        "whose outcome is that return is in the child's best interests",
    ),
    (
        "best_interests_do_not_support_return",
        child_assessed,
        child_preparation(outcome=NOT_IN_BEST_INTERESTS),
        "not in the child's best interests",
    ),
    (
        "best_interests_do_not_support_return",
        assessed,
        preparation(best_interests="bid:8", outcome=NOT_IN_BEST_INTERESTS),
        "best-interests determination found that return is not",
    ),
    (
        "risk_assessment_not_yet_acknowledged",
        lambda: apply(accepted(), assessment(), RULES_),
        preparation(),
        "the risk assessment is not yet acknowledged by its recipient; wait for it",
    ),
    (
        "risk_assessment_not_yet_acknowledged",
        lambda: apply(assessed(), assessment(T_RISK + timedelta(hours=1)), RULES_),
        preparation(),
        "a later risk assessment is not yet acknowledged",
    ),
    (
        "referral_rejected_by_recipient",
        referral_rejected,
        response(),
        "referral_response needs the referral, which its recipient's node rejected",
    ),
    (
        "minor_needs_guardian_consent",
        lambda: accepted(minor=True),
        assessment(),
        "risk_assessment for a child needs a consent given by a guardian",
    ),
    (
        "reception_confirmation_needs_return_preparation",
        received,
        reception(T_MONITOR),
        "after a return_preparation",
    ),
    (
        "reception_confirmation_needs_return_preparation",
        not_received,
        reception(T_MONITOR),
        "accepted once",
    ),
    (
        "reception_confirmation_only_by_designated_receiving_org",
        prepared,
        reception(sender=GB, recipient=NG),
        "only by the receiving organisation designated",
    ),
    (
        "reception_in_future",
        prepared,
        reception(ARRIVAL, received_at=ARRIVAL + SKEW + TICK),
        "later than it is sent",
    ),
    (
        "case_monitoring_only_by_receiving_org_or_destination",
        received,
        monitoring(sender=NG, recipient=GB),
        "receiving organisation or the destination focal point",
    ),
    (
        "case_monitoring_only_by_receiving_org_or_destination",
        received,
        monitoring(sender=GB, recipient=ORG),
        "to a focal point of the case",
    ),
    (
        "case_monitoring_needs_reception",
        prepared,
        monitoring(T_PREPARE + timedelta(days=1)),
        "after the person was received",
    ),
    ("case_monitoring_needs_reception", not_received, monitoring(), "received"),
    (
        "monitoring_period_over",
        received,
        monitoring(ARRIVAL + timedelta(days=365) + TICK),
        "accepted for 365 days after reception",
    ),
    (
        "monitoring_period_reversed",
        received,
        monitoring(start=date(2025, 4, 2), end=date(2025, 4, 1)),
        "start is not after its end",
    ),
    (
        "case_closure_only_between_focal_points",
        received,
        closure(sender=ORG, recipient=GB),
        "one focal point of the case to the other",
    ),
    (
        "consent_withdrawal_only_by_sending_focal_point",
        accepted,
        withdrawal(sender=GB, recipient=NG),
        "only by the sending focal point",
    ),
    # The plan sent on to the receiving organisation: the plan in force, all safeguards again.
    (
        "return_plan_to_org_must_match_plan",
        prepared,
        plan_to_org(arrival=ARRIVAL + timedelta(days=1)),
        "the same planned arrival",
    ),
    (
        "return_plan_to_org_must_match_plan",
        prepared,
        plan_to_org(org=OTHER_ORG.id),  # to the designated one, naming another
        "the same receiving organisation (the recipient)",
    ),
    (
        "return_preparation_only_from_sending_to_destination",
        prepared,
        plan_to_org(sender=GB),
        "or to the receiving organisation its plan designates",
    ),
    (
        "not_a_party_of_this_case",
        prepared,
        plan_to_org(recipient=OTHER_ORG, org=OTHER_ORG.id),  # not designated
        "designated receiving organisation",
    ),
    (
        "return_preparation_needs_recent_recommending_risk_assessment",
        prepared,
        plan_to_org(T_RISK - timedelta(hours=2) + timedelta(days=30) + TICK),
        "(the latest is older)",
    ),
    (
        "planned_arrival_too_soon",
        prepared,
        plan_to_org(ARRIVAL - timedelta(hours=72) + TICK),
        "at least 72 hours ahead",
    ),
    (
        "minor_needs_guardian_consent",
        child_plan_prepared,
        child_preparation(T_PLAN_TO_ORG, recipient=ORG, given_by=GivenBy.PERSON),
        "return_preparation for a child needs a consent given by a guardian",
    ),
    (
        "return_preparation_needs_acceptance",
        not_received,
        plan_to_org(T_MONITOR),
        "before reception",
    ),
    # The receiving organisation's answer to the plan and its contact before travel.
    (
        "reception_plan_response_only_by_designated_receiving_org",
        plan_sent,
        plan_response(sender=GB, recipient=NG),
        "only by the receiving organisation designated",
    ),
    (
        "not_a_party_of_this_case",
        plan_sent,
        plan_response(sender=OTHER_ORG),
        "reception_plan_response goes only between",
    ),
    (
        "needs_plan_sent_to_receiving_org",
        prepared,
        plan_response(),
        "reception_plan_response is accepted after the return plan was sent to the receiving"
        " organisation",
    ),
    (
        "needs_plan_sent_to_receiving_org",
        lambda: run(reception(), case=plan_sent()),
        plan_response(T_MONITOR),
        "before reception",
    ),
    (
        "pre_departure_contact_only_by_designated_receiving_org",
        plan_sent,
        contact(sender=NG, recipient=GB),
        "only by the receiving organisation designated",
    ),
    (
        "pre_departure_contact_only_by_designated_receiving_org",
        plan_sent,
        contact(sender=GB, recipient=ORG),
        "to a focal point of the case",
    ),
    ("needs_plan_sent_to_receiving_org", prepared, contact(), "pre_departure_contact is accepted"),
    (
        "pre_departure_contact_in_future",
        plan_sent,
        contact(contacted_at=T_CONTACT + SKEW + TICK),
        "later than it is sent",
    ),
]


@pytest.mark.parametrize(
    ("rule", "state", "message", "words"),
    [pytest.param(*case, id=f"{case[0]}-{n}") for n, case in enumerate(REFUSED)],
)
def test_rule_refuses(rule: str, state: State, message: Step, words: str) -> None:
    case = state()
    with pytest.raises(RuleBroken) as raised:
        apply(case, message, RULES_)
    assert raised.value.rule == rule
    assert words in raised.value.detail
    assert message.type.value in raised.value.detail or rule == "case_already_referred"
    assert str(raised.value) == f"{rule}: {raised.value.detail}"
    # A rule with a window gives it, for a refusal said in another language.
    assert (raised.value.window is not None) == ("{span}" in RULES[rule])


def test_every_rule_has_a_refusing_case() -> None:
    assert {case[0] for case in REFUSED} == set(RULES)


def test_rule_windows_are_stated_in_their_own_units() -> None:
    rules = Rules(risk_max_age=timedelta(days=14), min_notice=timedelta(hours=1))
    with pytest.raises(RuleBroken, match="within the last 14 days"):
        apply(accepted(), preparation(), rules)
    with pytest.raises(RuleBroken, match="at least 1 hour ahead") as raised:
        apply(assessed(), preparation(arrival=T_PREPARE + timedelta(minutes=59)), rules)
    assert raised.value.window == timedelta(hours=1)


# --- malformed input is a programming error, not a rule -------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"at": datetime(2025, 3, 1)}, id="naive-time"),
        pytest.param({"case_ref": ""}, id="referral-without-case_ref"),
        pytest.param({"header": ReferralResponseHeader(accepted=True)}, id="wrong-header"),
        pytest.param({"recipient": NG}, id="to-itself"),
    ],
)
def test_malformed_step_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"aware|case_ref|header|differ"):
        replace(referral(), **changes)


def test_a_state_of_another_case_is_rejected() -> None:
    with pytest.raises(ValueError, match="another case"):
        apply(replace(referred(), case_ref="NG-2025-0002"), response(), RULES_)


@pytest.mark.parametrize(
    "changes",
    [
        {"monitoring_period": timedelta(0)},
        {"monitoring_period": timedelta(days=3 * 365) + TICK},
        {"risk_max_age": timedelta(0)},
        {"monitoring_interval": -TICK},
        {"min_notice": -TICK},
        {"reception_grace": -TICK},
        {"clock_skew": -TICK},
    ],
)
def test_rules_out_of_range_are_rejected(changes: dict[str, timedelta]) -> None:
    with pytest.raises(ValueError, match=r"monitoring_period|positive|negative"):
        Rules(**changes)


def test_monitoring_may_last_three_years() -> None:
    rules = Rules(monitoring_period=timedelta(days=3 * 365))
    assert apply(received(), monitoring(ARRIVAL + timedelta(days=1000)), rules).last_monitoring_at


# --- alerts --------------------------------------------------------------------------------

GRACE, INTERVAL, PERIOD = RULES_.reception_grace, RULES_.monitoring_interval, timedelta(days=365)


@pytest.mark.parametrize(
    ("state", "now", "alerts"),
    [
        pytest.param(prepared, ARRIVAL, set(), id="prepared-at-arrival"),
        pytest.param(prepared, ARRIVAL + GRACE, set(), id="prepared-end-of-grace"),
        pytest.param(
            prepared, ARRIVAL + GRACE + TICK, {AlertKind.RECEPTION_OVERDUE}, id="reception-overdue"
        ),
        pytest.param(received, ARRIVAL + INTERVAL, set(), id="received-interval-end"),
        pytest.param(
            received,
            ARRIVAL + INTERVAL + TICK,
            {AlertKind.MONITORING_OVERDUE},
            id="first-report-overdue",
        ),
        pytest.param(monitored, T_MONITOR + INTERVAL, set(), id="after-report-interval-end"),
        pytest.param(
            monitored,
            T_MONITOR + INTERVAL + TICK,
            {AlertKind.MONITORING_OVERDUE},
            id="next-report-overdue",
        ),
        pytest.param(
            received, ARRIVAL + PERIOD, {AlertKind.MONITORING_OVERDUE}, id="last-day-of-period"
        ),
        pytest.param(received, ARRIVAL + PERIOD + TICK, set(), id="after-monitoring-period"),
        pytest.param(not_received, ARRIVAL + timedelta(days=200), set(), id="not-received"),
        pytest.param(accepted, ARRIVAL + timedelta(days=200), set(), id="accepted"),
        pytest.param(
            lambda: run(closure(ARRIVAL - timedelta(days=1)), case=prepared()),
            ARRIVAL + GRACE + TICK,
            set(),
            id="closed-before-reception",
        ),
        pytest.param(closed, ARRIVAL + INTERVAL + TICK, set(), id="closed-after-reception"),
    ],
)
def test_due_alerts(state: State, now: datetime, alerts: set[AlertKind]) -> None:
    case = state()
    assert case is not None
    assert due_alerts(case, now, RULES_) == alerts


def test_a_replaced_plan_moves_the_reception_deadline() -> None:
    later = ARRIVAL + timedelta(days=7)
    case = run(preparation(T_PREPARE + timedelta(days=1), arrival=later), case=prepared())
    assert due_alerts(case, ARRIVAL + GRACE + TICK, RULES_) == frozenset()
    assert due_alerts(case, later + GRACE + TICK, RULES_) == {AlertKind.RECEPTION_OVERDUE}


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [referred, declined, assessed, prepared, received, not_received, monitored, closed]
)
def test_json_round_trip_of_each_stage(state: State) -> None:
    case = state()
    assert case is not None
    data = json.loads(json.dumps(case.to_json()))
    assert data["v"] == 1
    assert CaseTransfer.from_json(data) == case
    assert CaseTransfer.from_json(data).to_json() == data


def test_json_times_are_rfc3339_utc() -> None:
    data = received().to_json()
    assert data["referred_at"] == "2025-03-01T12:00:00Z"
    assert data["last_risk_assessment"] == {
        "assessed_at": "2025-03-02T10:00:00Z",
        "level": "low",
        "return_recommended": True,
        "message_id": data["last_risk_assessment"]["message_id"],
    }
    assert data["last_risk_assessment"]["message_id"].startswith("m-")
    assert data["received_at"] == "2025-03-11T12:00:00Z"
    assert data["closed_at"] is None


AWARE = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
)
ASSESSMENTS = st.builds(
    RiskAssessment, AWARE, st.sampled_from(RiskLevel), st.booleans(), st.text(max_size=40)
)
CASE_TRANSFERS = st.builds(
    CaseTransfer,
    case_ref=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}", fullmatch=True),
    sending=st.sampled_from(list(REGISTRY)),
    destination=st.sampled_from(list(REGISTRY)),
    destination_country=st.sampled_from(["GB", "FR", "XK"]),
    subject_is_minor=st.booleans(),
    stage=st.sampled_from(Stage),
    referred_at=AWARE,
    last_risk_assessment=st.none() | ASSESSMENTS,
    receiving_org=st.none() | st.sampled_from(list(REGISTRY)),
    planned_arrival=st.none() | AWARE,
    plan_sent_to_org=st.none() | st.just(PLAN_TO_ORG_ID),
    readiness=st.none() | st.sampled_from(Readiness),
    pre_departure_contact_at=st.none() | AWARE,
    received_at=st.none() | AWARE,
    last_monitoring_at=st.none() | AWARE,
    closed_at=st.none() | AWARE,
    pending_risk_assessments=st.lists(ASSESSMENTS, max_size=3).map(tuple),
    referral_message_id=st.text(max_size=40),
    referral_rejected=st.booleans(),
    plan_message_id=st.text(max_size=40),
)


@given(CASE_TRANSFERS)
def test_json_round_trips_exactly(case: CaseTransfer) -> None:
    data = json.loads(json.dumps(case.to_json()))
    again = CaseTransfer.from_json(data)
    assert again == case
    assert again.to_json() == data
    assert again.referred_at.tzinfo is UTC


def test_a_state_stored_before_acknowledgements_counted_reads_as_it_was() -> None:
    # As broker versions before issue 17 stored it: the assessment counted at acceptance.
    stored = {
        "v": 1,
        "case_ref": CASE,
        "sending": NG.id,
        "destination": GB.id,
        "destination_country": "GB",
        "subject_is_minor": False,
        "stage": "accepted",
        "referred_at": "2025-03-01T12:00:00Z",
        "last_risk_assessment": {
            "assessed_at": "2025-03-02T10:00:00Z",
            "level": "low",
            "return_recommended": True,
        },
        "receiving_org": None,
        "planned_arrival": None,
        "received_at": None,
        "last_monitoring_at": None,
        "closed_at": None,
    }
    case = CaseTransfer.from_json(stored)
    assert case.last_risk_assessment == RiskAssessment(
        datetime(2025, 3, 2, 10, tzinfo=UTC), RiskLevel.LOW, True
    )
    assert (case.pending_risk_assessments, case.referral_rejected) == ((), False)
    assert apply(case, preparation(), RULES_).stage is Stage.RETURN_PREPARED


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda d: {k: v for k, v in d.items() if k != "v"}, id="no-version"),
        pytest.param(lambda d: {**d, "v": 2}, id="other-version"),
        pytest.param(lambda d: {**d, "name": "A. Person"}, id="extra-member"),
        pytest.param(lambda d: {k: v for k, v in d.items() if k != "stage"}, id="missing-member"),
        pytest.param(lambda d: {**d, "stage": "returned"}, id="unknown-stage"),
        pytest.param(lambda d: {**d, "referred_at": "2025-03-01T12:00:00"}, id="naive-time"),
        pytest.param(lambda d: {**d, "received_at": "yesterday"}, id="not-a-time"),
        pytest.param(
            lambda d: {**d, "last_risk_assessment": {"level": "low"}}, id="partial-assessment"
        ),
        pytest.param(
            lambda d: {**d, "pending_risk_assessments": [{"level": "low"}]}, id="partial-pending"
        ),
    ],
)
def test_malformed_json_is_rejected(broken: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError (pydantic's included)
        CaseTransfer.from_json(broken(received().to_json()))


# --- the state machine, driven at random ---------------------------------------------------

RANK = {
    Stage.REFERRED: 0,
    Stage.ACCEPTED: 1,
    Stage.DECLINED: 1,
    Stage.RETURN_PREPARED: 2,
    Stage.RECEIVED: 3,
    Stage.NOT_RECEIVED: 3,
    Stage.CLOSED: 4,
}
PARTIES = list(REGISTRY.values())
#: Offsets from now for header times: at, just inside or just past the rules' edges, or any.
OFFSETS = st.sampled_from([TICK, SKEW, timedelta(hours=72), timedelta(days=30)]).flatmap(
    lambda edge: st.sampled_from([-edge - TICK, -edge, edge, edge + TICK])
) | st.timedeltas(min_value=-timedelta(days=40), max_value=timedelta(days=40))

#: docs/design.md §6, "allowed when": the stages each type may arrive in (a referral: no case).
ALLOWED_IN = {
    MessageType.REFERRAL_RESPONSE: {Stage.REFERRED},
    MessageType.RISK_ASSESSMENT: {Stage.ACCEPTED, Stage.RETURN_PREPARED},
    MessageType.RETURN_PREPARATION: {Stage.ACCEPTED, Stage.RETURN_PREPARED},
    MessageType.RECEPTION_CONFIRMATION: {Stage.RETURN_PREPARED},
    MessageType.CASE_MONITORING: {Stage.RECEIVED},
    MessageType.CASE_CLOSURE: set(Stage) - {Stage.CLOSED},
    MessageType.CONSENT_WITHDRAWAL: set(Stage),
    MessageType.RECEPTION_PLAN_RESPONSE: {Stage.RETURN_PREPARED},
    MessageType.PRE_DEPARTURE_CONTACT: {Stage.RETURN_PREPARED},
}


def senders(case: CaseTransfer, kind: MessageType) -> set[str | None]:
    """docs/design.md §6, "sent by": who may send each type in a case."""
    focal: set[str | None] = {case.sending, case.destination}
    table: dict[MessageType, set[str | None]] = {
        MessageType.REFERRAL_RESPONSE: {case.destination},
        MessageType.RISK_ASSESSMENT: focal,
        MessageType.RETURN_PREPARATION: {case.sending},
        MessageType.RECEPTION_CONFIRMATION: {case.receiving_org},
        MessageType.CASE_MONITORING: {case.receiving_org, case.destination},
        MessageType.CASE_CLOSURE: focal,
        MessageType.CONSENT_WITHDRAWAL: {case.sending},
        MessageType.RECEPTION_PLAN_RESPONSE: {case.receiving_org},
        MessageType.PRE_DEPARTURE_CONTACT: {case.receiving_org},
    }
    return table[kind]


def recipients(case: CaseTransfer, message: Step) -> set[str | None]:
    """Whom each type may go to: the other focal point, or as the issue says."""
    focal: set[str | None] = {case.sending, case.destination}
    table: dict[MessageType, set[str | None]] = {
        MessageType.REFERRAL_RESPONSE: {case.sending},
        MessageType.RISK_ASSESSMENT: focal,
        # The plan, to the destination focal point; the plan in force, to its organisation.
        MessageType.RETURN_PREPARATION: {case.destination, case.receiving_org},
        MessageType.RECEPTION_CONFIRMATION: focal,
        MessageType.CASE_MONITORING: focal,
        MessageType.CASE_CLOSURE: focal,
        MessageType.CONSENT_WITHDRAWAL: {case.destination, case.receiving_org},
        MessageType.RECEPTION_PLAN_RESPONSE: focal,
        MessageType.PRE_DEPARTURE_CONTACT: focal,
    }
    return table[message.type] - {message.sender.id}


#: The types the walks below send.
MODELLED = list(MessageType)

#: The types that move a case on from each stage: drawn more often, so walks get deep.
NEXT = {
    None: [MessageType.REFERRAL],
    Stage.REFERRED: [MessageType.REFERRAL_RESPONSE],
    Stage.ACCEPTED: [MessageType.RISK_ASSESSMENT, MessageType.RETURN_PREPARATION],
    Stage.DECLINED: [MessageType.CASE_CLOSURE],
    Stage.RETURN_PREPARED: [
        MessageType.RECEPTION_CONFIRMATION,
        MessageType.RISK_ASSESSMENT,
        MessageType.RETURN_PREPARATION,
        MessageType.RECEPTION_PLAN_RESPONSE,
        MessageType.PRE_DEPARTURE_CONTACT,
    ],
    Stage.RECEIVED: [MessageType.CASE_MONITORING, MessageType.CASE_CLOSURE],
    Stage.NOT_RECEIVED: [MessageType.CASE_CLOSURE],
    Stage.CLOSED: [MessageType.CONSENT_WITHDRAWAL],
}


def often(likely: Any, anything: Any, odds: int = 3) -> Any:
    """``likely`` about ``odds`` times for each time ``anything`` (both strategies)."""
    # sampled_from keeps repeats (one_of would merge the same strategy given twice).
    pick = st.sampled_from([True] * odds + [False])
    return pick.flatmap(lambda chosen: likely if chosen else anything)


def mostly(likely: Any, edge: Any) -> Any:
    """``likely`` about seven times in eight, else ``edge``."""
    return often(likely, edge, odds=7)


#: What a closure carries: mostly notes (under a consent), else nothing (under none).
CLOSURE_DATA = often(st.just(frozenset(DataCategory)), st.just(frozenset()))


@st.composite
def steps(draw: st.DrawFn, case: CaseTransfer | None, now: datetime) -> Step:
    """A message, mostly of a type that moves the case on and between the parties its type
    belongs to (so walks get deep), else of any type between any two participants; facts
    are drawn near the rules' edges."""
    stage = case.stage if case else None
    kind = draw(often(st.sampled_from(NEXT[stage]), st.sampled_from(MODELLED)))
    designated = REGISTRY.get(case.receiving_org or "") if case else None
    roles: dict[MessageType, list[tuple[Party, Party]]] = {
        MessageType.REFERRAL: [(NG, GB)],
        MessageType.REFERRAL_RESPONSE: [(GB, NG)],
        MessageType.RISK_ASSESSMENT: [(GB, NG), (NG, GB)],
        MessageType.RETURN_PREPARATION: [(NG, GB), (NG, designated or ORG)],
        MessageType.RECEPTION_CONFIRMATION: [(designated or ORG, GB), (designated or ORG, NG)],
        MessageType.CASE_MONITORING: [(designated or ORG, GB), (GB, NG)],
        MessageType.CASE_CLOSURE: [(NG, GB), (GB, NG)],
        MessageType.CONSENT_WITHDRAWAL: [(NG, GB), (NG, designated or ORG)],
        MessageType.RECEPTION_PLAN_RESPONSE: [(designated or ORG, NG), (designated or ORG, GB)],
        MessageType.PRE_DEPARTURE_CONTACT: [(designated or ORG, NG), (designated or ORG, GB)],
    }
    pairs = st.sampled_from(roles[kind])
    anyone = st.tuples(st.sampled_from(PARTIES), st.sampled_from(PARTIES)).filter(
        lambda pair: pair[0] != pair[1]
    )
    sender, recipient = draw(often(pairs, anyone))
    # Header times: mostly plausibly in the past (ahead for an arrival), else near an edge.
    past = now - draw(often(st.timedeltas(timedelta(0), timedelta(days=10)), OFFSETS))
    header: BaseModel
    org = None
    if kind is MessageType.REFERRAL:
        header = ReferralHeader(
            destination_country=draw(often(st.just("GB"), st.sampled_from(["FR", "NG"]))),
            subject_is_minor=draw(st.booleans()),
        )
    elif kind is MessageType.REFERRAL_RESPONSE:
        header = ReferralResponseHeader(accepted=draw(st.booleans()))
    elif kind is MessageType.RISK_ASSESSMENT:
        header = RiskAssessmentHeader(
            risk_level=draw(st.sampled_from(RiskLevel)),
            return_recommended=draw(often(st.just(True), st.just(False))),
            assessed_at=past,
        )
    elif kind is MessageType.RETURN_PREPARATION:
        others = st.sampled_from([OTHER_ORG.id, FR_ORG.id, GB.id, "gb.unknown"])
        org_id = draw(often(st.just(ORG.id), others))
        header = ReturnPreparationHeader(
            receiving_org=org_id,
            planned_arrival=now
            + draw(often(st.timedeltas(timedelta(hours=72), timedelta(days=20)), OFFSETS)),
            best_interests_ref=draw(st.none() | st.just("bid:1")),
            best_interests_outcome=draw(st.none() | st.sampled_from(BestInterestsOutcome)),
            subject_is_minor=draw(st.booleans()),
        )
        org = REGISTRY.get(org_id)
    elif kind is MessageType.RECEPTION_CONFIRMATION:
        outcome = draw(often(st.just(ReceptionOutcome.RECEIVED), st.sampled_from(ReceptionOutcome)))
        header = ReceptionConfirmationHeader(outcome=outcome, at=past)
    elif kind is MessageType.CASE_MONITORING:
        start = draw(st.dates(date(2025, 1, 1), date(2026, 1, 1)))
        header = CaseMonitoringHeader(
            period_start=start, period_end=start + timedelta(days=draw(st.integers(-2, 120)))
        )
    elif kind is MessageType.CASE_CLOSURE:
        header = CaseClosureHeader(reason=draw(st.sampled_from(ClosureReason)))
    elif kind is MessageType.RECEPTION_PLAN_RESPONSE:
        header = ReceptionPlanResponseHeader(readiness=draw(st.sampled_from(Readiness)))
    elif kind is MessageType.PRE_DEPARTURE_CONTACT:
        header = PreDepartureContactHeader(at=past)
    else:
        header = ConsentWithdrawalHeader()
    return Step(
        type=kind,
        sender=sender,
        recipient=recipient,
        header=header,
        consent_given_by=draw(
            often(st.just(GivenBy.GUARDIAN), st.sampled_from([GivenBy.PERSON, None]))
        ),
        at=now,
        receiving_org=org,
        case_ref=CASE,
        message_id=f"m-{next(_IDS)}",
        data_categories=(
            draw(CLOSURE_DATA) if kind is MessageType.CASE_CLOSURE else frozenset(DataCategory)
        ),
    )


def blocked(case: CaseTransfer) -> bool:
    """Whether a risk assessment accepted but not yet answered holds back a return."""
    latest = case.last_risk_assessment
    return any(
        latest is None or pending.assessed_at >= latest.assessed_at
        for pending in case.pending_risk_assessments
    )


@st.composite
def next_steps(draw: st.DrawFn, case: CaseTransfer | None, now: datetime) -> Step:
    """Mostly the message a well-run case would see next, else one of any type; mostly
    between the parties its type belongs to, else between any two parties of the case."""
    stage = case.stage if case else None
    risk = case.last_risk_assessment if case else None
    expected = NEXT[stage]
    if stage is Stage.ACCEPTED:  # assess until an assessment recommends return, then prepare
        assert case is not None
        ready = risk is not None and risk.return_recommended and not blocked(case)
        expected = [MessageType.RETURN_PREPARATION if ready else MessageType.RISK_ASSESSMENT]
    if stage is Stage.RETURN_PREPARED and case is not None and case.plan_sent_to_org is None:
        expected = [MessageType.RETURN_PREPARATION]  # the plan, on to its organisation
    kind = draw(often(st.sampled_from(expected), st.sampled_from(MODELLED)))
    designated = REGISTRY.get(case.receiving_org or "", ORG) if case else ORG
    message = draw(_plausible(case, now, kind, risk, designated))
    if kind is MessageType.CASE_CLOSURE:
        message = replace(message, data_categories=draw(CLOSURE_DATA))
    if kind not in (MessageType.REFERRAL, MessageType.CONSENT_WITHDRAWAL):
        # The case's consent, mostly given by whom the case needs (a guardian for a child).
        minor = case is not None and case.subject_is_minor
        proper = GivenBy.GUARDIAN if minor else GivenBy.PERSON
        wrong = st.sampled_from([GivenBy.PERSON, None])
        message = replace(message, consent_given_by=draw(mostly(st.just(proper), wrong)))
    # Now and then between two parties of the case the type does not belong to.
    pair = st.permutations([NG, GB, designated]).map(lambda parties: parties[:2])
    if case is not None and draw(often(st.just(False), st.just(True))):
        sender, recipient = draw(pair)
        message = replace(message, sender=sender, recipient=recipient)
    return message


@st.composite
def _plausible(
    draw: st.DrawFn,
    case: CaseTransfer | None,
    now: datetime,
    kind: MessageType,
    risk: RiskAssessment | None,
    designated: Party,
) -> Step:
    """A message of ``kind``, with facts mostly plausible and now and then just past the
    edge of a rule."""
    edges = st.sampled_from([-TICK, timedelta(0), TICK])
    likely = often(st.just(True), st.just(False))
    days = st.integers(0, 20).map(lambda n: timedelta(days=n))
    minor = case.subject_is_minor if case else draw(st.booleans())
    proper = GivenBy.GUARDIAN if minor else GivenBy.PERSON
    given_by = draw(mostly(st.just(proper), st.sampled_from([GivenBy.PERSON, None])))
    sender, recipient = draw(st.sampled_from([(NG, GB), (GB, NG)]))
    if kind is MessageType.REFERRAL:
        to, country = draw(mostly(st.just((GB, "GB")), st.just((NG_OTHER, "NG"))))
        return referral(now, minor=minor, given_by=given_by, recipient=to, country=country)
    if kind is MessageType.REFERRAL_RESPONSE:
        return response(now, accepted=draw(likely))
    if kind is MessageType.RISK_ASSESSMENT:
        assessed_at = now - draw(mostly(days, st.just(-SKEW - TICK)))
        recommended = draw(likely)
        return assessment(
            now,
            assessed_at=assessed_at,
            recommended=recommended,
            sender=sender,
            recipient=recipient,
        )
    if kind is MessageType.RETURN_PREPARATION:
        if risk is not None and draw(often(st.just(False), st.just(True))):
            now = max(now, risk.assessed_at + RULES_.risk_max_age + draw(edges))  # aged
        others = st.sampled_from([OTHER_ORG.id, FR_ORG.id, GB.id, "gb.unknown"])
        arrival = now + RULES_.min_notice + draw(mostly(days, st.just(-TICK)))
        plan = case.planned_arrival if case and case.stage is Stage.RETURN_PREPARED else None
        # Once a plan is made, mostly send it on to its organisation if not yet sent.
        to_org = plan is not None and draw(
            mostly(st.just(case is not None and case.plan_sent_to_org is None), st.booleans())
        )
        if to_org and plan is not None:  # mostly the plan in force, now and then another
            arrival = draw(mostly(st.just(plan), st.just(arrival)))
        return preparation(
            now,
            arrival=arrival,
            org=draw(mostly(st.just(designated.id), others)),
            best_interests=draw(mostly(st.just("bid:1"), st.none())),
            outcome=draw(
                mostly(st.just(IN_BEST_INTERESTS), st.sampled_from([None, NOT_IN_BEST_INTERESTS]))
            ),
            minor=draw(often(st.just(minor), st.just(True))),
            given_by=given_by,
            recipient=designated if to_org else GB,
        )
    if kind is MessageType.RECEPTION_PLAN_RESPONSE:
        readiness = draw(often(st.just(Readiness.READY), st.sampled_from(Readiness)))
        return plan_response(now, readiness=readiness, sender=designated, recipient=recipient)
    if kind is MessageType.PRE_DEPARTURE_CONTACT:
        contacted_at = now - draw(mostly(days, st.just(-SKEW - TICK)))
        return contact(now, contacted_at=contacted_at, sender=designated, recipient=recipient)
    if kind is MessageType.RECEPTION_CONFIRMATION:
        received_at = now - draw(mostly(days, st.just(-SKEW - TICK)))
        outcome = draw(often(st.just(ReceptionOutcome.RECEIVED), st.sampled_from(ReceptionOutcome)))
        return reception(
            now, outcome=outcome, received_at=received_at, sender=designated, recipient=recipient
        )
    if kind is MessageType.CASE_MONITORING:
        if case and case.received_at and draw(often(st.just(False), st.just(True))):
            now = max(now, case.received_at + RULES_.monitoring_period + draw(edges))  # late
        start = date(2025, 6, 1)
        end = start + draw(often(days, st.just(-timedelta(days=1))))
        by = draw(st.sampled_from([designated, GB]))
        return monitoring(now, start=start, end=end, sender=by, recipient=NG)
    if kind is MessageType.CASE_CLOSURE:
        return closure(now, sender=sender, recipient=recipient)
    return withdrawal(now, recipient=draw(st.sampled_from([GB, designated])))


def outcome(case: CaseTransfer | None, message: Step) -> CaseTransfer | RuleBroken:
    try:
        return apply(case, message, RULES_)
    except RuleBroken as broken:
        return broken


class CaseTransferMachine(RuleBasedStateMachine):
    """Random messages through :func:`apply`, and their recipients' answers through
    :func:`acknowledged` and :func:`rejected`; the safeguards hold after every one."""

    def __init__(self) -> None:
        super().__init__()
        self.case: CaseTransfer | None = None
        self.now = T0
        #: Messages of the case accepted and not yet answered, in acceptance order.
        self.unanswered: list[str] = []
        self.acknowledged: set[str] = set()
        #: The monitoring reports accepted since the reception and not rejected, and when
        #: each was accepted.
        self.monitoring_counted: list[str] = []
        self.monitoring_at: dict[str, datetime] = {}

    @rule(
        pause=mostly(
            st.timedeltas(timedelta(0), timedelta(days=3)),
            st.timedeltas(timedelta(0), timedelta(days=400)),
        )
    )
    def time_passes(self, pause: timedelta) -> None:
        self.now += pause

    @precondition(lambda self: self.case is not None and self.case.stage is Stage.CLOSED)
    @rule()
    def another_case_begins(self) -> None:
        # A closed case accepts nothing more but withdrawals (checked); walk a fresh one.
        self.case = None
        self.unanswered = []
        self.monitoring_counted = []

    @precondition(lambda self: self.case is not None and self.unanswered)
    @rule(data=st.data())
    def answers_arrive(self, data: st.DataObject) -> None:
        """The recipients' nodes answer the messages waiting, in order: mostly an
        acknowledgement, now and then a rejection (a payload its header contradicts)."""
        for message_id in list(self.unanswered):
            assert self.case is not None
            before = self.case
            accept = data.draw(often(st.just(True), st.just(False)))
            after = (acknowledged if accept else rejected)(before, message_id)
            self.unanswered.remove(message_id)
            if accept:
                self.acknowledged.add(message_id)
            self.check_answered(before, message_id, accept, after)
            if not accept and before.reception_message_id == message_id:
                self.monitoring_counted = []  # the reception and all after it are void
            if not accept and message_id in self.monitoring_counted:
                self.monitoring_counted.remove(message_id)
            self.case = after
            self.check_monitoring()

    @rule(data=st.data())
    def a_message_arrives(self, data: st.DataObject) -> None:
        self.send(data.draw(steps(self.case, self.now)))

    @rule(data=st.data())
    def the_case_moves_on(self, data: st.DataObject) -> None:
        self.send(data.draw(next_steps(self.case, self.now)))

    def send(self, message: Step) -> None:
        self.now = message.at  # never earlier: steps are drawn at or after now
        before = self.case
        after = outcome(before, message)
        if isinstance(after, RuleBroken):
            assert after.rule in RULES
            assert after.detail
            return
        self.check_accepted(before, message, after)
        if message.type is MessageType.REFERRAL:
            self.unanswered = []  # a new case, or a corrected referral that starts it afresh
            self.monitoring_counted = []
        if message.type is MessageType.CASE_MONITORING:
            self.monitoring_counted.append(message.message_id)
            self.monitoring_at[message.message_id] = message.at
        self.unanswered.append(message.message_id)
        self.case = after
        self.check_monitoring()

    def check_monitoring(self) -> None:
        """The monitoring deadline runs from the latest report not rejected."""
        assert self.case is not None
        counted = [self.monitoring_at[m] for m in self.monitoring_counted]
        assert self.case.last_monitoring_at == max(counted, default=None)

    def check_answered(
        self, before: CaseTransfer, message_id: str, accept: bool, after: CaseTransfer
    ) -> None:
        # An answer moves no stage forward; only a rejection of the message that moved the
        # case to its stage moves it back: the current plan, the reception, the answer to
        # the referral.
        was_plan = before.plan_message_id == message_id and before.stage is Stage.RETURN_PREPARED
        was_reception = before.reception_message_id == message_id and before.stage in (
            Stage.RECEIVED,
            Stage.NOT_RECEIVED,
        )
        was_answer = before.response_message_id == message_id and before.stage in (
            Stage.ACCEPTED,
            Stage.DECLINED,
        )
        if not accept and was_plan:
            assert (after.stage, after.receiving_org, after.planned_arrival) == (
                Stage.ACCEPTED,
                None,
                None,
            )
        elif not accept and was_reception:
            assert (after.stage, after.received_at, after.last_monitoring_at) == (
                Stage.RETURN_PREPARED,
                None,
                None,
            )
        elif not accept and was_answer:
            assert after.stage is Stage.REFERRED
        else:
            assert after.stage is before.stage
        # A monitoring report counts from acceptance until its recipient rejects it; the
        # deadline then runs from the latest report before it that was not rejected.
        reports = {r.message_id for r in before.monitoring_unanswered}
        if message_id in reports:
            assert message_id not in {r.message_id for r in after.monitoring_unanswered}
            if accept:
                assert after.last_monitoring_at == before.last_monitoring_at
            else:
                assert after.last_monitoring_at == max(
                    [self.monitoring_at[m] for m in self.monitoring_counted if m != message_id],
                    default=None,
                )
        assert after.referral_rejected is (
            before.referral_rejected
            or (
                not accept
                and message_id == before.referral_message_id
                and before.stage is not Stage.CLOSED
            )
        )
        assert message_id not in {p.message_id for p in after.pending_risk_assessments}
        assert after.subject_is_minor is before.subject_is_minor

    def check_accepted(
        self, before: CaseTransfer | None, message: Step, after: CaseTransfer
    ) -> None:
        header = message.header
        # The children's rules: every message of a child's case that needs a consent is
        # under a guardian's, and a child's case stays one.
        if after.subject_is_minor and consent_needed(message.type, message.data_categories):
            assert message.consent_given_by is GivenBy.GUARDIAN
        if before is not None:
            assert after.subject_is_minor >= before.subject_is_minor
        if message.type is MessageType.REFERRAL:
            # A referral, from a focal point to one of another country, the header's; again
            # only by its sender, after its recipient rejected the first.
            assert isinstance(header, ReferralHeader)
            assert after.stage is Stage.REFERRED
            assert message.sender.kind is message.recipient.kind is FOCAL
            assert message.recipient.country == header.destination_country
            assert message.sender.country != header.destination_country
            assert after.subject_is_minor >= header.subject_is_minor
            if before is not None:
                assert before.referral_rejected
                assert before.stage is not Stage.CLOSED
                assert message.sender.id == before.sending
                assert not after.referral_rejected
            return
        assert before is not None
        # A referral its recipient rejected: nothing builds on it.
        if before.referral_rejected:
            assert message.type in (MessageType.CASE_CLOSURE, MessageType.CONSENT_WITHDRAWAL)
        # Nothing after closure but a withdrawal, which changes nothing.
        if before.stage is Stage.CLOSED:
            assert message.type is MessageType.CONSENT_WITHDRAWAL
            assert after == before
        # Stages only move forward, each type only from its stages and its senders.
        assert RANK[after.stage] >= RANK[before.stage]
        assert before.stage in ALLOWED_IN[message.type]
        assert message.sender.id in senders(before, message.type)
        assert message.recipient.id in recipients(before, message)
        # Only the parties of the case exchange its messages.
        parties = {after.sending, after.destination, after.receiving_org}
        assert {message.sender.id, message.recipient.id} <= parties
        assert (after.sending, after.destination) == (before.sending, before.destination)
        if message.type is MessageType.RETURN_PREPARATION:
            # Principle 5: a recent risk assessment recommending return, a registered
            # receiving organisation of the country of return, notice, children's rules.
            assert isinstance(header, ReturnPreparationHeader)
            risk = before.last_risk_assessment
            assert risk is not None
            assert risk.return_recommended
            assert risk.assessed_at >= message.at - RULES_.risk_max_age
            # ... acknowledged by its recipient, and no later one waiting for its answer.
            assert risk.message_id in self.acknowledged
            assert not blocked(before)
            assert header.best_interests_outcome is not NOT_IN_BEST_INTERESTS
            if message.recipient.id == GB.id:  # a new plan (not its copy to the organisation)
                assert after.plan_message_id == message.message_id
            org = message.receiving_org
            assert org is not None
            assert org.kind is ORG_KIND
            assert org.country == after.destination_country == "GB"
            assert after.receiving_org == org.id == header.receiving_org
            assert header.planned_arrival >= message.at + RULES_.min_notice
            if after.subject_is_minor:
                assert message.consent_given_by is GivenBy.GUARDIAN
                assert header.best_interests_ref is not None
                assert header.best_interests_outcome is IN_BEST_INTERESTS
        if isinstance(header, RiskAssessmentHeader):
            assert header.assessed_at <= message.at + RULES_.clock_skew
        if isinstance(header, ReceptionConfirmationHeader):
            assert header.at <= message.at + RULES_.clock_skew
        if message.type is MessageType.RECEPTION_CONFIRMATION:
            assert before.stage is Stage.RETURN_PREPARED
            assert message.sender.id == before.receiving_org
        if message.type is MessageType.RETURN_PREPARATION and message.recipient.id != GB.id:
            # The plan in force, to the organisation it designates: no new plan, no new stage.
            assert isinstance(header, ReturnPreparationHeader)
            assert before.stage is after.stage is Stage.RETURN_PREPARED
            assert message.recipient.id == header.receiving_org == before.receiving_org
            assert header.planned_arrival == before.planned_arrival == after.planned_arrival
            assert after == replace(before, plan_sent_to_org=message.message_id)
        if message.type in (MessageType.RECEPTION_PLAN_RESPONSE, MessageType.PRE_DEPARTURE_CONTACT):
            # The organisation answers, and meets the person, only once it has the plan.
            assert before.plan_sent_to_org is not None
            assert after.stage is Stage.RETURN_PREPARED
        if isinstance(header, PreDepartureContactHeader):
            assert header.at <= message.at + RULES_.clock_skew
        if after.readiness is not None:  # an answer is to the plan the organisation was sent
            assert after.plan_sent_to_org is not None
        if message.type is MessageType.CASE_MONITORING:
            assert isinstance(header, CaseMonitoringHeader)
            assert header.period_start <= header.period_end
            assert before.received_at is not None
            assert message.at <= before.received_at + RULES_.monitoring_period
        if after.stage is Stage.RETURN_PREPARED and before.stage is not Stage.RETURN_PREPARED:
            assert message.type is MessageType.RETURN_PREPARATION

    @invariant()
    def only_acknowledged_assessments_count(self) -> None:
        if self.case is not None and self.case.last_risk_assessment is not None:
            assert self.case.last_risk_assessment.message_id in self.acknowledged
        if self.case is not None:
            waiting = {p.message_id for p in self.case.pending_risk_assessments}
            assert waiting <= set(self.unanswered)

    @invariant()
    def state_round_trips_through_json(self) -> None:
        if self.case is not None:
            data = json.loads(json.dumps(self.case.to_json()))
            assert CaseTransfer.from_json(data) == self.case

    @invariant()
    def closed_cases_raise_no_alerts(self) -> None:
        if self.case is not None and self.case.stage is Stage.CLOSED:
            assert due_alerts(self.case, self.now + timedelta(days=999), RULES_) == frozenset()


CaseTransferMachine.TestCase.settings = settings(max_examples=examples(200), stateful_step_count=50)
TestCaseTransferMachine = CaseTransferMachine.TestCase
