"""Outbox queries: claim due deliveries under a lease, record each attempt's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.store.models import Delivery, Message, Participant

PENDING = "pending"
ACKNOWLEDGED = "acknowledged"
#: The recipient's node refused the payload in a signed answer: final, like an acknowledgement.
REJECTED = "rejected"


@dataclass(frozen=True)
class ClaimedDelivery:
    """What the dispatcher needs to push one message, read inside the claiming transaction."""

    delivery_id: int
    message_id: str
    recipient_id: str
    inbox_url: str | None
    envelope: bytes | None
    envelope_digest: str
    receipt: str
    attempts: int


async def claim_due(
    session: AsyncSession, now: datetime, lease_until: datetime, limit: int
) -> Sequence[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries by moving their next attempt to ``lease_until``.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets dispatchers claim disjoint rows; SQLite
    has one writer at a time and ignores the clause. A dispatcher that dies mid-attempt
    loses nothing: when the lease runs out the row is due again.
    """
    query = (
        select(Delivery.id)
        .where(Delivery.status == PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.scalars(query)).all())
    if not ids:
        return []
    # The update re-checks that each row is still due, and only rows it changed are ours:
    # on SQLite, where FOR UPDATE does not exist, two processes may select the same ids.
    leased = await session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_(ids),
            Delivery.status == PENDING,
            Delivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease_until, last_attempt_at=now)
        .returning(Delivery.id)
    )
    ids = list(leased.scalars().all())
    if not ids:
        return []
    rows = await session.execute(
        select(
            Delivery.id,
            Delivery.message_id,
            Delivery.recipient_id,
            Participant.inbox_url,
            Message.envelope,
            Message.envelope_digest,
            Message.receipt,
            Delivery.attempts,
        )
        .join(Message, Message.id == Delivery.message_id)
        .join(Participant, Participant.id == Delivery.recipient_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    return [ClaimedDelivery(*row) for row in rows.all()]


async def record_acknowledged(
    session: AsyncSession, delivery_id: int, at: datetime, ack: str
) -> bool:
    """Mark a pending delivery acknowledged; ``False`` if it no longer was pending."""
    return await _record_answer(session, delivery_id, at, ack, ACKNOWLEDGED)


async def record_rejected(session: AsyncSession, delivery_id: int, at: datetime, ack: str) -> bool:
    """Mark a pending delivery rejected by its recipient's signed answer (never retried);
    ``False`` if it no longer was pending."""
    return await _record_answer(session, delivery_id, at, ack, REJECTED)


async def _record_answer(
    session: AsyncSession, delivery_id: int, at: datetime, ack: str, status: str
) -> bool:
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == PENDING)
        .values(
            status=status,
            attempts=Delivery.attempts + 1,
            acknowledged_at=at,
            ack=ack,
            last_error=None,
        )
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def record_failed(
    session: AsyncSession, delivery_id: int, error: str, retry_at: datetime
) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == PENDING)
        .values(attempts=Delivery.attempts + 1, last_error=error[:200], next_attempt_at=retry_at)
    )
