"""What became of each message this node sent (docs/node.md, "Sent messages and their fate"):
the broker's status of it, kept in ``node_sent_status`` with every change in
``node_sent_status_changes``. The status tracker (node/tracker.py) reads the broker; this
module holds every query of those two tables, and the pure rule of what a read changes.

Statuses are the broker's (`GET /v1/messages/{id}`): ``accepted``, ``delivered`` (fetched
from the pull inbox), ``acknowledged``, ``rejected`` (the recipient's node refused the
payload), ``dead_lettered`` and ``dropped`` (the consent was withdrawn). Acknowledged,
rejected and dropped are never read again; a dead letter waits for an operator's re-queue,
so it is read at the slowest pace.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.errors import MalformedError
from trm_broker.node.store import SentMessage, SentState, SentStatus, SentStatusChange

ACCEPTED, DELIVERED = SentState.ACCEPTED, SentState.DELIVERED
ACKNOWLEDGED, REJECTED = SentState.ACKNOWLEDGED, SentState.REJECTED
DEAD_LETTERED, DROPPED = SentState.DEAD_LETTERED, SentState.DROPPED
#: Final for the case worker: nothing more happens unless an operator re-queues a dead letter.
FINAL = frozenset({ACKNOWLEDGED, REJECTED, DEAD_LETTERED, DROPPED})
#: Never read again.
ENDED = frozenset({ACKNOWLEDGED, REJECTED, DROPPED})
#: Most reasons kept of a rejection, and the longest one (they are locations in a payload).
_MAX_REASONS, _MAX_REASON = 100, 500


class BrokerDelivery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    attempts: int = 0
    last_error: str | None = None
    fetched_at: datetime | None = None
    acknowledged_at: datetime | None = None
    dead_lettered_at: datetime | None = None


class BrokerStatus(BaseModel):
    """The broker's answer to `GET /v1/messages/{id}`, checked like any input; ``rejection``
    (``{code, reasons}``) when the broker gives it."""

    model_config = ConfigDict(extra="ignore")
    message_id: str
    status: SentState
    accepted_at: datetime
    ledger_index: int | None = None
    payload_purged_at: datetime | None = None
    delivery: BrokerDelivery = Field(default_factory=BrokerDelivery)
    rejection: dict[str, Any] | None = None


def rejection_of(status: BrokerStatus) -> dict[str, Any] | None:
    """The recipient's code and reasons, as strings, bounded; None if the broker gave none."""
    given = status.rejection
    if not isinstance(given, dict):
        return None
    code = given.get("code")
    reasons = given.get("reasons")
    kept = (
        [r[:_MAX_REASON] for r in reasons if isinstance(r, str)]
        if isinstance(reasons, list)
        else []
    )
    return {
        "code": code[:64] if isinstance(code, str) else None,
        "reasons": kept[:_MAX_REASONS],
    }


@dataclass(frozen=True)
class Change:
    status: SentState
    at: datetime | None


def changes(current: SentState, delivered_seen: bool, read: BrokerStatus) -> list[Change]:
    """The changes a read of the broker makes to a message now ``current``: none if the
    status is the same; else the new status, at the broker's time for it, preceded by
    ``delivered`` when the broker says it was fetched and the node has not seen that yet
    (a message fetched and answered between two reads). A push has no ``delivered``: the
    recipient's node answers the push itself."""
    new = read.status
    if new == current:
        return []
    delivery = read.delivery
    found: list[Change] = []
    fetched = delivery.fetched_at
    if new not in (ACCEPTED, DELIVERED) and fetched is not None and not delivered_seen:
        found.append(Change(DELIVERED, fetched))
    at = {
        ACCEPTED: None,  # back from a dead letter: re-queued by an operator
        DELIVERED: fetched,
        ACKNOWLEDGED: delivery.acknowledged_at,
        REJECTED: delivery.acknowledged_at,
        DEAD_LETTERED: delivery.dead_lettered_at,
        DROPPED: None,
    }[new]
    found.append(Change(new, at))
    return found


def _accepted_at(sent: SentMessage) -> datetime:
    """The receipt's acceptance time (the node verified the receipt when it stored it)."""
    try:
        claims = jws.parse(json.loads(sent.receipt), jws.TYP_RECEIPT).claims()
        return datetime.fromisoformat(str(claims["accepted_at"]))
    except (ValueError, KeyError, TypeError, MalformedError):
        return sent.sent_at


async def track_new(session: AsyncSession, now: datetime, limit: int = 500) -> int:
    """Start tracking the sent messages that have no status yet (just receipted, or sent
    before the node tracked statuses): ``accepted``, as the receipt says, read at once."""
    query = (
        select(SentMessage)
        .where(
            ~select(SentStatus.message_id).where(SentStatus.message_id == SentMessage.id).exists()
        )
        .limit(limit)
    )
    new = (await session.scalars(query)).all()
    for sent in new:
        accepted_at = _accepted_at(sent)
        session.add(
            SentStatus(
                message_id=sent.id,
                status=ACCEPTED,
                accepted_at=accepted_at,
                changed_at=now,
                next_check_at=now,
                delivery_attempts=0,
                unchanged_checks=0,
                failed_checks=0,
            )
        )
        session.add(
            SentStatusChange(message_id=sent.id, status=ACCEPTED, at=accepted_at, seen_at=now)
        )
    return len(new)


async def due(session: AsyncSession, now: datetime, limit: int) -> Sequence[tuple[SentStatus, str]]:
    """The statuses to read now, with each message's sender (who signs the read)."""
    query = (
        select(SentStatus, SentMessage.sender)
        .join(SentMessage, SentMessage.id == SentStatus.message_id)
        .where(SentStatus.status.not_in(ENDED), SentStatus.next_check_at <= now)
        .order_by(SentStatus.next_check_at)
        .limit(limit)
    )
    return [(row, sender) for row, sender in (await session.execute(query)).all()]


async def next_due(session: AsyncSession) -> datetime | None:
    query = select(func.min(SentStatus.next_check_at)).where(SentStatus.status.not_in(ENDED))
    value: datetime | None = (await session.execute(query)).scalar_one_or_none()
    return value


async def record_read(
    session: AsyncSession, message_id: str, read: BrokerStatus, now: datetime, next_at: datetime
) -> list[Change]:
    """Write what a read of the broker said: the status, its times and its changes; the next
    read at ``next_at`` (or, after a change, as the caller says). The changes made."""
    row = await session.get(SentStatus, message_id, populate_existing=True)
    if row is None:
        return []
    delivered_seen = row.delivered_at is not None or await _had(session, message_id, DELIVERED)
    found = changes(row.status, delivered_seen, read)
    for change in found:
        session.add(
            SentStatusChange(message_id=message_id, status=change.status, at=change.at, seen_at=now)
        )
    delivery = read.delivery
    rejection = rejection_of(read)
    await session.execute(
        update(SentStatus)
        .where(SentStatus.message_id == message_id)
        .values(
            status=read.status,
            accepted_at=read.accepted_at,
            delivered_at=delivery.fetched_at,
            answered_at=delivery.acknowledged_at,
            dead_lettered_at=delivery.dead_lettered_at,
            payload_purged_at=read.payload_purged_at,
            ledger_index=read.ledger_index,
            delivery_attempts=delivery.attempts,
            delivery_error=(delivery.last_error or None) and delivery.last_error[:64],
            rejection=json.dumps(rejection) if rejection is not None else row.rejection,
            changed_at=now if found else row.changed_at,
            checked_at=now,
            next_check_at=next_at,
            unchanged_checks=0 if found else row.unchanged_checks + 1,
            failed_checks=0,
            check_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    return found


async def record_failure(
    session: AsyncSession, message_id: str, error: str, next_at: datetime
) -> None:
    """A read that failed: say why, count it, read again at ``next_at``."""
    await session.execute(
        update(SentStatus)
        .where(SentStatus.message_id == message_id)
        .values(
            failed_checks=SentStatus.failed_checks + 1,
            check_error=error[:64],
            next_check_at=next_at,
        )
        .execution_options(synchronize_session=False)
    )


async def _had(session: AsyncSession, message_id: str, status: SentState) -> bool:
    query = select(SentStatusChange.seq).where(
        SentStatusChange.message_id == message_id, SentStatusChange.status == status
    )
    return (await session.scalars(query.limit(1))).first() is not None


# --- reads for the case workers' API -------------------------------------------------------


async def statuses(session: AsyncSession, message_ids: Collection[str]) -> dict[str, SentStatus]:
    if not message_ids:
        return {}
    query = select(SentStatus).where(SentStatus.message_id.in_(message_ids))
    return {row.message_id: row for row in (await session.scalars(query)).all()}


async def changes_of(
    session: AsyncSession, message_ids: Collection[str]
) -> dict[str, list[SentStatusChange]]:
    """Each message's changes, in the order the node learned them."""
    if not message_ids:
        return {}
    query = (
        select(SentStatusChange)
        .where(SentStatusChange.message_id.in_(message_ids))
        .order_by(SentStatusChange.seq)
    )
    found: dict[str, list[SentStatusChange]] = {}
    for row in (await session.scalars(query)).all():
        found.setdefault(row.message_id, []).append(row)
    return found


def rejection(row: SentStatus | None) -> dict[str, Any] | None:
    if row is None or row.rejection is None:
        return None
    value: dict[str, Any] = json.loads(row.rejection)
    return value
