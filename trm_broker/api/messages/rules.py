"""Principles 2 and 5, enforced on every accepted message: consent covers it, and the case's
workflow and return safeguards allow it (docs/design.md §6, §7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.consents import service as consents
from trm_broker.domain import workflow
from trm_broker.domain.consent import MessageFacts
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.messages import HEADER_MODELS, MessageType
from trm_broker.store import cases
from trm_broker.store import consents as consent_store
from trm_broker.store.accept_reads import AcceptReads
from trm_broker.store.models import ConsentRecord, Refusal
from trm_broker.store.registry_cache import Registry, RegistryParticipant
from trm_broker.web.problems import Conflict, ConsentMissing, WorkflowRule


def _party(row: RegistryParticipant) -> workflow.Party:
    return workflow.Party(id=row.id, kind=row.kind, country=row.country)


@dataclass(frozen=True)
class Admitted:
    """What the checks decided: the consent withdrawn by this message, if it is one."""

    withdraws: ConsentRecord | None


async def admit(
    session: AsyncSession,
    envelope: Envelope,
    sender: RegistryParticipant,
    recipient: RegistryParticipant,
    now: datetime,
    rules: workflow.Rules,
    registry: Registry,
    reads: AcceptReads,
) -> Admitted:
    """Check consent, then the workflow; store the case's new state in this transaction.
    ``reads``: the case and the consent as the accept path read them.

    Raises ``ConsentMissing`` (403) or ``WorkflowRule`` (409), with a ``refusal`` attribute
    the caller records for the auditors' report after the rollback.
    """
    try:
        return await _admit(session, envelope, sender, recipient, now, rules, registry, reads)
    except (ConsentMissing, WorkflowRule) as problem:
        problem.refusal = Refusal(
            at=now,
            rule=str(problem.extensions.get("rule", problem.slug))[:80],
            message_type=envelope.type,
            sender_country=sender.country,
            recipient_country=recipient.country,
        )
        raise


async def _admit(
    session: AsyncSession,
    envelope: Envelope,
    sender: RegistryParticipant,
    recipient: RegistryParticipant,
    now: datetime,
    rules: workflow.Rules,
    registry: Registry,
    reads: AcceptReads,
) -> Admitted:
    # 1. Consent (§7): every message but a withdrawal needs a consent that covers it.
    facts = MessageFacts(
        type=envelope.type,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
        recipient_country=recipient.country,
        data_categories=frozenset(envelope.data_categories),
        at=now,
    )
    # The case's sending focal point registered its consent; a referral opens the case.
    row = reads.case
    registrant = row.sending if row is not None else envelope.sender
    consent = consents.covering(envelope.consent_ref, reads.consent, facts, registrant)
    withdraws = None
    if envelope.type is MessageType.CONSENT_WITHDRAWAL:
        withdraws = await _withdrawn_consent(session, envelope)

    # 2. The workflow and return safeguards (§6), over the case's stored state.
    receiving_org = None
    header = HEADER_MODELS[envelope.type].model_validate(envelope.header)
    if envelope.type is MessageType.RETURN_PREPARATION:
        org = await registry.participant(str(getattr(header, "receiving_org", "")))
        receiving_org = _party(org) if org is not None else None
    step = workflow.Step(
        type=envelope.type,
        sender=_party(sender),
        recipient=_party(recipient),
        header=header,
        consent_given_by=consent.given_by if consent is not None else None,
        at=now,
        receiving_org=receiving_org,
        case_ref=envelope.case_ref,
        message_id=envelope.id,
        data_categories=frozenset(envelope.data_categories),
    )
    try:
        new = workflow.apply(cases.state_of(row) if row is not None else None, step, rules)
    except workflow.RuleBroken as broken:
        window = {"window_seconds": int(broken.window.total_seconds())} if broken.window else {}
        raise WorkflowRule(broken.detail, rule=broken.rule, **window) from broken
    if row is None:
        await cases.insert_now(session, new, now)
    elif not await cases.replace(session, row, new, now):
        raise Conflict(
            f"Case {envelope.case_ref} changed at the same time; send the message again."
        )
    return Admitted(withdraws=withdraws)


async def _withdrawn_consent(session: AsyncSession, envelope: Envelope) -> ConsentRecord:
    """A consent_withdrawal names, as its consent_ref, a consent of this case that its
    sender registered."""
    row = await consent_store.get(session, envelope.consent_ref or "")
    if row is None or row.case_ref != envelope.case_ref or row.registered_by != envelope.sender:
        raise ConsentMissing(
            "A consent_withdrawal names, as consent_ref, a consent of this case that you "
            "registered.",
            rule="withdrawal_of_unknown_consent",
        )
    if row.withdrawn_at is not None:
        raise ConsentMissing(
            f"Consent {row.id} was already withdrawn.", rule="consent_already_withdrawn"
        )
    return row
