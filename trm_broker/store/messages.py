"""Queries on accepted messages and their outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Insert, Table, bindparam, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.envelope import Envelope
from trm_broker.domain.messages import DeliveryStatus
from trm_broker.store.direct import Query
from trm_broker.store.ledger import ENTRY_COLUMNS
from trm_broker.store.models import Delivery, LedgerEntry, Message, Participant, table_of


async def get(session: AsyncSession, message_id: str) -> Message | None:
    return await session.get(Message, message_id)


async def readable_by(
    session: AsyncSession, message_id: str, participant_id: str
) -> Message | None:
    """The message if ``participant_id`` is its sender or recipient (the access rule lives
    in the query, so no caller can forget it)."""
    query = select(Message).where(
        Message.id == message_id,
        or_(Message.sender_id == participant_id, Message.recipient_id == participant_id),
    )
    return (await session.scalars(query)).first()


async def delivery_of(session: AsyncSession, message_id: str) -> Delivery | None:
    query = select(Delivery).where(Delivery.message_id == message_id)
    return (await session.scalars(query)).first()


@dataclass(frozen=True)
class Accepted:
    """What the accept path reads of a stored message: enough to answer a repeat."""

    id: str
    sender_id: str
    envelope_digest: str
    receipt: str


_MESSAGES = table_of(Message).c
_SENDER = table_of(Participant).alias("sender")
_RECIPIENT = table_of(Participant).alias("recipient")
_PARTIES = (
    select(
        _MESSAGES.id,
        _MESSAGES.sender_id,
        _MESSAGES.recipient_id,
        _MESSAGES.case_ref,
        _MESSAGES.envelope_digest,
        _SENDER.c.country,
        _RECIPIENT.c.country,
    )
    .join(_SENDER, _SENDER.c.id == _MESSAGES.sender_id)
    .join(_RECIPIENT, _RECIPIENT.c.id == _MESSAGES.recipient_id)
    .where(_MESSAGES.id == bindparam("id"))
)
_INSERT_ENTRY = insert(table_of(LedgerEntry)).returning(table_of(LedgerEntry).c.seq)
_INSERT_MESSAGE = insert(table_of(Message))
_INSERT_DELIVERY = insert(table_of(Delivery))
_MESSAGE_COLUMNS = (
    "id",
    "type",
    "case_ref",
    "sender_id",
    "recipient_id",
    "sender_kid",
    "created_at",
    "accepted_at",
    "envelope_digest",
    "envelope",
    "receipt",
    "purged_at",
    "consent_ref",
)
_DELIVERY_COLUMNS = (
    "recipient_id",
    "case_ref",
    "status",
    "attempts",
    "queued_at",
    "next_attempt_at",
)


def _one_statement() -> Insert:
    """PostgreSQL: the ledger entry, the message (with the entry's ``seq``) and its delivery
    in one statement (data-modifying CTEs), one round trip instead of three. Each value is
    a bound parameter typed as its column, as the separate INSERTs bind them."""
    entries, messages, deliveries = (table_of(m) for m in (LedgerEntry, Message, Delivery))

    def bound(table: Table, column: str, prefix: str) -> BindParameter[Any]:
        return bindparam(f"{prefix}{column}", type_=table.c[column].type)

    entry = (
        insert(entries)
        .values({c: bound(entries, c, "e_") for c in ENTRY_COLUMNS})
        .returning(entries.c.seq)
        .cte("entry")
    )
    message = (
        insert(messages)
        .from_select(
            [*_MESSAGE_COLUMNS, "ledger_seq"],
            select(*(bound(messages, c, "m_") for c in _MESSAGE_COLUMNS), entry.c.seq),
        )
        .returning(messages.c.id)
        .cte("message")
    )
    return insert(deliveries).from_select(
        ["message_id", *_DELIVERY_COLUMNS],
        select(message.c.id, *(bound(deliveries, c, "d_") for c in _DELIVERY_COLUMNS)),
    )


_INSERT_ALL = Query(_one_statement())
_READ_PARTIES = Query(_PARTIES)


@dataclass(frozen=True)
class Parties:
    """What recording a delivery's outcome reads of its message: who (with their
    countries, for the ledger entry), which case, which envelope; not the envelope itself."""

    id: str
    sender_id: str
    recipient_id: str
    case_ref: str
    envelope_digest: str
    sender_country: str
    recipient_country: str

    def countries(self) -> dict[str, str]:
        """Participant → country, as :func:`trm_broker.store.participants.countries_of`."""
        return {self.sender_id: self.sender_country, self.recipient_id: self.recipient_country}


async def parties(session: AsyncSession, message_id: str) -> Parties | None:
    """The message's parties and their countries, case and envelope digest (one small
    query, no ORM)."""
    row = await _READ_PARTIES.first(session, {"id": message_id})
    return None if row is None else Parties(*row)


async def add_accepted(
    session: AsyncSession,
    envelope: Envelope,
    *,
    signed: bytes,
    digest: str,
    sender_kid: str,
    receipt: str,
    entry: dict[str, object],
    now: datetime,
) -> Accepted:
    """Write an accepted envelope's ledger entry (``entry``: its row, from
    :func:`trm_broker.store.ledger.entry_row`), its message row and its outbox row (due at
    once) in the caller's transaction (docs/design.md §8). On PostgreSQL that is one
    statement; on SQLite three INSERTs, the message's complete (its entry's ``seq`` is known
    before). The rows take the envelope's own members; ``signed`` is the envelope as stored
    (its canonical JSON) and ``digest`` the digest it is known by.
    """
    message = {
        "id": envelope.id,
        "type": envelope.type,
        "case_ref": envelope.case_ref,
        "sender_id": envelope.sender,
        "recipient_id": envelope.recipient,
        "sender_kid": sender_kid,
        "created_at": envelope.created_at,
        "accepted_at": now,
        "envelope_digest": digest,
        "envelope": signed,
        "receipt": receipt,
        "purged_at": None,
        "consent_ref": envelope.consent_ref,
    }
    delivery = {
        "recipient_id": envelope.recipient,
        "case_ref": envelope.case_ref,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "queued_at": now,
        "next_attempt_at": now,
    }
    if session.get_bind().dialect.name == "postgresql":
        values = {f"e_{k}": v for k, v in entry.items()}
        values.update({f"m_{k}": v for k, v in message.items()})
        values.update({f"d_{k}": v for k, v in delivery.items()})
        await _INSERT_ALL.run(session, values)
    else:
        seq = (await session.execute(_INSERT_ENTRY, entry)).scalar_one()
        await session.execute(_INSERT_MESSAGE, {**message, "ledger_seq": seq})
        await session.execute(_INSERT_DELIVERY, {"message_id": envelope.id, **delivery})
    return Accepted(envelope.id, envelope.sender, digest, receipt)


async def purgeable(session: AsyncSession, cutoff: datetime, limit: int) -> Sequence[Message]:
    """Messages answered (acknowledged or rejected) at or before ``cutoff`` whose envelope is
    still stored."""
    query = (
        select(Message)
        .join(Delivery, Delivery.message_id == Message.id)
        .where(
            # A signed rejection is as final as an acknowledgement: the payload goes too.
            Delivery.status.in_((DeliveryStatus.ACKNOWLEDGED, DeliveryStatus.REJECTED)),
            Delivery.acknowledged_at <= cutoff,
            Message.envelope.is_not(None),
        )
        .order_by(Delivery.acknowledged_at)
        .limit(limit)
    )
    return (await session.scalars(query)).all()
