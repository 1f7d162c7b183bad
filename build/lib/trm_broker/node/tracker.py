"""The node's status tracker: it keeps the fate of every message the node sent current
(docs/node.md, "Sent messages and their fate") without anyone asking.

- Once the broker receipts a message (the outbox sender wakes the tracker at once), the
  tracker reads its status with the broker's `GET /v1/messages/{id}`, signed with the
  sending organisation's key, and records each change (node/sent_status.py).
- It reads again after ``TRM_NODE_STATUS_POLL_SECONDS``; while the status stays the same,
  each read waits about twice as long as the one before, up to 30 times that setting (with
  jitter); a change starts again from the setting. A read that fails (the broker away, a
  refusal) backs off the same way. Acknowledged, rejected and dropped messages are not read
  again; a dead letter is read at the slowest pace, for an operator's re-queue.
- Stopping is prompt: a pass in progress gets a short grace, then is cancelled; a read cut
  short writes nothing, and is made again after the restart.

Logs name message ids, statuses and error codes only: never a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.node import sent_status
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.keyring import Keyring
from trm_broker.node.outbox_sender import OutboxSender
from trm_broker.node.puller import backoff
from trm_broker.node.store import SentState, SentStatus

log = structlog.get_logger("trm_broker.node.tracker")

#: The slowest pace, as a multiple of the poll interval.
SLOWEST = 30


class StatusTracker:
    """``start`` it, ``stop`` it on shutdown; ``wake`` it when a message was receipted (the
    outbox sender's settlements wake it too, when it is given the sender)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: Keyring,
        broker: BrokerClient,
        *,
        interval: float,
        sender: OutboxSender | None = None,
        concurrency: int = 8,
        batch: int = 64,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._broker = broker
        self._interval = interval
        self._slowest = interval * SLOWEST
        self._sender = sender
        self._concurrency = concurrency
        self._batch = batch
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-tracker")

    async def stop(self, grace: float = 1.0) -> None:
        """Stop reading: at once when idle; a pass in progress gets ``grace`` seconds."""
        self._stopping.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def wake(self) -> None:
        self._woken.set()

    async def _run(self) -> None:
        structlog.contextvars.clear_contextvars()
        failures = 0
        while not self._stopping.is_set():
            # Taken before the pass, so a receipt during it wakes the next pause at once.
            settled = self._sender.changes() if self._sender is not None else None
            self._woken.clear()
            try:
                await self.run_once()
                failures = 0
                wait = await self._idle_seconds()
            except Exception as exc:  # the loop must outlive any one failure (the database)
                failures += 1
                wait = backoff(failures, self._interval, self._slowest)
                log.warning(
                    "status_pass_failed",
                    error=type(exc).__name__,
                    failures=failures,
                    retry_in=round(wait, 2),
                )
            await self._pause(wait, settled)

    async def _idle_seconds(self) -> float:
        async with self._sessions() as session:
            due = await sent_status.next_due(session)
        if due is None:
            return self._slowest
        wait = (due - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.01), self._slowest)

    async def _pause(self, seconds: float, settled: asyncio.Event | None) -> None:
        """Sleep, but wake at once when woken, stopped, or a message was settled."""
        events = [self._stopping, self._woken] + ([settled] if settled is not None else [])
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def run_once(self) -> int:
        """One pass: start tracking what was receipted since, then read every status that
        is due; how many were read."""
        now = datetime.now(UTC)
        async with self._sessions() as session:
            await sent_status.track_new(session, now)
            due = await sent_status.due(session, now, self._batch)
            await session.commit()
        if not due:
            return 0
        limit = asyncio.Semaphore(self._concurrency)

        async def one(row: SentStatus, sender: str) -> None:
            async with limit:
                if not self._stopping.is_set():
                    await self._read(row, sender)

        await asyncio.gather(*(one(row, sender) for row, sender in due))
        return len(due)

    async def _read(self, row: SentStatus, sender: str) -> None:
        message_id = row.message_id
        keyset = self._keys.current.get(sender)
        if keyset is None:  # the node no longer serves the sender: nobody may ask
            await self._failed(row, "sender_key_missing")
            return
        try:
            answer = await self._broker.message_status(message_id, keyset.signing)
            read = sent_status.BrokerStatus.model_validate(answer)
            if read.message_id != message_id:
                raise ValueError("another message's status")
        except BrokerError as exc:
            await self._failed(row, _error_code(exc))
            return
        except (ValidationError, ValueError):
            await self._failed(row, "status_malformed")
            return
        now = datetime.now(UTC)
        async with self._sessions() as session:
            found = await sent_status.record_read(
                session, message_id, read, now, now + self._next_read(row, read.status)
            )
            await session.commit()
        for change in found:
            log.info("sent_status_changed", message_id=message_id, status=change.status.value)

    def _next_read(self, row: SentStatus, status: SentState) -> timedelta:
        if status is sent_status.DEAD_LETTERED:
            return timedelta(seconds=self._slowest)
        unchanged = row.unchanged_checks + 1 if status == row.status else 0
        return timedelta(seconds=backoff(unchanged + 1, self._interval, self._slowest))

    async def _failed(self, row: SentStatus, error: str) -> None:
        delay = backoff(row.failed_checks + 1, self._interval, self._slowest)
        async with self._sessions() as session:
            await sent_status.record_failure(
                session, row.message_id, error, datetime.now(UTC) + timedelta(seconds=delay)
            )
            await session.commit()
        log.info(
            "sent_status_read_failed",
            message_id=row.message_id,
            error=error,
            failures=row.failed_checks + 1,
            retry_in=round(delay, 2),
        )


def _error_code(exc: BrokerError) -> str:
    if exc.status == 503 and exc.problem.get("title") == "Broker unreachable":
        return "broker_unreachable"
    return f"http_{exc.status}"
