"""What a party may send next (docs/design.md §6, §7): offered exactly when the workflow
would accept it, blocked with the rule the broker would refuse it by, and with the consents
that would cover it; and the deadlines the alerts are raised on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from tests.domain.test_workflow import (
    ARRIVAL,
    CASE,
    CASE_TRANSFERS,
    GB,
    NG,
    ORG,
    REGISTRY,
    RULES_,
    T_PREPARE,
    T_RISK,
    CaseTransferMachine,
    accepted,
    assessed,
    assessment,
    closed,
    outcome,
    plan_sent,
    prepared,
    received,
    referral_rejected,
    referred,
    steps,
)
from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.consent import Consent, GivenBy, MessageFacts
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.next_steps import (
    CaseRole,
    NextStep,
    allowed_next,
    covering,
    deadlines,
    roles,
)
from trm_broker.domain.workflow import (
    PARTY_RULES,
    RULES,
    CaseTransfer,
    RuleBroken,
    Step,
    apply,
    due_alerts,
    standing,
)

T = MessageType
SENDING, DESTINATION, RECEIVING = (
    CaseRole.SENDING_FOCAL_POINT,
    CaseRole.DESTINATION_FOCAL_POINT,
    CaseRole.RECEIVING_ORG,
)


SINCE = datetime(2025, 1, 1, tzinfo=UTC)


def consent(
    id: str = "cns-1",
    *,
    purposes: frozenset[MessageType] = frozenset(MessageType),
    recipients: frozenset[str] = frozenset({GB.id, ORG.id}),
    given_by: GivenBy = GivenBy.PERSON,
    registered_by: str = NG.id,
    valid_from: datetime = SINCE,
    withdrawn_at: datetime | None = None,
) -> Consent:
    return Consent(
        id=id,
        case_ref=CASE,
        registered_by=registered_by,
        given_by=given_by,
        purposes=purposes,
        recipients=recipients,
        recipient_countries=frozenset(),
        data_categories=frozenset(DataCategory),
        valid_from=valid_from,
        valid_until=None,
        withdrawn_at=withdrawn_at,
    )


def offered(
    case: CaseTransfer, role: CaseRole, at: datetime, consents: list[Consent] | None = None
) -> dict[tuple[MessageType, str], NextStep]:
    items = allowed_next(case, role, REGISTRY, consents or [], at, RULES_)
    return {(item.type, item.recipient): item for item in items}


# --- examples ------------------------------------------------------------------------------


def test_a_referred_case_offers_the_answer_to_the_destination_only() -> None:
    case = referred()
    at = case.referred_at + timedelta(hours=1)
    destination = offered(case, DESTINATION, at, [consent()])
    answer = destination[(T.REFERRAL_RESPONSE, NG.id)]
    assert (answer.allowed, answer.consents, answer.rule) == (True, ("cns-1",), None)
    # Who never sends a type is not offered it; a step not yet possible is blocked, in words.
    assert (T.RETURN_PREPARATION, NG.id) not in destination
    blocked = destination[(T.RISK_ASSESSMENT, NG.id)]
    assert (blocked.allowed, blocked.rule) == (False, "risk_assessment_needs_acceptance")
    assert blocked.detail == RULES["risk_assessment_needs_acceptance"]
    sending = offered(case, SENDING, at, [consent()])
    assert (T.REFERRAL_RESPONSE, GB.id) not in sending
    assert (T.REFERRAL, GB.id) not in sending  # referred once: done for good
    assert sending[(T.CASE_CLOSURE, GB.id)].allowed
    withdrawal = sending[(T.CONSENT_WITHDRAWAL, GB.id)]
    assert (withdrawal.allowed, withdrawal.consent_needed, withdrawal.consents) == (True, False, ())


def test_a_return_is_not_offered_until_an_acknowledged_recommending_assessment_is_in() -> None:
    at = T_PREPARE
    none_yet = offered(accepted(), SENDING, at)[(T.RETURN_PREPARATION, GB.id)]
    assert none_yet.rule == "return_preparation_needs_recent_recommending_risk_assessment"
    assert none_yet.detail is not None
    assert "there is none" in none_yet.detail
    # Accepted, not yet acknowledged by its recipient's node: it holds the return back.
    waiting = apply(accepted(), assessment(), RULES_)
    pending = offered(waiting, SENDING, at)[(T.RETURN_PREPARATION, GB.id)]
    assert (pending.allowed, pending.rule) == (False, "risk_assessment_not_yet_acknowledged")
    against = offered(assessed(recommended=False), SENDING, at)[(T.RETURN_PREPARATION, GB.id)]
    assert against.detail is not None
    assert "does not recommend" in against.detail
    ready = offered(assessed(), SENDING, at, [consent()])[(T.RETURN_PREPARATION, GB.id)]
    assert (ready.allowed, ready.consents) == (True, ("cns-1",))
    # The same case a month later: the assessment is too old.
    late = offered(assessed(), SENDING, T_RISK + RULES_.risk_max_age + timedelta(seconds=1))
    assert not late[(T.RETURN_PREPARATION, GB.id)].allowed


def test_the_receiving_organisation_is_offered_its_steps_once_it_was_sent_the_plan() -> None:
    at = T_PREPARE + timedelta(days=1)
    before = offered(prepared(), RECEIVING, at)
    assert before[(T.RECEPTION_PLAN_RESPONSE, NG.id)].rule == "needs_plan_sent_to_receiving_org"
    assert before[(T.RECEPTION_CONFIRMATION, GB.id)].allowed
    sending = offered(prepared(), SENDING, at)
    assert (T.RETURN_PREPARATION, ORG.id) in sending  # the plan in force, on to its org
    after = offered(plan_sent(), RECEIVING, at)
    assert after[(T.RECEPTION_PLAN_RESPONSE, NG.id)].allowed
    assert after[(T.PRE_DEPARTURE_CONTACT, GB.id)].allowed
    assert all(item.type is not T.RISK_ASSESSMENT for item in after.values())
    assert offered(accepted(), RECEIVING, at) == {}  # no organisation designated yet


def test_a_closed_case_offers_only_the_withdrawal() -> None:
    case = closed()
    for role in (SENDING, DESTINATION, RECEIVING):
        items = offered(case, role, ARRIVAL + timedelta(days=60))
        assert {item.type for item in items.values() if item.allowed} <= {T.CONSENT_WITHDRAWAL}
        assert all(item.allowed for item in items.values())
    assert offered(case, SENDING, ARRIVAL + timedelta(days=60))


def test_after_a_rejected_referral_its_correction_is_offered_and_the_rest_waits() -> None:
    case = referral_rejected()
    at = case.referred_at + timedelta(hours=1)
    sending = offered(case, SENDING, at)
    assert sending[(T.REFERRAL, GB.id)].allowed
    destination = offered(case, DESTINATION, at)
    answer = destination[(T.REFERRAL_RESPONSE, NG.id)]
    assert (answer.allowed, answer.rule) == (False, "referral_rejected_by_recipient")


def test_only_consents_that_would_cover_the_step_are_named() -> None:
    at = T_PREPARE
    case = assessed()
    consents = [
        consent("cns-fits"),
        consent("cns-purpose", purposes=frozenset({T.REFERRAL})),
        consent("cns-recipient", recipients=frozenset({ORG.id})),
        consent("cns-withdrawn", withdrawn_at=at - timedelta(seconds=1)),
        consent("cns-later", valid_from=at + timedelta(days=1)),
        consent("cns-other", registered_by=GB.id),
    ]
    plan = offered(case, SENDING, at, consents)[(T.RETURN_PREPARATION, GB.id)]
    assert plan.consents == ("cns-fits",)
    # The focal point that registered a consent may always be sent data under it (§7).
    answer = offered(case, DESTINATION, at, consents)[(T.RISK_ASSESSMENT, NG.id)]
    assert answer.consents == ("cns-fits", "cns-recipient")


def test_a_childs_case_names_a_guardians_consents_only() -> None:
    case = replace(assessed(), subject_is_minor=True)
    consents = [consent("cns-person"), consent("cns-guardian", given_by=GivenBy.GUARDIAN)]
    plan = offered(case, SENDING, T_PREPARE, consents)[(T.RETURN_PREPARATION, GB.id)]
    assert plan.consents == ("cns-guardian",)
    # A closure carries personal data or not; the consents it may cite are a guardian's.
    closure = offered(case, SENDING, T_PREPARE, consents)[(T.CASE_CLOSURE, GB.id)]
    assert (closure.consent_needed, closure.consents) == (True, ("cns-guardian",))


def test_covering_checks_the_data_categories_when_they_are_known() -> None:
    narrow = replace(consent("cns-narrow"), data_categories=frozenset({DataCategory.IDENTITY}))
    facts = MessageFacts(
        type=T.RISK_ASSESSMENT,
        case_ref=CASE,
        sender=NG.id,
        recipient=GB.id,
        recipient_country="GB",
        data_categories=frozenset({DataCategory.HEALTH}),
        at=T_PREPARE,
    )
    assert covering([narrow, consent("cns-wide")], assessed(), facts) == ("cns-wide",)
    assert covering([narrow], assessed(), replace(facts, data_categories=frozenset())) == (
        "cns-narrow",
    )


def test_deadlines_are_those_the_alerts_are_raised_on() -> None:
    case = prepared()
    due = ARRIVAL + RULES_.reception_grace
    (reception,) = deadlines(case, due, RULES_)
    assert (reception.name, reception.due_at, reception.overdue) == ("reception_due", due, False)
    (late,) = deadlines(case, due + timedelta(seconds=1), RULES_)
    assert late.overdue
    assert late.alert == AlertKind.RECEPTION_OVERDUE.value
    done = received()
    assert done.received_at is not None
    (monitoring,) = deadlines(done, done.received_at, RULES_)
    assert monitoring.name == "monitoring_due"
    assert monitoring.due_at == done.received_at + RULES_.monitoring_interval
    # After the monitoring period, nothing is due any more.
    assert deadlines(done, done.received_at + RULES_.monitoring_period * 2, RULES_) == ()
    assert deadlines(closed(), ARRIVAL, RULES_) == ()


@given(CASE_TRANSFERS, st.timedeltas(timedelta(0), timedelta(days=800)))
def test_deadlines_overdue_are_the_due_alerts(case: CaseTransfer, after: timedelta) -> None:
    now = case.referred_at + after
    overdue = {d.alert for d in deadlines(case, now, RULES_) if d.overdue}
    assert overdue == {alert.value for alert in due_alerts(case, now, RULES_)}


# --- agreement with the workflow -----------------------------------------------------------


def check_agreement(case: CaseTransfer | None, message: Step) -> None:
    """What :func:`allowed_next` says of a message's type and recipient, for its sender's
    role, agrees with what :func:`apply` does with it."""
    if case is None:
        return
    members = roles(case)
    if message.recipient.id not in members.values():
        return
    result = outcome(case, message)
    for role, member in members.items():
        if member != message.sender.id:
            continue
        parties = {p: REGISTRY[p] for p in members.values() if p in REGISTRY}
        items = allowed_next(case, role, parties, [], message.at, RULES_)
        found = [i for i in items if (i.type, i.recipient) == (message.type, message.recipient.id)]
        if not isinstance(result, RuleBroken):  # accepted: it was offered
            assert len(found) == 1, (role, message.type, message.recipient.id)
            assert found[0].allowed, found[0]
        elif not found:  # not offered at all: never from this party, or done for good
            assert result.rule in PARTY_RULES | {
                "case_already_referred",
                "referral_already_answered",
                "case_closed",
                "referral_rejected_by_recipient",
                "minor_needs_guardian_consent",
            } or not _standing_ok(case, message), result.rule
        elif not found[0].allowed:  # blocked: refused, by that very rule under a guardian's
            assert isinstance(result, RuleBroken)
            if message.consent_given_by is GivenBy.GUARDIAN:
                assert result.rule == found[0].rule, (result.rule, found[0].rule)


def _standing_ok(case: CaseTransfer, message: Step) -> bool:
    try:
        standing(case, message.type, message.sender, message.recipient, message.at, RULES_)
    except RuleBroken:
        return False
    return True


class AgreementMachine(CaseTransferMachine):
    """The workflow's random walks, checking before each message that what is offered is
    what is accepted."""

    def send(self, message: Step) -> None:
        check_agreement(self.case, message)
        super().send(message)


def test_what_is_offered_is_what_the_workflow_accepts_along_random_walks() -> None:
    run_state_machine_as_test(
        AgreementMachine, settings=settings(max_examples=150, stateful_step_count=40)
    )


@st.composite
def party_messages(draw: st.DrawFn) -> tuple[CaseTransfer, Step]:
    """Any state, and a message of any type between two of its parties."""
    case = draw(CASE_TRANSFERS.filter(lambda c: c.sending != c.destination))
    case = replace(case, case_ref=CASE)
    now = case.referred_at + draw(st.timedeltas(timedelta(0), timedelta(days=500)))
    # The facts of a message of the case's stage; its parties are drawn below.
    message = draw(steps(replace(case, receiving_org=None), now))
    ids = list(dict.fromkeys(roles(case).values()))
    sender, recipient = draw(st.permutations(ids))[:2]
    return case, replace(message, sender=REGISTRY[sender], recipient=REGISTRY[recipient])


@settings(max_examples=300)
@given(party_messages())
def test_what_is_offered_is_what_the_workflow_accepts_in_any_state(
    drawn: tuple[CaseTransfer, Step],
) -> None:
    check_agreement(*drawn)
