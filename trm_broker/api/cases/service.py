"""Reading a case transfer and its alerts, for its parties."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import Caller
from trm_broker.api.cases.schemas import AlertOut, CaseOut, ConsentSummary, TimelineItem
from trm_broker.domain.participants import ParticipantKind
from trm_broker.store import cases
from trm_broker.store import consents as consent_store
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


async def case_view(session: AsyncSession, case_ref: str, caller: Caller) -> CaseOut:
    """The case's state and timeline, for its parties (404 to anyone else)."""
    row = await cases.get(session, case_ref)
    if row is None or caller.participant_id not in cases.parties(row):
        raise NotFound("You are not party to a case with this reference.")
    messages = await cases.messages_of(session, case_ref)
    deliveries = await cases.delivery_statuses(session, case_ref)
    consents = await consent_store.of_case(session, case_ref)
    alerts = await cases.alerts_for(session, None, case_ref, include_closed=True)
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
                delivery=deliveries.get(m.id),
            )
            for m in messages
        ],
        consents=[
            ConsentSummary(
                id=c.id,
                given_by=c.given_by,
                valid_from=c.valid_from,
                valid_until=c.valid_until,
                withdrawn_at=c.withdrawn_at,
            )
            for c in consents
        ],
        alerts=[alert_out(a) for a in alerts],
    )


async def alerts(
    session: AsyncSession, caller: Caller, case_ref: str | None, include_closed: bool
) -> list[AlertOut]:
    """Alerts the caller is a party to; auditors see all."""
    reader = None if caller.kind is ParticipantKind.AUDITOR else caller.participant_id
    rows = await cases.alerts_for(session, reader, case_ref, include_closed)
    return [alert_out(a) for a in rows]
