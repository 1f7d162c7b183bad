"""What each party of a case may send next, under which consent, and what the case waits for
(docs/design.md §6, §7): read from the workflow's own rules, so that what is offered here is
what the broker accepts.

:func:`allowed_next` asks :func:`workflow.standing` (the rules of :func:`workflow.apply` that
read the case's state, the parties and the time, not the header) about every type and every
other party of the case, for the party in one role. A type is offered to a recipient when
nothing but its header could still refuse it; it is listed as blocked, with the rule and its
sentence, when a rule on *when* refuses it (a return is not offered until a recent risk
assessment recommending it is acknowledged); it is left out when a rule on *who* refuses it
(:data:`workflow.PARTY_RULES`: that party never sends it there) or when it is done for good
(the referral is made, or answered).

:func:`covering` names the consents that would cover a message: the same scope check as the
broker's (``Consent.covers``), of the consents the case's sending focal point registered, and,
in a child's case, a guardian's (:func:`workflow.consent_fits_case`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from trm_broker.domain import workflow
from trm_broker.domain.case_state import CaseTransfer, Party, Rules
from trm_broker.domain.consent import Consent, MessageFacts, consent_needed
from trm_broker.domain.messages import DataCategory, MessageType

__all__ = [
    "CaseRole",
    "DeadlineState",
    "NextStep",
    "allowed_next",
    "covering",
    "deadlines",
    "roles",
]


class CaseRole(StrEnum):
    """A party's part in a case transfer."""

    SENDING_FOCAL_POINT = "sending_focal_point"
    DESTINATION_FOCAL_POINT = "destination_focal_point"
    RECEIVING_ORG = "receiving_org"


#: Rules that never lift once they refuse: a step done for good, or any step but a withdrawal
#: in a closed case, is not offered again.
_DONE_RULES = frozenset({"case_already_referred", "referral_already_answered", "case_closed"})


def roles(case: CaseTransfer) -> dict[CaseRole, str]:
    """The participant in each role of the case (the receiving organisation once one is
    designated by the plan in force)."""
    found = {
        CaseRole.SENDING_FOCAL_POINT: case.sending,
        CaseRole.DESTINATION_FOCAL_POINT: case.destination,
    }
    if case.receiving_org:
        found[CaseRole.RECEIVING_ORG] = case.receiving_org
    return found


@dataclass(frozen=True)
class NextStep:
    """One message a party may send next, or may not yet.

    ``consents``: the ids of the consents that would cover it (in scope now for its type and
    recipient; its data categories are checked when it is sent). ``consent_needed``: whether
    it cites one at all (a withdrawal cites the consent it withdraws; a closure needs one only
    with personal data). ``rule`` and ``detail``: when not ``allowed``, the rule that refuses
    it now and the sentence the broker's refusal would carry."""

    type: MessageType
    recipient: str
    allowed: bool
    consent_needed: bool
    consents: tuple[str, ...]
    rule: str | None = None
    detail: str | None = None
    #: The rule's window (``{span}`` in ``detail``), in seconds.
    window_seconds: int | None = None


def covering(
    consents: Iterable[Consent], case: CaseTransfer | None, message: MessageFacts
) -> tuple[str, ...]:
    """The ids of the consents that would cover ``message`` (at ``message.at``), in the
    order given: registered by the case's sending focal point (by the sender, for the
    referral that opens a case), in scope, and a guardian's in a child's case.

    ``message.data_categories`` empty means not known yet (a step not yet written): every
    part of the scope but the categories is checked, and the children's rule is applied as
    to a message that carries personal data."""
    registrant = case.sending if case is not None else message.sender
    minor = case is not None and case.subject_is_minor
    carried = message.data_categories or frozenset(DataCategory)
    return tuple(
        consent.id
        for consent in consents
        if consent.registered_by == registrant
        and consent.case_ref == message.case_ref
        and consent.covers(message)
        and workflow.consent_fits_case(minor, consent.given_by, message.type, carried)
    )


def allowed_next(
    case: CaseTransfer,
    role: CaseRole,
    parties: Mapping[str, Party],
    consents: Iterable[Consent],
    now: datetime,
    rules: Rules,
) -> tuple[NextStep, ...]:
    """What the party in ``role`` may send next at ``now``, by type and recipient (in the
    order of :class:`MessageType`, then of the case's roles); ``parties`` are the registry
    entries of the case's parties. Empty for a role nobody holds in the case."""
    members = roles(case)
    sender = parties.get(members.get(role, ""))
    if sender is None:
        return ()
    others = [parties[p] for p in dict.fromkeys(members.values()) if p in parties]
    records = list(consents)
    found: list[NextStep] = []
    for message_type in MessageType:
        for recipient in others:
            if recipient.id == sender.id:
                continue
            step = _next_step(case, message_type, sender, recipient, records, now, rules)
            if step is not None:
                found.append(step)
    return tuple(found)


def _next_step(
    case: CaseTransfer,
    message_type: MessageType,
    sender: Party,
    recipient: Party,
    consents: list[Consent],
    now: datetime,
    rules: Rules,
) -> NextStep | None:
    try:
        workflow.standing(case, message_type, sender, recipient, now, rules)
    except workflow.RuleBroken as broken:
        if broken.rule in workflow.PARTY_RULES or broken.rule in _DONE_RULES:
            return None
        if _never_sends(case, message_type, sender, recipient, now, rules):
            return None
        blocked: workflow.RuleBroken | None = broken
    else:
        blocked = None
    # The categories are the payload's, known when it is sent: here, every part of the scope
    # but them.
    needed = consent_needed(message_type, frozenset(DataCategory))
    facts = MessageFacts(
        type=message_type,
        case_ref=case.case_ref,
        sender=sender.id,
        recipient=recipient.id,
        recipient_country=recipient.country,
        data_categories=frozenset(),
        at=now,
    )
    ids = covering(consents, case, facts) if needed else ()
    return NextStep(
        type=message_type,
        recipient=recipient.id,
        allowed=blocked is None,
        consent_needed=needed,
        consents=ids,
        rule=blocked.rule if blocked is not None else None,
        detail=blocked.detail if blocked is not None else None,
        window_seconds=(
            int(blocked.window.total_seconds())
            if blocked is not None and blocked.window is not None
            else None
        ),
    )


def _never_sends(
    case: CaseTransfer,
    message_type: MessageType,
    sender: Party,
    recipient: Party,
    now: datetime,
    rules: Rules,
) -> bool:
    """Whether a rule on who sends what, or a step done for good, would refuse this pair
    were the referral not rejected (which refuses most types before it asks who sends)."""
    if not case.referral_rejected:
        return False
    try:
        workflow.standing(
            replace(case, referral_rejected=False), message_type, sender, recipient, now, rules
        )
    except workflow.RuleBroken as broken:
        return broken.rule in workflow.PARTY_RULES or broken.rule in _DONE_RULES
    return False


@dataclass(frozen=True)
class DeadlineState:
    """A deadline of the case (:func:`workflow.deadlines`) as it stands at a time."""

    name: str
    due_at: datetime
    overdue: bool
    alert: str


def deadlines(case: CaseTransfer, now: datetime, rules: Rules) -> tuple[DeadlineState, ...]:
    """What the case waits for at ``now``, by when, and whether it is late: the deadlines
    whose missing raises an alert (:func:`workflow.due_alerts`), while they hold."""
    return tuple(
        DeadlineState(d.name, d.due_at, d.overdue(now), d.alert.value)
        for d in workflow.deadlines(case, rules)
        if d.holds(now)
    )
