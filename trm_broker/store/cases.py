"""Queries on case transfers, their alerts, and refusals kept for the auditors' report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.workflow import CaseTransfer
from trm_broker.store.direct import Query
from trm_broker.store.models import (
    AlertRecord,
    CaseTransferRow,
    Delivery,
    Message,
    Refusal,
    table_of,
)


async def get(session: AsyncSession, case_ref: str) -> CaseTransferRow | None:
    return await session.get(CaseTransferRow, case_ref)


@dataclass(frozen=True)
class StoredCase:
    """What the accept path reads of a case: its state and the version it replaces."""

    case_ref: str
    sending: str
    state: str
    version: int


_CASES = table_of(CaseTransferRow).c
_READ = select(_CASES.case_ref, _CASES.sending, _CASES.state, _CASES.version).where(
    _CASES.case_ref == bindparam("case_ref")
)
_READ_CASE = Query(_READ)
_INSERT = Query(sql_insert(table_of(CaseTransferRow)))
#: The new state, only over the version read (optimistic): a Core statement built once.
_REPLACE = Query(
    update(table_of(CaseTransferRow))
    .where(
        _CASES.case_ref == bindparam("case_ref_"),
        _CASES.version == bindparam("version_"),
    )
    .values(
        {
            name: bindparam(name)
            for name in ("receiving_org", "stage", "state", "version", "updated_at")
        }
    )
)


async def read(session: AsyncSession, case_ref: str) -> StoredCase | None:
    """The case's stored state (one small query, no ORM identity map)."""
    row = await _READ_CASE.first(session, {"case_ref": case_ref})
    if row is None:
        return None
    return StoredCase(row.case_ref, row.sending, row.state, row.version)


async def insert_now(session: AsyncSession, case: CaseTransfer, at: datetime) -> None:
    """:func:`insert`, executed at once (one INSERT, no unit of work)."""
    await _INSERT.run(session, _row(case, at))


def state_of(row: CaseTransferRow | StoredCase) -> CaseTransfer:
    return CaseTransfer.from_json(json.loads(row.state))


def _row(case: CaseTransfer, at: datetime) -> dict[str, Any]:
    return {
        "case_ref": case.case_ref,
        "sending": case.sending,
        "destination": case.destination,
        "receiving_org": case.receiving_org,
        "stage": case.stage,
        "state": json.dumps(case.to_json(), sort_keys=True),
        "version": 1,
        "updated_at": at,
    }


def insert(session: AsyncSession, case: CaseTransfer, at: datetime) -> None:
    session.add(CaseTransferRow(**_row(case, at)))


async def replace(
    session: AsyncSession, row: CaseTransferRow | StoredCase, case: CaseTransfer, at: datetime
) -> bool:
    """Store the new state if nobody changed the case since ``row`` was read."""
    changed = await _REPLACE.run(
        session,
        {
            "case_ref_": row.case_ref,
            "version_": row.version,
            "receiving_org": case.receiving_org,
            "stage": case.stage,
            "state": json.dumps(case.to_json(), sort_keys=True),
            "version": row.version + 1,
            "updated_at": at,
        },
    )
    return changed == 1


def parties(row: CaseTransferRow) -> set[str]:
    return {p for p in (row.sending, row.destination, row.receiving_org) if p}


async def active(session: AsyncSession, stages: Sequence[str]) -> Sequence[CaseTransferRow]:
    query = select(CaseTransferRow).where(CaseTransferRow.stage.in_(stages))
    return (await session.scalars(query)).all()


async def timeline_of(
    session: AsyncSession, case_ref: str
) -> Sequence[tuple[Message, Delivery | None]]:
    """The case's messages in acceptance order, each with its delivery (every message has
    one; ``None`` only guards the outer join)."""
    query = (
        select(Message, Delivery)
        .outerjoin(Delivery, Delivery.message_id == Message.id)
        .where(Message.case_ref == case_ref)
        .order_by(Message.accepted_at, Message.id)
    )
    return [(message, delivery) for message, delivery in (await session.execute(query)).all()]


def _open_of_kind() -> Select[tuple[str]]:
    alerts = table_of(AlertRecord).c
    return (
        select(alerts.id)
        .where(
            alerts.case_ref == bindparam("case_ref"),
            alerts.kind == bindparam("kind", type_=alerts.kind.type),
            alerts.closed_at.is_(None),
        )
        .limit(1)
    )


_OPEN_OF_KIND = Query(_open_of_kind())


async def has_open_alert(session: AsyncSession, case_ref: str, kind: AlertKind) -> bool:
    """Whether the case has an open alert of this kind (one indexed query, built once)."""
    found = await _OPEN_OF_KIND.first(session, {"case_ref": case_ref, "kind": kind})
    return found is not None


async def open_alerts(session: AsyncSession, case_ref: str | None = None) -> Sequence[AlertRecord]:
    query = select(AlertRecord).where(AlertRecord.closed_at.is_(None))
    if case_ref is not None:
        query = query.where(AlertRecord.case_ref == case_ref)
    return (await session.scalars(query.order_by(AlertRecord.raised_at))).all()


async def alerts_for(
    session: AsyncSession, reader: str | None, case_ref: str | None, include_closed: bool
) -> Sequence[AlertRecord]:
    """Alerts ``reader`` is a party to (``None``: all, for auditors)."""
    query = select(AlertRecord)
    if reader is not None:
        query = query.where(
            or_(
                AlertRecord.party1 == reader,
                AlertRecord.party2 == reader,
                AlertRecord.party3 == reader,
            )
        )
    if case_ref is not None:
        query = query.where(AlertRecord.case_ref == case_ref)
    if not include_closed:
        query = query.where(AlertRecord.closed_at.is_(None))
    return (await session.scalars(query.order_by(AlertRecord.raised_at).limit(1000))).all()


def add_refusal(session: AsyncSession, refusal: Refusal) -> None:
    session.add(refusal)
