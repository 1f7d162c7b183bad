"""Bulk-loading a ledger of real entries fast: ``size`` events (the broker's own entry
format, `alert.raised` with a number), their Merkle nodes and a checkpoint, written in
batches, without the sequencer. The broker's sequencer then extends the tree and signs
its next checkpoint as it would have; `trm-broker ledger verify` can check it all.
(bench/console.py loads a bigger mix of tables for the console's queries.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text

from trm_broker.crypto.canonical import canonical_json
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger import merkle
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import LedgerCheckpoint, LedgerEntry, LedgerNode

BATCH = 10_000


def _rows(first: int, last: int, start: datetime) -> list[dict[str, object]]:
    rows = []
    for i in range(first, last):
        at = start + timedelta(seconds=i)
        case_ref = f"AT-BULK-{i // 8:07d}"
        event = LedgerEvent(
            EventType.ALERT_RAISED, at, (), ("AT", "NG"), case_ref, {"kind": "bench", "n": i}
        )
        body = canonical_json(event.claims())
        rows.append(
            {
                "idx": i,
                "body": body,
                "leaf_hash": merkle.leaf_hash(body),
                "type": event.type,
                "at": at,
                "case_ref": case_ref,
                "party1": None,
                "party2": None,
                "party3": None,
                "country1": "AT",
                "country2": "NG",
            }
        )
    return rows


async def load(url: str, size: int) -> float:
    """Write ``size`` entries with their nodes and a checkpoint; seconds taken."""
    started = time.perf_counter()
    begin = datetime.now(UTC) - timedelta(seconds=size + 3600)
    compact = merkle.CompactRange()
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            for first in range(0, size, BATCH):
                entries = _rows(first, min(first + BATCH, size), begin)
                await session.execute(insert(LedgerEntry), entries)
                nodes = [
                    {"level": level, "idx": idx, "hash": digest}
                    for entry in entries
                    for (level, idx), digest in compact.append(entry["leaf_hash"])  # type: ignore[arg-type]
                ]
                await session.execute(insert(LedgerNode), nodes)
                await session.commit()
            root = compact.root()
            session.add(
                LedgerCheckpoint(
                    size=size,
                    root=root,
                    note=f"bench\n{size}\n{root.hex()}\n",
                    issued_at=datetime.now(UTC),
                )
            )
            await session.commit()
            await session.execute(text("ANALYZE"))
            await session.commit()
    finally:
        await engine.dispose()
    return time.perf_counter() - started
