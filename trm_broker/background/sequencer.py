"""The sequencer: gives queued ledger entries their indexes, in batches, and signs a
checkpoint for each batch.

Appends happen in the transactions of the changes they record (``store.ledger.append``), so
the accept path never waits for the tree. One sequencer integrates at a time: with
PostgreSQL every replica runs one and an advisory lock elects the writer of each batch;
SQLite has a single writer anyway.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.background.loop import BackgroundLoop
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
from trm_broker.store import ledger as store
from trm_broker.store import turns

log = structlog.get_logger("trm_broker.ledger")


class LedgerSequencer(BackgroundLoop):
    name = "sequencer"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        signer: NoteSigner,
        *,
        interval: float = 0.2,
        batch_size: int = 2000,
        gather: float = 0.05,
    ) -> None:
        super().__init__(interval)
        self._sessions = sessions
        self._signer = signer
        self._batch = batch_size
        self._gather = gather
        self._last_batch = 0.0

    @property
    def origin(self) -> str:
        return self._signer.name

    async def step(self) -> bool:
        """One batch; woken within ``gather`` seconds of the last batch, it waits out the
        rest first, so entries accepted one after another share a batch and a checkpoint
        (a signature and a transaction each) rather than take one each."""
        wait = self._last_batch + self._gather - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        integrated = await self.run_once()
        if integrated:
            self._last_batch = time.monotonic()
        return integrated > 0

    async def run_once(self) -> int:
        """Integrate one batch of queued entries; return how many (0: none, or another
        replica is integrating)."""
        async with self._sessions() as session:
            if not await turns.try_turn(session, turns.Job.SEQUENCER):
                return 0
            latest = await store.latest_checkpoint(session)
            size = latest.size if latest is not None else 0
            batch = await store.pending(session, self._batch)
            if not batch and latest is not None:
                return 0
            frontier = await store.nodes(session, merkle.root_nodes(size))
            tree = merkle.CompactRange.from_nodes(size, frontier)
            for entry in batch:
                entry.idx = tree.size
                entry.leaf_hash = merkle.leaf_hash(entry.body)
                store.add_nodes(session, tree.append(entry.leaf_hash))
            root = tree.root()
            note = sign_checkpoint(Checkpoint(self.origin, tree.size, root), self._signer)
            store.add_checkpoint(session, tree.size, root, note, datetime.now(UTC))
            await session.commit()
        if batch:
            log.info("ledger_integrated", entries=len(batch), size=tree.size)
        return len(batch)
