"""`GET /sent` and `GET /sent/{message_id}`: every message the caller's organisation sent
through this node, and what became of it (docs/node.md, "Sent messages and their fate").

A message is first in the node's outbox (``queued``, then ``refused`` by the broker or
receipted); once receipted, its status is the broker's, as the status tracker
(node/tracker.py) last read it, with each change and when. Reads are scoped to the caller's
organisation in the query itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.crypto import jws
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.node import outbox, sent_status
from trm_broker.node.access import Reader
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import SentOut
from trm_broker.node.sent_schemas import (
    SentMessageList,
    SentMessageOut,
    SentStatusName,
    StatusChangeOut,
)
from trm_broker.node.store import (
    OutboxMessage,
    OutboxState,
    SentMessage,
    SentState,
    SentStatus,
    SentStatusChange,
)
from trm_broker.settings import Settings
from trm_broker.web.problems import NotFound
from trm_broker.web.query import MAX_CURSOR


class NodeParts(Protocol):
    """What these routes use of the node's state (node/app.py ``NodeState``)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    keys: Keyring
    broker: BrokerClient


def _parts(request: Request) -> NodeParts:
    state: NodeParts = request.app.state.node
    return state


async def node_state(request: Request) -> NodeParts:
    """As a dependency: async, so FastAPI does not hand it to a worker thread."""
    return _parts(request)


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _parts(request).sessions() as session:
        yield session


State = Annotated[NodeParts, Depends(node_state)]
Session = Annotated[AsyncSession, Depends(db_session)]
MessageId = Annotated[str, Path(pattern=UUID7_PATTERN, description="The message's id.")]

router = APIRouter(tags=["case workers"])


@router.get("/sent", response_model=SentMessageList)
async def sent_list(
    state: State,
    session: Session,
    principal: Reader,
    case_ref: Annotated[
        str | None, Query(pattern=CASE_REF_PATTERN, description="Only this case's.")
    ] = None,
    status: Annotated[SentStatusName | None, Query(description="Only those in it.")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_CURSOR, description="The last seq already read.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SentMessageList:
    """Every message your organisation sent through this node, across cases (or one case's),
    in the order they were queued, each with its status as the broker knows it, its receipt,
    and when each status changed. The node keeps the statuses current itself."""
    rows = await listed(
        session,
        principal.participants(state.keys),
        case_ref=case_ref,
        status=status,
        after=after,
        limit=limit,
    )
    return SentMessageList(messages=await views(session, rows, []))


@router.get("/sent/{message_id}", response_model=SentMessageOut)
async def sent_message(
    message_id: MessageId, state: State, session: Session, principal: Reader
) -> SentMessageOut:
    """One message your organisation sent: its status, receipt and changes; the recipient's
    reasons if it rejected it; or, while queued or once refused by the broker, that, with the
    rule and what to fix."""
    senders = principal.participants(state.keys)
    row = await outbox.get(session, message_id)
    if row is not None and row.sender in senders:
        return (await views(session, [row], []))[0]
    if row is None:  # sent before the node had an outbox
        legacy = await session.get(SentMessage, message_id)
        if legacy is not None and legacy.sender in senders:
            return (await views(session, [], [legacy]))[0]
    raise NotFound(
        "No message of that id was sent through this node by your organisation: "
        "`GET /sent` lists those it sent."
    )


# --- queries -------------------------------------------------------------------------------


async def listed(
    session: AsyncSession,
    senders: Collection[str],
    *,
    case_ref: str | None,
    status: SentStatusName | None,
    after: int | None,
    limit: int,
) -> Sequence[OutboxMessage]:
    """What ``senders`` sent through the outbox, in ``seq`` order, by the status shown."""
    query = (
        select(OutboxMessage)
        .outerjoin(SentStatus, SentStatus.message_id == OutboxMessage.id)
        .where(OutboxMessage.sender.in_(senders))
        .order_by(OutboxMessage.seq)
        .limit(limit)
    )
    if case_ref is not None:
        query = query.where(OutboxMessage.case_ref == case_ref)
    if after is not None:
        query = query.where(OutboxMessage.seq > after)
    if status in ("queued", "refused"):
        query = query.where(OutboxMessage.state == OutboxState(status))
    elif status is not None:
        shown = SentStatus.status == SentState(status)
        if status == "accepted":  # receipted, not read at the broker yet
            shown = or_(shown, SentStatus.message_id.is_(None))
        query = query.where(and_(OutboxMessage.state == OutboxState.RECEIPTED, shown))
    return (await session.scalars(query)).all()


async def of_case(
    session: AsyncSession, case_ref: str, senders: Collection[str]
) -> tuple[Sequence[OutboxMessage], Sequence[SentMessage]]:
    """What ``senders`` sent in the case: through the outbox, and before it existed."""
    queued = (
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.case_ref == case_ref, OutboxMessage.sender.in_(senders))
            .order_by(OutboxMessage.seq)
        )
    ).all()
    in_outbox = select(OutboxMessage.id).where(OutboxMessage.id == SentMessage.id).exists()
    legacy = (
        await session.scalars(
            select(SentMessage).where(
                SentMessage.case_ref == case_ref, SentMessage.sender.in_(senders), ~in_outbox
            )
        )
    ).all()
    return queued, legacy


# --- views ---------------------------------------------------------------------------------


async def views(
    session: AsyncSession, queued: Sequence[OutboxMessage], legacy: Sequence[SentMessage]
) -> list[SentMessageOut]:
    """The messages as the API shows them, with their statuses and changes (three queries)."""
    ids = [row.id for row in queued] + [row.id for row in legacy]
    statuses = await sent_status.statuses(session, ids)
    changes = await sent_status.changes_of(session, ids)
    receipts = await _receipts(session, ids)
    found = [
        _from_outbox(row, statuses.get(row.id), changes.get(row.id, []), receipts.get(row.id))
        for row in queued
    ]
    found += [
        _tracked(
            _base(row, seq=None, queued_at=None),
            statuses.get(row.id),
            changes.get(row.id, []),
            receipts.get(row.id),
        )
        for row in legacy
    ]
    return found


async def _receipts(session: AsyncSession, ids: Sequence[str]) -> dict[str, SentOut]:
    if not ids:
        return {}
    rows = (await session.scalars(select(SentMessage).where(SentMessage.id.in_(ids)))).all()
    found = {}
    for row in rows:
        receipt: dict[str, str] = json.loads(row.receipt)
        found[row.id] = SentOut(
            message_id=row.id,
            envelope_digest=row.envelope_digest,
            accepted_at=str(jws.parse(receipt, jws.TYP_RECEIPT).claims()["accepted_at"]),
            receipt=receipt,
        )
    return found


def _base(
    row: OutboxMessage | SentMessage, *, seq: int | None, queued_at: object
) -> dict[str, object]:
    return {
        "seq": seq,
        "message_id": row.id,
        "type": row.type,
        "case_ref": row.case_ref,
        "sender": row.sender,
        "recipient": row.recipient,
        "queued_at": queued_at,
    }


def _from_outbox(
    row: OutboxMessage,
    status: SentStatus | None,
    changes: list[SentStatusChange],
    receipt: SentOut | None,
) -> SentMessageOut:
    base = _base(row, seq=row.seq, queued_at=row.queued_at)
    queued = StatusChangeOut(status="queued", at=row.queued_at, seen_at=row.queued_at)
    if row.state is OutboxState.QUEUED:
        return SentMessageOut.model_validate(
            {
                **base,
                "status": "queued",
                "final": False,
                "attempts": row.attempts,
                "next_attempt_at": row.next_attempt_at,
                "last_error": row.last_error,
                "changes": [queued],
            }
        )
    if row.state is OutboxState.REFUSED:
        settled = row.settled_at or row.queued_at
        return SentMessageOut.model_validate(
            {
                **base,
                "status": "refused",
                "final": True,
                "attempts": row.attempts,
                "refused": outbox.refusal(row),
                "changes": [queued, StatusChangeOut(status="refused", at=settled, seen_at=settled)],
            }
        )
    view = _tracked(base, status, changes, receipt, settled_at=row.settled_at)
    view.changes.insert(0, queued)
    return view


def _tracked(
    base: dict[str, object],
    status: SentStatus | None,
    changes: list[SentStatusChange],
    receipt: SentOut | None,
    *,
    settled_at: object = None,
) -> SentMessageOut:
    """A receipted message: the broker's status as last read (``accepted``, from the
    receipt, until the tracker's first read)."""
    if status is None:
        accepted_at = receipt.accepted_at if receipt is not None else None
        seen = settled_at or accepted_at
        return SentMessageOut.model_validate(
            {
                **base,
                "status": "accepted",
                "final": False,
                "accepted_at": accepted_at,
                "receipt": receipt,
                "changes": [{"status": "accepted", "at": accepted_at, "seen_at": seen}]
                if seen is not None
                else [],
            }
        )
    state = status.status
    return SentMessageOut.model_validate(
        {
            **base,
            "status": state.value,
            "final": state in sent_status.FINAL,
            "accepted_at": status.accepted_at,
            "delivered_at": status.delivered_at,
            "answered_at": status.answered_at,
            "dead_lettered_at": status.dead_lettered_at,
            "payload_purged_at": status.payload_purged_at,
            "receipt": receipt,
            "rejection": sent_status.rejection(status),
            "delivery_attempts": status.delivery_attempts,
            "delivery_error": status.delivery_error,
            "checked_at": status.checked_at,
            "next_check_at": None if state in sent_status.ENDED else status.next_check_at,
            "check_error": status.check_error,
            "changes": [
                StatusChangeOut(status=c.status.value, at=c.at, seen_at=c.seen_at) for c in changes
            ],
        }
    )
