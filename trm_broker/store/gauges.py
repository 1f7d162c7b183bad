"""Queries behind the gauges `/metrics` reads at each scrape: counts and ages over the outbox,
the alerts and the ledger. Aggregates only, never a row's ids or content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.store import deliveries as outbox
from trm_broker.store.models import AlertRecord, Delivery, LedgerCheckpoint, LedgerEntry


@dataclass(frozen=True)
class Gauges:
    pending: int
    #: When the longest-waiting pending delivery was queued (None: nothing pending).
    oldest_queued_at: datetime | None
    dead_lettered: int
    #: Open alerts by kind (a fixed vocabulary of the broker's, e.g. ``reception_overdue``).
    open_alerts: dict[str, int]
    #: Size and time of the latest signed checkpoint (None: none yet).
    checkpoint_size: int | None
    checkpoint_issued_at: datetime | None
    #: Ledger entries committed but not yet in the tree (waiting for the sequencer).
    unsequenced: int


async def read(session: AsyncSession) -> Gauges:
    queue = await session.execute(
        select(Delivery.status, func.count(), func.min(Delivery.queued_at))
        .where(Delivery.status.in_((outbox.PENDING, outbox.DEAD_LETTERED)))
        .group_by(Delivery.status)
    )
    by_status = {status: (count, oldest) for status, count, oldest in queue.all()}
    pending, oldest = by_status.get(outbox.PENDING, (0, None))
    dead_lettered, _ = by_status.get(outbox.DEAD_LETTERED, (0, None))
    alerts = await session.execute(
        select(AlertRecord.kind, func.count())
        .where(AlertRecord.closed_at.is_(None))
        .group_by(AlertRecord.kind)
    )
    # The unsequenced count first, then the checkpoint: where each statement reads its own
    # snapshot (SQLite outside a write), an entry counted as integrated is then always in
    # the checkpoint read after it (integration and checkpoint commit together).
    unsequenced = await session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.idx.is_(None))
    )
    checkpoint = (
        await session.execute(
            select(LedgerCheckpoint.size, LedgerCheckpoint.issued_at)
            .order_by(LedgerCheckpoint.size.desc())
            .limit(1)
        )
    ).first()
    return Gauges(
        pending=pending,
        oldest_queued_at=oldest,
        dead_lettered=dead_lettered,
        open_alerts={kind: count for kind, count in alerts.all()},
        checkpoint_size=checkpoint.size if checkpoint is not None else None,
        checkpoint_issued_at=checkpoint.issued_at if checkpoint is not None else None,
        unsequenced=unsequenced or 0,
    )
