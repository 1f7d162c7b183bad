"""Minimum time (principle 6): a sealed payload leaves the broker once it is acknowledged and
the retention window has passed. The message's metadata, digest and receipt stay; the
deletion is itself a ledger event, so the ledger still accounts for every message.

On SQLite the purger also empties the write-ahead log after any purge (its own or a consent
withdrawal's): the log keeps the pages as they were before, payloads and all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.background.loop import BackgroundLoop
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import ledger, turns
from trm_broker.store import messages as store
from trm_broker.store import participants as registry
from trm_broker.store.models import Message

log = structlog.get_logger("trm_broker.retention")


class RetentionPurger(BackgroundLoop):
    name = "retention"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        retention: timedelta,
        *,
        interval: float = 60.0,
        batch_size: int = 500,
    ) -> None:
        super().__init__(interval)
        self._sessions = sessions
        self._retention = retention
        self._batch = batch_size
        #: How many payloads were purged when SQLite's log was last emptied.
        self._purged_at_truncation: int | None = None

    async def step(self) -> bool:
        return await self.run_once(datetime.now(UTC)) == self._batch

    async def run_once(self, now: datetime) -> int:
        """Purge one batch of payloads past retention; return how many."""
        async with self._sessions() as session:
            if not await turns.try_turn(session, turns.Job.RETENTION):
                return 0  # another replica purges now
            due = await store.purgeable(session, now - self._retention, self._batch)
            countries = await registry.countries_of(
                session, {p for m in due for p in (m.sender_id, m.recipient_id)}
            )
            for message in due:
                message.envelope = None
                message.purged_at = now
                ledger.append(
                    session,
                    LedgerEvent(
                        EventType.PAYLOAD_PURGED,
                        now,
                        parties=(message.sender_id, message.recipient_id),
                        countries=tuple(
                            countries[p] for p in (message.sender_id, message.recipient_id)
                        ),
                        case_ref=message.case_ref,
                        facts={
                            "message_id": message.id,
                            "envelope_digest": message.envelope_digest,
                            "reason": "retention",
                        },
                    ),
                )
            await session.commit()
            if session.get_bind().dialect.name == "sqlite":
                await self._truncate_wal(session)
        if due:
            log.info("payloads_purged", count=len(due))
        return len(due)

    async def _truncate_wal(self, session: AsyncSession) -> None:
        """Copy SQLite's write-ahead log into the file and empty it, if payloads were purged
        since it was last emptied (here, or by a consent withdrawal, at most one interval
        ago). secure_delete zeroes what a purge frees in the new pages; the log still holds
        the old ones. Readers are waited for, up to the busy timeout."""
        purged = await session.scalar(
            select(func.count()).select_from(Message).where(Message.purged_at.is_not(None))
        )
        if not purged or purged == self._purged_at_truncation:
            return
        busy, _, _ = (await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).one()
        if busy:  # a reader kept it from finishing: the next step tries again
            log.warning("wal_checkpoint_busy")
        else:
            self._purged_at_truncation = purged
