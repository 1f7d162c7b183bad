"""The node's background sender: it submits what waits in the outbox (node/outbox.py) until
the broker receipts it or refuses it for good.

- The same envelope, byte for byte, is submitted again after every failure: the broker
  answers a message it already holds with its original receipt (200), so a lost answer
  never makes a second message.
- A broker that is unreachable, answers 5xx, 408 or 429, or reports a concurrent change
  (409 ``conflict``) is tried again after a bounded, jittered backoff
  (``TRM_NODE_OUTBOX_RETRY_BASE_SECONDS`` doubling up to
  ``TRM_NODE_OUTBOX_RETRY_MAX_SECONDS``). Any other 4xx is final: the message is
  ``refused``, with the broker's rule, gaps and detail. So is a receipt the node cannot
  verify (``broker-failed``): the broker would answer the same again.
- After an outage longer than the broker's clock window (``TRM_CLOCK_SKEW_SECONDS`` there),
  a queued envelope is stale. The broker checks an id it holds before freshness, so a stale
  refusal means it never accepted this one: the node signs the same envelope (same id,
  header and sealed payload) again with the current time and submits that. Should an
  earlier version turn out to have been accepted after all (an attempt still in flight at
  the broker), the broker answers the new one 409 and the node submits the earlier ones,
  which get their receipt.
- Per case, a message is submitted only when every earlier one of its case is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.crypto import jws
from trm_broker.crypto.keys import SigningKey
from trm_broker.node import idempotency, outbox
from trm_broker.node.broker_client import BrokerClient, BrokerError, Receipt
from trm_broker.node.compose import resign
from trm_broker.node.keyring import Keyring
from trm_broker.node.puller import backoff
from trm_broker.node.sending import refused
from trm_broker.node.store import OutboxMessage
from trm_broker.web.problems import PROBLEM_BASE, Problem

log = structlog.get_logger("trm_broker.node.outbox")

#: Refusals that are not final: the broker asks to send again (a concurrent change, a
#: request it could not take in time, its rate limit) or a signed request's nonce was seen
#: (a retry of one the broker took but did not answer).
_TRANSIENT_TYPES = frozenset(
    PROBLEM_BASE + slug for slug in ("conflict", "request-timeout", "replayed-request")
)
_INVALID_ENVELOPE = PROBLEM_BASE + "invalid-envelope"
_INVALID_RECEIPT = "Invalid receipt"  # BrokerClient.submit's: the receipt does not verify
#: An envelope older than this that the broker refuses as invalid is signed again once with
#: the current time (it was stale after an outage); a younger one is refused for good.
RESIGN_AFTER = timedelta(seconds=5)
#: How often expired Idempotency-Key answers are deleted.
_PURGE_EVERY = 600.0


class SenderCannotSign(Problem):
    status, slug, title = 409, "sender-key-missing", "The node no longer holds the sender's key"


class SentAfterRefused(Problem):
    status, slug, title = 409, "sent-after-refused", "The message it follows was refused"


def _error_code(exc: BrokerError) -> str:
    """Why an attempt failed, as a code for the log and the outbox view (never text)."""
    title = exc.problem.get("title")
    if exc.status == 503 and title == "Broker unreachable":
        return "broker_unreachable"
    if title == _INVALID_RECEIPT:
        return "receipt_invalid"
    return f"http_{exc.status}"


def final(exc: BrokerError) -> bool:
    """Whether the message is settled as ``refused``: the broker refused it for good, or
    answered with a receipt the node cannot believe (not signed by a broker key it trusts:
    the same answer would come again; the case worker and the operator must look)."""
    if exc.problem.get("title") == _INVALID_RECEIPT:
        return True
    if exc.status in (408, 429) or not 400 <= exc.status < 500:
        return False
    return exc.problem.get("type") not in _TRANSIENT_TYPES


class OutboxSender:
    """Submits the outbox's due messages, a few at once; ``start`` it, ``stop`` it on
    shutdown. ``wake`` after queueing something; ``changes`` for an event set when any
    message is settled (receipted or refused)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: Keyring,
        broker: BrokerClient,
        *,
        backoff_base: float,
        backoff_cap: float,
        concurrency: int = 8,
        idle_poll: float = 2.0,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._broker = broker
        self._backoff = (backoff_base, backoff_cap)
        self._concurrency = concurrency
        self._idle_poll = idle_poll
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._purged_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop submitting. An attempt in flight may be cut: the message stays queued and
        is submitted again after the restart (the broker answers a repeat its receipt)."""
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

    def changes(self) -> asyncio.Event:
        """An event set at the next settlement of any message (take it before reading)."""
        return self._settled

    def _notify(self) -> None:
        settled, self._settled = self._settled, asyncio.Event()
        settled.set()

    async def _run(self) -> None:
        structlog.contextvars.clear_contextvars()
        failures = 0
        while not self._stopping.is_set():
            self._woken.clear()
            try:
                attempted = await self.run_once()
                await self._housekeeping()
                failures = 0
            except Exception as exc:  # the loop must outlive any one failure (the database)
                failures += 1
                delay = backoff(failures, *self._backoff)
                log.warning(
                    "outbox_pass_failed",
                    error=type(exc).__name__,
                    failures=failures,
                    retry_in=round(delay, 2),
                )
                await self._pause(delay)
                continue
            if not attempted:
                await self._pause(await self._idle_seconds())

    async def _idle_seconds(self) -> float:
        async with self._sessions() as session:
            due = await outbox.next_due(session)
        if due is None:
            return self._idle_poll
        wait = (due - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.01), self._idle_poll)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when woken or stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                stop = asyncio.ensure_future(self._stopping.wait())
                woken = asyncio.ensure_future(self._woken.wait())
                try:
                    await asyncio.wait((stop, woken), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    woken.cancel()

    async def _housekeeping(self) -> None:
        if time.monotonic() - self._purged_at < _PURGE_EVERY:
            return
        self._purged_at = time.monotonic()
        async with self._sessions() as session:
            purged = await idempotency.purge_expired(session, datetime.now(UTC))
            await session.commit()
        if purged:
            log.info("idempotency_keys_expired", count=purged)

    async def run_once(self) -> int:
        """One pass: refuse what follows a refused message, then submit every due message
        (per case, the oldest queued one); how many were submitted."""
        now = datetime.now(UTC)
        async with self._sessions() as session:
            held = await outbox.held_by_refused(session)
            for row, first in held:
                problem = SentAfterRefused(
                    f"It was to go after message {first}, which the broker refused: fix what "
                    "that refusal says, then send both again."
                )
                await outbox.settle_refused(session, row, problem.body(), now)
            rows = await outbox.due(session, now, limit=4 * self._concurrency)
            await session.commit()
        if held:
            self._notify()
        if not rows:
            return 0
        limit = asyncio.Semaphore(self._concurrency)

        async def one(row: OutboxMessage) -> None:
            async with limit:
                await self._attempt(row)

        await asyncio.gather(*(one(row) for row in rows))
        return len(rows)

    async def _attempt(self, row: OutboxMessage) -> None:
        structlog.contextvars.bind_contextvars(message_id=row.id)
        keyset = self._keys.current.get(row.sender)
        if keyset is None:
            problem = SenderCannotSign(
                f"This node no longer serves {row.sender}; restore its key file "
                "(TRM_NODE_KEY_FILES) and send the message again."
            )
            await self._refuse(row, problem.body())
            return
        signer = keyset.signing
        try:
            receipt = await self._submit(row.envelope, signer)
        except BrokerError as exc:
            await self._failed(row, exc, signer)
        else:
            await self._receipted(row, receipt, row.envelope)

    async def _submit(self, envelope: str, signer: SigningKey) -> Receipt:
        return await self._broker.submit(json.loads(envelope), signer, content=envelope.encode())

    async def _failed(self, row: OutboxMessage, exc: BrokerError, signer: SigningKey) -> None:
        now = datetime.now(UTC)
        if exc.problem.get("type") == _INVALID_ENVELOPE and _created_before(
            row.envelope, now - RESIGN_AFTER
        ):
            _, signed = resign(json.loads(row.envelope), signer, now)
            async with self._sessions() as session:
                await outbox.replace_envelope(session, row, json.dumps(signed), now)
                await session.commit()
            log.info("outbox_envelope_resigned", attempts=row.attempts + 1)
            self.wake()
            return
        if exc.status == 409 and row.earlier_envelopes:
            # A new version of a message whose earlier one the broker holds after all.
            for envelope in reversed(_earlier(row)):
                try:
                    receipt = await self._submit(envelope, signer)
                except BrokerError:
                    continue
                await self._receipted(row, receipt, envelope)
                return
        if final(exc):
            await self._refuse(row, refused(exc).body())
            return
        attempts = row.attempts + 1
        delay = backoff(attempts, *self._backoff)
        error = _error_code(exc)
        async with self._sessions() as session:
            await outbox.retry_later(session, row, error, now, now + timedelta(seconds=delay))
            await session.commit()
        log.info("outbox_attempt_failed", error=error, attempts=attempts, retry_in=round(delay, 2))

    async def _receipted(self, row: OutboxMessage, receipt: Receipt, envelope: str) -> None:
        async with self._sessions() as session:
            done = await outbox.settle_receipted(session, row, receipt, envelope, datetime.now(UTC))
            await session.commit()
        if done:
            log.info("message_sent", type=row.type.value, attempts=row.attempts + 1)
        self._notify()

    async def _refuse(self, row: OutboxMessage, problem: dict[str, Any]) -> None:
        async with self._sessions() as session:
            done = await outbox.settle_refused(session, row, problem, datetime.now(UTC))
            await session.commit()
        if done:
            log.info(
                "message_refused",
                type=row.type.value,
                problem=str(problem.get("type", "")).removeprefix(PROBLEM_BASE),
                broker_status=problem.get("broker_status"),
                rule=problem.get("rule"),
            )
        self._notify()


def _earlier(row: OutboxMessage) -> Sequence[str]:
    versions: list[str] = json.loads(row.earlier_envelopes or "[]")
    return versions


def _created_before(envelope: str, moment: datetime) -> bool:
    """Whether the stored envelope was made before ``moment``."""
    try:
        claims = jws.parse(json.loads(envelope), jws.TYP_ENVELOPE).claims()
        return datetime.fromisoformat(str(claims["created_at"])) < moment
    except (ValueError, KeyError, TypeError):
        return False
