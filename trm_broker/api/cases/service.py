"""Reading a case transfer and its alerts, for its parties."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import Caller
from trm_broker.api.cases.schemas import (
    AlertOut,
    CaseOut,
    ConsentSummary,
    DeadlineOut,
    NextStepOut,
    PartyNextSteps,
    TimelineItem,
)
from trm_broker.domain import next_steps
from trm_broker.domain.case_state import CaseTransfer, Party, Rules
from trm_broker.domain.consent import Consent
from trm_broker.domain.messages import DeliveryStatus
from trm_broker.domain.participants import ParticipantKind
from trm_broker.store import cases
from trm_broker.store import consents as consent_store
from trm_broker.store import participants as registry
from trm_broker.store.models import AlertRecord
from trm_broker.web.problems import NotFound


def alert_out(alert: AlertRecord) -> AlertOut:
    parties = [p for p in (alert.party1, alert.party2, alert.party3) if p]
    return AlertOut(
        id=alert.id,
        case_ref=alert.case_ref,
        kind=alert.kind,
        parties=parties,
        raised_at=alert.raised_at,
        closed_at=alert.closed_at,
    )


async def case_view(
    session: AsyncSession, case_ref: str, caller: Caller, now: datetime, rules: Rules
) -> CaseOut:
    """The case's state and timeline, what each party may send next and what the case
    waits for at ``now``, for its parties (404 to anyone else)."""
    row = await cases.get(session, case_ref)
    if row is None or caller.participant_id not in cases.parties(row):
        raise NotFound("You are not party to a case with this reference.")
    timeline = await cases.timeline_of(session, case_ref)
    consents = await consent_store.of_case(session, case_ref)
    alerts = await cases.alerts_for(session, None, case_ref, include_closed=True)
    state = cases.state_of(row)
    scopes = [consent_store.to_domain(c) for c in consents]
    return CaseOut(
        case_ref=row.case_ref,
        stage=row.stage,
        state=json.loads(row.state),
        timeline=[
            TimelineItem(
                message_id=m.id,
                type=m.type,
                sender=m.sender_id,
                recipient=m.recipient_id,
                accepted_at=m.accepted_at,
                consent_ref=m.consent_ref,
                payload_purged_at=m.purged_at,
                delivery_status=d.status if d is not None else DeliveryStatus.PENDING,
                answered_at=d.acknowledged_at if d is not None else None,
            )
            for m, d in timeline
        ],
        consents=[
            ConsentSummary(
                id=c.id,
                registered_by=c.registered_by,
                given_by=c.given_by,
                purposes=sorted(c.purposes),
                recipients=sorted(c.recipients),
                recipient_countries=sorted(c.recipient_countries),
                data_categories=sorted(c.data_categories),
                valid_from=c.valid_from,
                valid_until=c.valid_until,
                withdrawn_at=c.withdrawn_at,
            )
            for c in scopes
        ],
        alerts=[alert_out(a) for a in alerts],
        next_steps=await _next_steps(session, state, scopes, now, rules),
        deadlines=[
            DeadlineOut(name=d.name, due_at=d.due_at, overdue=d.overdue, alert=d.alert)
            for d in next_steps.deadlines(state, now, rules)
        ],
    )


async def _next_steps(
    session: AsyncSession,
    state: CaseTransfer,
    consents: list[Consent],
    now: datetime,
    rules: Rules,
) -> list[PartyNextSteps]:
    """What each party may send next (domain.next_steps), with the parties' registry entries."""
    members = next_steps.roles(state)
    parties: dict[str, Party] = {}
    for participant in set(members.values()):
        found = await registry.get(session, participant)
        if found is not None:
            parties[participant] = Party(found.id, found.kind, found.country)
    return [
        PartyNextSteps(
            participant=participant,
            role=role,
            steps=[
                NextStepOut(
                    type=step.type,
                    recipient=step.recipient,
                    allowed=step.allowed,
                    consent_needed=step.consent_needed,
                    consents=list(step.consents),
                    rule=step.rule,
                    detail=step.detail,
                    window_seconds=step.window_seconds,
                )
                for step in next_steps.allowed_next(state, role, parties, consents, now, rules)
            ],
        )
        for role, participant in members.items()
    ]


async def alerts(
    session: AsyncSession, caller: Caller, case_ref: str | None, include_closed: bool
) -> list[AlertOut]:
    """Alerts the caller is a party to; auditors see all."""
    reader = None if caller.kind is ParticipantKind.AUDITOR else caller.participant_id
    rows = await cases.alerts_for(session, reader, case_ref, include_closed)
    return [alert_out(a) for a in rows]
