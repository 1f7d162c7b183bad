"""`GET /cases/{case_ref}`: a case as one of the node's organisations sees it (docs/node.md,
"The case view"). It joins what the node holds (the messages the organisation sent, with
their statuses, and those it received, decrypted) with what the broker holds (the case's
state and timeline, its consents, its open alerts, and, when the broker states them, its
deadlines and next steps).

The broker is asked first, before any database read, as the organisation (signed with its
key); when it cannot be asked, the node's own part is still shown, with why the broker's
is missing. Everything is scoped to the one organisation: another's messages are never read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.node import sent_api, withdrawals
from trm_broker.node.access import Reader
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.schemas import ReceivedOut
from trm_broker.node.sending import choose_sender, refused
from trm_broker.node.sent_api import Session, State
from trm_broker.node.sent_schemas import (
    CaseViewOut,
    ConsentState,
    SentMessageOut,
    TimelineEntry,
)
from trm_broker.node.store import OutboxMessage, ReceivedMessage, WithdrawnConsent

CaseRef = Annotated[
    str, Path(pattern=CASE_REF_PATTERN, description="The case's pseudonymous reference.")
]

router = APIRouter(tags=["case workers"])


@router.get("/cases/{case_ref}", response_model=CaseViewOut)
async def case_view(
    case_ref: CaseRef,
    state: State,
    session: Session,
    principal: Reader,
    reader: Annotated[
        str | None,
        Query(
            description="The organisation whose view (the administrator, of a node serving "
            "several)."
        ),
    ] = None,
) -> CaseViewOut:
    """The case as your organisation sees it: the timeline of the messages it sent (each
    with its status, as `GET /sent` shows it) and received (decrypted), the case's consents
    and their state, its open alerts, its deadlines and next steps as the broker states them,
    and the broker's own view of the case (metadata only)."""
    keys = principal.keyring(state.keys)
    who = choose_sender(keys, reader)
    at_broker, alerts, problem = await _at_broker(state.broker, keys.current[who].signing, case_ref)
    queued, legacy = await sent_api.of_case(session, case_ref, [who])
    sent = await sent_api.views(session, queued, legacy)
    received = await _received(session, case_ref, who)
    if at_broker is None and problem is not None and not sent and not received:
        raise refused(problem)  # nothing here either: the broker's answer as it is
    retention = state.settings.node_withdrawn_retention
    cites = _consent_of(queued)
    cited = {c for c in cites.values() if c} | {r.consent_ref for r in received if r.consent_ref}
    timeline = [_sent_entry(view, cites.get(view.message_id)) for view in sent]
    timeline += [_received_entry(row, retention) for row in received]
    timeline.sort(key=lambda entry: (entry.at, entry.message_id))
    broker_view = at_broker or {}
    return CaseViewOut(
        case_ref=case_ref,
        reader=who,
        stage=broker_view.get("stage") if isinstance(broker_view.get("stage"), str) else None,
        timeline=timeline,
        consents=_consents(
            broker_view.get("consents"),
            await _withdrawn_here(session, case_ref),
            cited,
            known=at_broker is not None,
        ),
        alerts=alerts,
        deadlines=broker_view.get("deadlines"),
        next_steps=broker_view.get("next_steps"),
        broker=at_broker,
        broker_problem=refused(problem).body() if problem is not None else None,
    )


async def _at_broker(
    broker: BrokerClient, signer: SigningKey, case_ref: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], BrokerError | None]:
    """The broker's case view and the case's open alerts naming the reader, read at once;
    or why they could not be."""
    case, alerts = await asyncio.gather(
        broker.case(signer, case_ref),
        broker.open_alerts(signer, case_ref=case_ref),
        return_exceptions=True,
    )
    for outcome in (case, alerts):
        if isinstance(outcome, BaseException) and not isinstance(outcome, BrokerError):
            raise outcome
    problem = case if isinstance(case, BrokerError) else None
    found = (
        [a for a in alerts if a.get("case_ref") == case_ref and a.get("closed_at") is None]
        if isinstance(alerts, list)
        else []
    )
    return (case if isinstance(case, dict) else None), found, problem


async def _received(
    session: AsyncSession, case_ref: str, recipient: str
) -> Sequence[ReceivedMessage]:
    query = (
        select(ReceivedMessage)
        .where(ReceivedMessage.case_ref == case_ref, ReceivedMessage.recipient == recipient)
        .order_by(ReceivedMessage.seq)
    )
    return (await session.scalars(query)).all()


async def _withdrawn_here(session: AsyncSession, case_ref: str) -> dict[str, datetime]:
    """The case's consents this node learned were withdrawn, and when it learned it."""
    query = select(WithdrawnConsent).where(WithdrawnConsent.case_ref == case_ref)
    return {row.consent_ref: row.learned_at for row in (await session.scalars(query)).all()}


def _consent_of(queued: Sequence[OutboxMessage]) -> dict[str, str | None]:
    """The consent each message sent through the outbox cites (its envelope's claim)."""
    found: dict[str, str | None] = {}
    for row in queued:
        try:
            claims = jws.parse(json.loads(row.envelope), jws.TYP_ENVELOPE).claims()
        except (ValueError, MalformedError):
            continue
        consent = claims.get("consent_ref")
        found[row.id] = consent if isinstance(consent, str) else None
    return found


def _sent_entry(view: SentMessageOut, consent_ref: str | None) -> TimelineEntry:
    at = view.queued_at or view.accepted_at
    if at is None and view.receipt is not None:
        at = datetime.fromisoformat(view.receipt.accepted_at)
    return TimelineEntry(
        direction="sent",
        message_id=view.message_id,
        type=view.type,
        sender=view.sender,
        recipient=view.recipient,
        at=at or datetime.min.replace(tzinfo=UTC),
        status=view.status,
        consent_ref=consent_ref,
        sent=view,
    )


def received_view(row: ReceivedMessage, retention: timedelta) -> ReceivedOut:
    """A received message as the case workers' API shows it (as `GET /messages` does):
    a restricted one without its content."""
    return ReceivedOut(
        seq=row.seq,
        message_id=row.id,
        type=row.type,
        case_ref=row.case_ref,
        sender=row.sender,
        recipient=row.recipient,
        created_at=row.created_at,
        received_at=row.received_at,
        header=json.loads(row.header),
        payload=json.loads(row.payload)
        if row.payload is not None and row.restricted_at is None
        else None,
        restricted=row.restricted_at is not None,
        restricted_at=row.restricted_at,
        delete_after=withdrawals.delete_after(row, retention),
        notice=withdrawals.notice(row, retention),
    )


def _received_entry(row: ReceivedMessage, retention: timedelta) -> TimelineEntry:
    return TimelineEntry(
        direction="received",
        message_id=row.id,
        type=row.type,
        sender=row.sender,
        recipient=row.recipient,
        at=row.created_at,
        status="restricted" if row.restricted_at is not None else "received",
        consent_ref=row.consent_ref,
        received=received_view(row, retention),
    )


def _consents(
    listed: object, withdrawn_here: dict[str, datetime], cited: set[str], *, known: bool
) -> list[ConsentState]:
    """The broker's consents of the case, each with its state now; those the node learned
    were withdrawn; and, when the broker could not be asked, those the messages cite."""
    now = datetime.now(UTC)
    found: dict[str, ConsentState] = {}
    for item in listed if isinstance(listed, list) else []:
        try:
            consent = ConsentState.model_validate({**item, "state": "unknown"})
        except (ValidationError, TypeError):
            continue
        found[consent.id] = consent.model_copy(update={"state": _state_of(consent, now)})
    for consent_ref, learned_at in withdrawn_here.items():
        consent = found.get(consent_ref) or ConsentState(id=consent_ref, state="unknown")
        found[consent_ref] = consent.model_copy(
            update={"state": "withdrawn", "withdrawn_at": consent.withdrawn_at or learned_at}
        )
    for consent_ref in sorted(cited - set(found)):
        if not known:
            found[consent_ref] = ConsentState(id=consent_ref, state="unknown")
    return list(found.values())


def _state_of(consent: ConsentState, now: datetime) -> Any:
    if consent.withdrawn_at is not None:
        return "withdrawn"
    if consent.valid_from is not None and consent.valid_from > now:
        return "not_yet_valid"
    if consent.valid_until is not None and consent.valid_until <= now:
        return "expired"
    return "active"
