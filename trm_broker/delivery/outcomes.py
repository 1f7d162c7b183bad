"""What ends or restarts a delivery, each with its ledger entry in the same transaction
(docs/design.md §9): the recipient's signed answer (by push or through the pull inbox), a dead
letter after the maximum age (with an alert to both parties), an operator's re-queue.

The answer is also what makes a message's facts count (docs/consent-and-workflow.md): the
case's workflow state learns it in the same transaction (``workflow.acknowledged`` or
``workflow.rejected``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.domain import workflow
from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.domain.signed_objects import HEADER_PAYLOAD_MISMATCH, AckClaims
from trm_broker.store import alerts, cases, ledger, messages
from trm_broker.store import deliveries as outbox
from trm_broker.store import participants as registry
from trm_broker.store.models import Delivery
from trm_broker.web.problems import Conflict

#: The alert a dead letter raises for its sender and recipient; closed when none is left in
#: the case (re-queued and answered, or answered late through the pull inbox).
DEAD_LETTER_ALERT = AlertKind.DELIVERY_DEAD_LETTERED
#: How often an answer re-reads a case changed at the same time (optimistic version) before
#: it gives up; each conflict means another transaction on the case committed meanwhile.
CASE_RETRIES = 8


async def record_answer(
    session: AsyncSession,
    delivery_id: int,
    message_id: str,
    ack: dict[str, Any],
    claims: AckClaims,
    attempts: int,
    now: datetime,
    *,
    pulled: bool = False,
) -> bool:
    """Record a verified signed answer (acknowledgement or rejection, ``claims`` its
    verified claims), its ledger entry, and what it changes in the case's state; ``False``
    if the delivery was already answered (the first answer stands).

    A rejection because the signed header contradicts the sealed payload
    (``header-payload-mismatch``) is a finding: an alert for the sender and the recipient,
    which the auditors see too."""
    rejected = claims.status == "rejected"
    stored = json.dumps(ack)
    if rejected:
        recorded = await outbox.record_rejected(session, delivery_id, now, stored, pulled=pulled)
    else:
        recorded = await outbox.record_acknowledged(
            session, delivery_id, now, stored, pulled=pulled
        )
    if not recorded:
        return False
    message = await _message(session, message_id)
    event = EventType.MESSAGE_REJECTED if rejected else EventType.MESSAGE_ACKNOWLEDGED
    # A rejection's reasons stay out of the ledger: its ``ack_digest`` commits to them. Its
    # code (a fixed vocabulary) goes in, so auditors can search for the findings.
    code = {"code": claims.code} if rejected and claims.code is not None else {}
    await _record(
        session, event, message, now, ack_digest=jws.digest(ack), attempts=attempts, **code
    )
    await _count_in_case(session, message, rejected, now)
    if rejected and claims.code == HEADER_PAYLOAD_MISMATCH:
        alerts.raise_alert(
            session,
            AlertKind.HEADER_PAYLOAD_MISMATCH,
            message.case_ref,
            (message.sender_id, message.recipient_id),
            now,
            countries=message.countries(),
        )
    await close_alert_if_resolved(session, message.case_ref, now)
    return True


async def _count_in_case(
    session: AsyncSession, message: messages.Parties, rejected: bool, now: datetime
) -> None:
    """The case's state after the answer: an acknowledged message's facts now count, a
    rejected one's never will. The case row is versioned: on a concurrent change (a message
    accepted in the case meanwhile), read it again and apply the answer to the new state."""
    for _ in range(CASE_RETRIES):
        row = await cases.read(session, message.case_ref)
        if row is None:  # pragma: no cover - every accepted message has its case
            return
        state = cases.state_of(row)
        answered = workflow.rejected if rejected else workflow.acknowledged
        new = answered(state, message.id)
        if new is state or await cases.replace(session, row, new, now):
            return
    # Rolled back: not recorded. A push is tried again; a pulling node sends its answer again.
    raise Conflict(f"Case {message.case_ref} changed at the same time; send the answer again.")


async def dead_letter(session: AsyncSession, delivery: Delivery, now: datetime) -> bool:
    """Stop retrying: record the dead letter, and alert its parties (once per case)."""
    if not await outbox.dead_letter(session, delivery.id, now):
        return False
    message = await _message(session, delivery.message_id)
    await _record(
        session,
        EventType.MESSAGE_DEAD_LETTERED,
        message,
        now,
        attempts=delivery.attempts,
        last_error=delivery.last_error or "waiting_for_earlier_message",
    )
    if not await cases.has_open_alert(session, message.case_ref, DEAD_LETTER_ALERT):
        alerts.raise_alert(
            session,
            DEAD_LETTER_ALERT,
            message.case_ref,
            (message.sender_id, message.recipient_id),
            now,
            countries=message.countries(),
        )
    return True


async def requeue(
    session: AsyncSession, delivery: Delivery, operator_id: str, now: datetime
) -> bool:
    """Put a dead letter back in the queue; ``False`` if it is not (or no longer) one."""
    if not await outbox.requeue(session, delivery.id, now):
        return False
    message = await _message(session, delivery.message_id)
    await _record(session, EventType.MESSAGE_REQUEUED, message, now, requeued_by=operator_id)
    return True


async def close_alert_if_resolved(session: AsyncSession, case_ref: str, now: datetime) -> None:
    """Close the case's dead-letter alert once no dead letter is left in it. Whether one is
    open is asked first: most answers end cases that have none (one small query)."""
    if not await cases.has_open_alert(session, case_ref, DEAD_LETTER_ALERT):
        return
    alerts_open = await cases.open_alerts(session, case_ref)
    dead_letter_alerts = [a for a in alerts_open if a.kind == DEAD_LETTER_ALERT]
    if not dead_letter_alerts or await outbox.dead_letters_in_case(session, case_ref):
        return
    for alert in dead_letter_alerts:
        parties = {p for p in (alert.party1, alert.party2) if p is not None}
        countries = await registry.countries_of(session, parties)
        alerts.close_alert(session, alert, now, countries=countries)


async def _message(session: AsyncSession, message_id: str) -> messages.Parties:
    message = await messages.parties(session, message_id)
    if message is None:  # deliveries reference their message (foreign key)
        raise LookupError("a delivery without its message")
    return message


async def _record(
    session: AsyncSession,
    event: EventType,
    message: messages.Parties,
    now: datetime,
    **facts: Any,
) -> None:
    parties = (message.sender_id, message.recipient_id)
    countries = message.countries()
    detail = {"message_id": message.id, "envelope_digest": message.envelope_digest, **facts}
    ledger.append(
        session,
        LedgerEvent(
            event,
            now,
            parties=parties,
            countries=tuple(countries[p] for p in parties),
            case_ref=message.case_ref,
            facts=detail,
        ),
    )
