"""The node's outbox (docs/node.md, "The outbox"): every message a case worker sends is stored,
signed, before the broker is called, and settled by the background sender
(node/outbox_sender.py) with the broker's receipt or its final refusal.

Every query of ``node_outbox`` is here. Per case, messages go in the order they were queued
(``seq``): only the oldest queued message of a case is ever due.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from trm_broker.crypto import jws
from trm_broker.node.broker_client import Receipt
from trm_broker.node.schemas import OutboxOut, SentOut
from trm_broker.node.sending import Composed
from trm_broker.node.store import OutboxMessage, OutboxState, SentMessage

QUEUED, RECEIPTED, REFUSED = OutboxState.QUEUED, OutboxState.RECEIPTED, OutboxState.REFUSED


def queued_row(composed: Composed, now: datetime, *, after_id: str | None = None) -> OutboxMessage:
    """A composed message as the outbox keeps it: due at once (unless ``after_id`` holds it)."""
    envelope = composed.envelope
    return OutboxMessage(
        id=envelope.id,
        type=envelope.type,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
        state=QUEUED,
        envelope=json.dumps(composed.signed),
        after_id=after_id,
        queued_at=now,
        attempts=0,
        next_attempt_at=now,
    )


def _blocked_by_an_earlier() -> Any:
    """An earlier message of the same case is still queued."""
    earlier = aliased(OutboxMessage)
    return (
        select(earlier.seq)
        .where(
            earlier.case_ref == OutboxMessage.case_ref,
            earlier.state == QUEUED,
            earlier.seq < OutboxMessage.seq,
        )
        .exists()
    )


async def due(session: AsyncSession, now: datetime, limit: int) -> Sequence[OutboxMessage]:
    """The messages to submit now: per case, the oldest queued one, if its time has come."""
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.state == QUEUED,
            OutboxMessage.next_attempt_at <= now,
            ~_blocked_by_an_earlier(),
        )
        .order_by(OutboxMessage.seq)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def next_due(session: AsyncSession) -> datetime | None:
    """When the next message (the oldest queued one of a case) is due; None: nothing queued."""
    query = select(func.min(OutboxMessage.next_attempt_at)).where(
        OutboxMessage.state == QUEUED, ~_blocked_by_an_earlier()
    )
    value: datetime | None = (await session.execute(query)).scalar_one_or_none()
    return value


async def get(session: AsyncSession, message_id: str) -> OutboxMessage | None:
    return (
        await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))
    ).first()


async def listed(
    session: AsyncSession,
    senders: Sequence[str],
    *,
    case_ref: str | None,
    state: OutboxState | None,
    after: int | None,
    limit: int,
) -> Sequence[OutboxMessage]:
    """What ``senders`` sent or are sending, in the order it was queued, paged by ``seq``."""
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.sender.in_(senders))
        .order_by(OutboxMessage.seq)
        .limit(limit)
    )
    if case_ref is not None:
        query = query.where(OutboxMessage.case_ref == case_ref)
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    if after is not None:
        query = query.where(OutboxMessage.seq > after)
    return (await session.scalars(query)).all()


async def settle_receipted(
    session: AsyncSession, row: OutboxMessage, receipt: Receipt, envelope: str, now: datetime
) -> bool:
    """Record the broker's receipt for ``row`` (for its version ``envelope``), and the
    message among those sent (``node_sent``), in the caller's transaction. False: another
    sender settled it first (nothing written)."""
    settled = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.seq == row.seq, OutboxMessage.state == QUEUED)
        .values(state=RECEIPTED, settled_at=now, envelope=envelope, last_error=None)
        .execution_options(synchronize_session=False)
    )
    if not getattr(settled, "rowcount", 0):
        return False
    session.add(
        SentMessage(
            id=row.id,
            type=row.type,
            case_ref=row.case_ref,
            sender=row.sender,
            recipient=row.recipient,
            sent_at=row.queued_at,
            envelope_digest=receipt.envelope_digest,
            receipt=json.dumps(receipt.jws),
        )
    )
    return True


async def settle_refused(
    session: AsyncSession, row: OutboxMessage, problem: dict[str, Any], now: datetime
) -> bool:
    """Record the final refusal of ``row`` (its problem, as the node answers it)."""
    settled = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.seq == row.seq, OutboxMessage.state == QUEUED)
        .values(state=REFUSED, settled_at=now, refusal=json.dumps(problem))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(settled, "rowcount", 0))


async def retry_later(
    session: AsyncSession, row: OutboxMessage, error: str, now: datetime, at: datetime
) -> None:
    """An attempt that settled nothing: count it, say why, and when the next one is."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.seq == row.seq, OutboxMessage.state == QUEUED)
        .values(
            attempts=OutboxMessage.attempts + 1,
            last_attempt_at=now,
            last_error=error,
            next_attempt_at=at,
        )
        .execution_options(synchronize_session=False)
    )


async def replace_envelope(
    session: AsyncSession, row: OutboxMessage, envelope: str, now: datetime
) -> None:
    """Keep the version the broker found stale among the earlier ones, and submit
    ``envelope`` (the same message signed again) from now on."""
    earlier = json.loads(row.earlier_envelopes) if row.earlier_envelopes else []
    earlier.append(row.envelope)
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.seq == row.seq, OutboxMessage.state == QUEUED)
        .values(
            envelope=envelope,
            earlier_envelopes=json.dumps(earlier),
            attempts=OutboxMessage.attempts + 1,
            last_attempt_at=now,
            last_error="stale_resigned",
            next_attempt_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def held_by_refused(session: AsyncSession) -> Sequence[tuple[OutboxMessage, str]]:
    """Queued messages whose ``after_id`` message was refused: they cannot go either."""
    before = aliased(OutboxMessage)
    query = (
        select(OutboxMessage, before.id)
        .join(before, and_(before.id == OutboxMessage.after_id, before.state == REFUSED))
        .where(OutboxMessage.state == QUEUED)
    )
    return [(row, first) for row, first in (await session.execute(query)).all()]


def refusal(row: OutboxMessage) -> dict[str, Any] | None:
    if row.refusal is None:
        return None
    problem: dict[str, Any] = json.loads(row.refusal)
    return problem


async def sent(session: AsyncSession, message_id: str) -> SentOut | None:
    """A receipted message's receipt, as the send calls answer it."""
    row = await session.get(SentMessage, message_id)
    if row is None:
        return None
    receipt: dict[str, str] = json.loads(row.receipt)
    accepted_at = _receipt_claim(receipt, "accepted_at")
    return SentOut(
        message_id=row.id,
        envelope_digest=row.envelope_digest,
        accepted_at=accepted_at,
        receipt=receipt,
    )


def _receipt_claim(receipt: dict[str, str], name: str) -> str:
    """A claim of a receipt the node verified when it stored it."""
    return str(jws.parse(receipt, jws.TYP_RECEIPT).claims()[name])


async def view(session: AsyncSession, row: OutboxMessage) -> OutboxOut:
    """``row`` as the case workers' API shows it."""
    return OutboxOut(
        seq=row.seq,
        message_id=row.id,
        type=row.type,
        case_ref=row.case_ref,
        sender=row.sender,
        recipient=row.recipient,
        state=row.state.value,
        queued_at=row.queued_at,
        attempts=row.attempts,
        last_attempt_at=row.last_attempt_at,
        next_attempt_at=row.next_attempt_at if row.state is QUEUED else None,
        last_error=row.last_error,
        waits_for=row.after_id,
        settled_at=row.settled_at,
        receipt=await sent(session, row.id) if row.state is RECEIPTED else None,
        refused=refusal(row),
    )
