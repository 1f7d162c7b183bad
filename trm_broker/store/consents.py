"""Queries on consent records (docs/design.md §7)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.consent import Consent
from trm_broker.domain.messages import DataCategory, DeliveryStatus, MessageType
from trm_broker.store.direct import Query
from trm_broker.store.models import ConsentRecord, Delivery, Message, table_of


def to_domain(row: ConsentRecord | Row[Any]) -> Consent:
    return Consent(
        id=row.id,
        case_ref=row.case_ref,
        registered_by=row.registered_by,
        given_by=row.given_by,
        purposes=frozenset(MessageType(p) for p in json.loads(row.purposes)),
        recipients=frozenset(json.loads(row.recipients)),
        recipient_countries=frozenset(json.loads(row.recipient_countries)),
        data_categories=frozenset(DataCategory(c) for c in json.loads(row.data_categories)),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        withdrawn_at=row.withdrawn_at,
    )


async def get(session: AsyncSession, consent_id: str) -> ConsentRecord | None:
    return await session.get(ConsentRecord, consent_id)


_READ = Query(
    select(*table_of(ConsentRecord).c).where(table_of(ConsentRecord).c.id == bindparam("id"))
)


_INSERT = Query(insert(table_of(ConsentRecord)))


async def insert_now(session: AsyncSession, row: ConsentRecord) -> None:
    """Insert a new consent at once (one INSERT, no unit of work); ``row`` stays unsaved."""
    await _INSERT.run(
        session, {column.key: getattr(row, column.key) for column in table_of(ConsentRecord).c}
    )


async def read(session: AsyncSession, consent_id: str) -> Row[Any] | None:
    """The consent's row as read (one small query, no ORM identity map): for checks only."""
    row: Row[Any] | None = await _READ.first(session, {"id": consent_id})
    return row


async def of_case(session: AsyncSession, case_ref: str) -> Sequence[ConsentRecord]:
    query = select(ConsentRecord).where(ConsentRecord.case_ref == case_ref)
    return (await session.scalars(query.order_by(ConsentRecord.registered_at))).all()


async def messages_under(session: AsyncSession, consent_id: str) -> Sequence[Message]:
    query = select(Message).where(Message.consent_ref == consent_id).order_by(Message.accepted_at)
    return (await session.scalars(query)).all()


async def drop_undelivered(session: AsyncSession, message_ids: Sequence[str], at: datetime) -> int:
    """Stop every pending delivery of these messages for good (docs/design.md §7: withdrawal)."""
    if not message_ids:
        return 0
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.message_id.in_(message_ids),
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.DEAD_LETTERED)),
        )
        .values(status=DeliveryStatus.DROPPED, last_error="consent_withdrawn", last_attempt_at=at)
    )
    return int(getattr(result, "rowcount", 0) or 0)
