"""Minimum time (principle 6): a sealed payload leaves the broker once it is acknowledged and
the retention window has passed. The message's metadata, digest and receipt stay; the
deletion is itself a ledger event, so the ledger still accounts for every message."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import ledger
from trm_broker.store import messages as store
from trm_broker.store import participants as registry

log = structlog.get_logger("trm_broker.retention")


class RetentionPurger:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        retention: timedelta,
        *,
        interval: float = 60.0,
        batch_size: int = 500,
    ) -> None:
        self._sessions = sessions
        self._retention = retention
        self._interval = interval
        self._batch = batch_size
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                purged = await self.run_once(datetime.now(UTC))
            except Exception as exc:  # the database may be briefly away: try again later
                log.warning("retention_error", error_type=type(exc).__name__)
                purged = 0
            if purged < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def run_once(self, now: datetime) -> int:
        """Purge one batch of payloads past retention; return how many."""
        async with self._sessions() as session:
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
        if due:
            log.info("payloads_purged", count=len(due))
        return len(due)
