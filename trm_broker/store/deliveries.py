"""Outbox queries: claim due deliveries under a lease, in per-case order; record each
attempt's outcome; dead letters and their re-queueing; the pull inbox's reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, Update, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from trm_broker.domain.messages import DeliveryStatus
from trm_broker.store.direct import Query
from trm_broker.store.models import Delivery, Message, Participant, table_of

# The statuses, by their short names here (``outbox.PENDING``): see ``DeliveryStatus``.
PENDING = DeliveryStatus.PENDING
ACKNOWLEDGED = DeliveryStatus.ACKNOWLEDGED
REJECTED = DeliveryStatus.REJECTED
DEAD_LETTERED = DeliveryStatus.DEAD_LETTERED
DROPPED = DeliveryStatus.DROPPED
#: The states in which a delivery still holds back later ones of its case to its recipient.
_HOLDS_BACK = (PENDING, DEAD_LETTERED)


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


def _waits_for_earlier() -> object:
    """True for a delivery behind an earlier one of its case to its recipient that has not
    been answered: per case, a recipient gets messages in acceptance order (§8)."""
    earlier = aliased(Delivery)
    return exists().where(
        earlier.recipient_id == Delivery.recipient_id,
        earlier.case_ref == Delivery.case_ref,
        earlier.id < Delivery.id,
        earlier.status.in_(_HOLDS_BACK),
    )


#: The due push deliveries with what a push needs, built once: the dispatcher runs it
#: whenever woken, and a query built anew (its alias) would be compiled anew each time.
_DUE = (
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
    .where(
        Delivery.status == PENDING,
        Delivery.next_attempt_at <= bindparam("now", type_=Delivery.next_attempt_at.type),
        Participant.inbox_url.is_not(None),
        ~_waits_for_earlier(),  # type: ignore[operator]
    )
    .order_by(Delivery.id)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True, of=Delivery)
)
_CLAIM_DUE = Query(_DUE)
#: The lease: only rows still due are taken (``RETURNING`` says which).
_LEASE = (
    update(table_of(Delivery))
    .where(
        table_of(Delivery).c.id.in_(bindparam("ids", expanding=True)),
        table_of(Delivery).c.status == PENDING,
        table_of(Delivery).c.next_attempt_at <= bindparam("now_"),
    )
    # A push is counted when it starts, so one cut short by a crash counts too.
    .values(
        next_attempt_at=bindparam("lease_until"),
        last_attempt_at=bindparam("now_"),
        attempts=table_of(Delivery).c.attempts + 1,
    )
    .returning(table_of(Delivery).c.id)
)


async def claim_due(
    session: AsyncSession, now: datetime, lease_until: datetime, limit: int
) -> Sequence[ClaimedDelivery]:
    """Lease up to ``limit`` due push deliveries by moving their next attempt to
    ``lease_until``. Recipients without an inbox URL fetch their messages (pull mode); a
    delivery behind an unanswered earlier one of its case to its recipient waits.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets dispatchers claim disjoint rows; SQLite
    has one writer at a time and ignores the clause. A dispatcher that dies mid-attempt
    loses nothing: when the lease runs out the row is due again.
    """
    due = await _CLAIM_DUE.rows(session, {"now": now, "limit": limit})
    if not due:
        return []
    # The update re-checks that each row is still due, and only rows it changed are ours:
    # on SQLite, where FOR UPDATE does not exist, two processes may select the same ids.
    leased = await session.execute(
        _LEASE, {"ids": [row.id for row in due], "now_": now, "lease_until": lease_until}
    )
    ours = set(leased.scalars().all())
    return [
        ClaimedDelivery(
            row.id,
            row.message_id,
            row.recipient_id,
            row.inbox_url,
            row.envelope,
            row.envelope_digest,
            row.receipt,
            attempts=row.attempts + 1,
        )
        for row in due
        if row.id in ours
    ]


async def release(
    session: AsyncSession, delivery_ids: Sequence[int], lease_until: datetime, now: datetime
) -> int:
    """Hand back leased deliveries never attempted (a dispatcher stopping): due at once."""
    if not delivery_ids:
        return 0
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_(delivery_ids),
            Delivery.status == PENDING,
            Delivery.next_attempt_at == lease_until,
        )
        .values(next_attempt_at=now, attempts=Delivery.attempts - 1)  # never pushed
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def release_all(session: AsyncSession, now: datetime) -> int:
    """Make every pending delivery due now: for the only dispatcher of a SQLite database
    at its start, so leases of a process that died do not delay anything."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.status == PENDING, Delivery.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def record_acknowledged(
    session: AsyncSession, delivery_id: int, at: datetime, ack: str, *, pulled: bool = False
) -> bool:
    """Mark a delivery acknowledged; ``False`` if it was already answered or dropped.
    ``pulled``: the answer came through the pull inbox (counted as an attempt here; a
    push was counted when claimed)."""
    return await _record_answer(session, delivery_id, at, ack, ACKNOWLEDGED, pulled)


async def record_rejected(
    session: AsyncSession, delivery_id: int, at: datetime, ack: str, *, pulled: bool = False
) -> bool:
    """Mark a delivery rejected by its recipient's signed answer (never retried); ``False``
    if it was already answered or dropped."""
    return await _record_answer(session, delivery_id, at, ack, REJECTED, pulled)


def _answer_statement() -> Update:
    """Record an answer, if the delivery still waits for one: built once, so its compiled
    form is cached (the status test is two equalities, not an IN list expanded anew at
    every execution), and a Core statement, without the ORM's session synchronisation."""
    deliveries = table_of(Delivery).c
    return (
        update(table_of(Delivery))
        .where(
            deliveries.id == bindparam("delivery_id"),
            or_(*(deliveries.status == status for status in _HOLDS_BACK)),
        )
        .values(
            status=bindparam("answer_status", type_=deliveries.status.type),
            attempts=deliveries.attempts + bindparam("counted", type_=Integer),
            acknowledged_at=bindparam("answered_at", type_=deliveries.acknowledged_at.type),
            ack=bindparam("answer", type_=deliveries.ack.type),
            last_error=None,
        )
    )


_ANSWER = Query(_answer_statement())


async def _record_answer(
    session: AsyncSession, delivery_id: int, at: datetime, ack: str, status: str, pulled: bool
) -> bool:
    # A dead letter may still be answered: a pull-mode recipient that fetched it late.
    changed = await _ANSWER.run(
        session,
        {
            "delivery_id": delivery_id,
            "answer_status": status,
            "counted": 1 if pulled else 0,
            "answered_at": at,
            "answer": ack,
        },
    )
    return changed == 1


async def record_failed(
    session: AsyncSession, delivery_id: int, error: str, retry_at: datetime
) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == PENDING)
        .values(last_error=error[:200], next_attempt_at=retry_at)
    )


# --- dead letters -----------------------------------------------------------------------


async def expired(
    session: AsyncSession, now: datetime, queued_before: datetime, limit: int
) -> Sequence[Delivery]:
    """Pending deliveries queued before ``queued_before`` and not leased: to dead-letter."""
    query = (
        select(Delivery)
        .where(
            Delivery.status == PENDING,
            Delivery.queued_at < queued_before,
            Delivery.next_attempt_at <= now,
        )
        .order_by(Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def dead_letter(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Give up on a pending delivery; ``False`` if it was answered meanwhile."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == PENDING)
        .values(status=DEAD_LETTERED, dead_lettered_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def dead_letters(
    session: AsyncSession, limit: int, after: int | None = None, recipient: str | None = None
) -> Sequence[tuple[Delivery, Message]]:
    """Dead-lettered deliveries in acceptance order, with their messages (metadata only)."""
    query = (
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.status == DEAD_LETTERED)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Delivery.id > after)
    if recipient is not None:
        query = query.where(Delivery.recipient_id == recipient)
    return [(d, m) for d, m in (await session.execute(query)).all()]


async def requeue(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Put a dead letter back in the queue, with a new maximum age from ``now``."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DEAD_LETTERED)
        .values(status=PENDING, queued_at=now, next_attempt_at=now, dead_lettered_at=None)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def dead_letters_in_case(session: AsyncSession, case_ref: str) -> int:
    query = select(Delivery.id).where(
        Delivery.case_ref == case_ref, Delivery.status == DEAD_LETTERED
    )
    return len((await session.scalars(query)).all())


# --- the pull inbox ---------------------------------------------------------------------


@dataclass(frozen=True)
class InboxItem:
    cursor: int
    message_id: str
    envelope: bytes
    receipt: str


async def fetch(
    session: AsyncSession, recipient: str, after: int | None, limit: int, now: datetime
) -> Sequence[InboxItem]:
    """The recipient's unanswered deliveries after ``after``, in acceptance order; each is
    marked fetched (``delivered`` in its status) the first time."""
    query = (
        select(Delivery.id, Delivery.message_id, Message.envelope, Message.receipt)
        .join(Message, Message.id == Delivery.message_id)
        .where(
            Delivery.recipient_id == recipient,
            Delivery.status == PENDING,
            Message.envelope.is_not(None),
        )
        .order_by(Delivery.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Delivery.id > after)
    rows = (await session.execute(query)).all()
    items = [InboxItem(i, m, bytes(e or b""), r) for i, m, e, r in rows]
    if items:
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_([i.cursor for i in items]), Delivery.fetched_at.is_(None))
            .values(fetched_at=now)
        )
    return items
