"""Push due deliveries to recipients' inboxes; only a verified signed answer ends a delivery:
an acknowledgement (delivered) or a rejection of the payload (final, never retried).

Each attempt runs in three steps so no network call happens inside a transaction
(docs/design.md §8): claim under a lease and commit; POST; verify and record the outcome
and commit.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.background.loop import BackgroundLoop
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import SigningKey
from trm_broker.delivery import outcomes
from trm_broker.delivery.acknowledgement import AckRefused, verify_ack
from trm_broker.delivery.observer import DeliveryObserver, Outcome
from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store import deliveries as outbox
from trm_broker.store.deliveries import ClaimedDelivery
from trm_broker.web.resolve import resolve

log = structlog.get_logger("trm_broker.delivery")

#: An acknowledgement is a small JWS; a larger answer is refused unread.
MAX_ACK_BYTES = 64 * 1024
_jitter = secrets.SystemRandom()


@dataclass(frozen=True)
class Answer:
    """A recipient's verified, signed answer: the JWS as stored, and its claims."""

    ack: dict[str, Any]
    claims: AckClaims

    @property
    def rejected(self) -> bool:
        return self.claims.status == "rejected"


def backoff_seconds(attempts: int, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempts)]."""
    return _jitter.uniform(0, min(cap, base * (2 ** min(attempts, 30))))


class DeliveryDispatcher(BackgroundLoop):
    """Claims due deliveries and pushes them, up to ``concurrency`` at once.

    Any number of dispatchers may share one PostgreSQL database: claims are disjoint
    (``FOR UPDATE SKIP LOCKED``) and leased, and the first recorded answer stands. With
    SQLite there is one, inside ``trm-broker serve``: ``release_on_start`` makes what a
    killed predecessor had leased due at once.
    """

    name = "dispatcher"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        *,
        timeout: float,
        poll_interval: float,
        backoff_cap: float,
        policy: InboxPolicy,
        signing_key: SigningKey,
        max_age: float = 7 * 24 * 3600.0,
        concurrency: int = 16,
        release_on_start: bool = False,
        observer: DeliveryObserver | None = None,
    ) -> None:
        super().__init__(poll_interval)
        self._sessions = sessions
        self._http = http
        self._timeout = timeout
        self._backoff_cap = backoff_cap
        self._max_age = timedelta(seconds=max_age)
        self._batch = concurrency
        self._policy = policy
        self._key = signing_key
        self._release_pending = release_on_start
        self._next_sweep = datetime.min.replace(tzinfo=UTC)
        self._observer = observer
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def lease(self) -> timedelta:
        """How long a claim is ours: the push's deadline, its verification and recording."""
        return timedelta(seconds=2 * self._timeout + 5)

    async def step(self) -> bool:
        """Keep up to ``concurrency`` attempts in flight: claim as many due deliveries as
        there are free places and start each at once, without waiting for the others (a
        slow inbox, or a batch's slowest push, holds up no message but its own). When every
        place is taken, wait for one to free."""
        free = self._batch - len(self._in_flight)
        if free <= 0:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return True
        claimed = await self._claim(free)
        for delivery in claimed:
            task = asyncio.create_task(self._attempt(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._attempted)
        return len(claimed) == free  # as many as asked: more may be due

    def _attempted(self, task: asyncio.Task[None]) -> None:
        """An attempt ended: its place is free, and a later message of its case to its
        recipient, held back until this one was answered, may be due now."""
        self._in_flight.discard(task)
        self.wake()

    async def run_forever(self) -> None:
        """The loop of :meth:`step`; once stopped (or cancelled), the attempts under way
        finish (or are cancelled: their leases make them due again)."""
        try:
            await super().run_forever()
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def run_once(self) -> int:
        """Dead-letter what is too old, then claim and attempt one batch of due deliveries,
        concurrently; return how many were attempted."""
        claimed = await self._claim(self._batch)
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        """Dead-letter what is too old, then claim up to ``limit`` due deliveries under a
        lease (none once stopping: what was claimed meanwhile is handed back untouched)."""
        now = datetime.now(UTC)
        if self._release_pending:
            async with self._sessions() as session:
                await outbox.release_all(session, now)
                await session.commit()
            self._release_pending = False
        if now >= self._next_sweep:
            await self.sweep(now)
            self._next_sweep = now + timedelta(seconds=self._interval)
        lease_until = now + self.lease
        async with self._sessions() as session:
            claimed = await outbox.claim_due(session, now, lease_until, limit)
            await session.commit()
        if claimed and self.stopping:
            async with self._sessions() as session:
                await outbox.release(session, [d.delivery_id for d in claimed], lease_until, now)
                await session.commit()
            return []
        return list(claimed)

    async def sweep(self, now: datetime) -> int:
        """Dead-letter deliveries queued longer than the maximum age; return how many."""
        async with self._sessions() as session:
            due = await outbox.expired(session, now, now - self._max_age, 100)
            count = 0
            for delivery in due:
                if await outcomes.dead_letter(session, delivery, now):
                    count += 1
                    log.warning(
                        "delivery_dead_lettered",
                        message_id=delivery.message_id,
                        attempts=delivery.attempts,
                        error=delivery.last_error,
                    )
            await session.commit()
        if count and self._observer is not None:
            self._observer.dead_lettered(count)
        return count

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        structlog.contextvars.bind_contextvars(message_id=delivery.message_id)
        try:
            try:
                ack, error = await self._push(delivery)
            except Exception as exc:  # one bad recipient must not stop everyone's delivery
                ack, error = None, f"internal_{type(exc).__name__}"
            answer: Answer | None = None
            async with self._sessions() as session:
                now = datetime.now(UTC)
                attempts = delivery.attempts  # counted when claimed
                if ack is not None:
                    # Verified in the transaction that records it: one transaction a push.
                    try:
                        claims = await verify_ack(
                            session,
                            ack,
                            delivery.message_id,
                            delivery.recipient_id,
                            delivery.envelope_digest,
                            now,
                        )
                        answer = Answer(ack, claims)
                    except AckRefused as refused:
                        error = refused.code
                if answer is not None:
                    recorded = await outcomes.record_answer(
                        session,
                        delivery.delivery_id,
                        delivery.message_id,
                        answer.ack,
                        answer.claims,
                        attempts,
                        now,
                    )
                    event = "delivery_rejected" if answer.rejected else "delivery_acknowledged"
                    # A second answer (a repeated push) changes nothing and is not logged.
                    if recorded:
                        log.info(event, attempts=attempts)
                else:
                    error = error or "unknown"
                    retry = now + timedelta(
                        seconds=backoff_seconds(attempts - 1, self._backoff_cap)
                    )
                    await outbox.record_failed(session, delivery.delivery_id, error, retry)
                    log.info("delivery_failed", error=error, attempts=attempts)
                await session.commit()
            if self._observer is not None:
                outcome: Outcome = "failed"
                if answer is not None:
                    outcome = "rejected" if answer.rejected else "acknowledged"
                self._observer.attempted(outcome, error)
        finally:
            structlog.contextvars.unbind_contextvars("message_id")

    async def _push(self, delivery: ClaimedDelivery) -> tuple[dict[str, Any] | None, str | None]:
        """POST the envelope; return (the signed answer, None), to be verified where it is
        recorded, or (None, an error code)."""
        if delivery.inbox_url is None:
            return None, "no_inbox_url"
        # The registry was checked at registration; DNS may have changed since (rebinding).
        try:
            host = self._policy.check_url(delivery.inbox_url)
            addresses = await resolve(host)
            if not addresses:
                return None, "inbox_unresolved"
            self._policy.check_addresses(addresses)
        except InboxRefused:
            return None, "inbox_address_refused"
        try:
            # A total deadline: httpx's timeout bounds each read, not a slow drip of bytes.
            async with asyncio.timeout(self._timeout):
                status, body = await self._post(delivery)
        except TimeoutError:
            return None, "timeout"
        except httpx.TransportError as exc:
            return None, f"transport_{type(exc).__name__}"
        if status != 200:
            return None, f"http_{status}"
        if body is None:
            return None, "ack_too_large"
        try:
            answer = json.loads(body)
            ack = answer.get("ack") if isinstance(answer, dict) else None
        except (ValueError, RecursionError):
            return None, "ack_malformed"
        if not isinstance(ack, dict):
            return None, "ack_malformed"
        return ack, None

    async def _post(self, delivery: ClaimedDelivery) -> tuple[int, bytes | None]:
        """POST and read at most MAX_ACK_BYTES of the answer (None: it was larger)."""
        request = self._http.build_request(
            "POST",
            delivery.inbox_url or "",
            content=push_body(delivery),
            headers={"content-type": "application/json"},
            timeout=self._timeout,
        )
        # Signed by the broker (RFC 9421), so the node can refuse pushes from anyone else.
        request.headers.update(
            sign_request(request.method, str(request.url), request.content, self._key)
        )
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code != 200:
                return response.status_code, b""
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ACK_BYTES:
                    return response.status_code, None
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)
        finally:
            await response.aclose()


def push_body(delivery: ClaimedDelivery) -> bytes:
    """What a push carries: the envelope and the broker's signed receipt for it, so the
    recipient can tell a message the broker accepted from one posted to it directly."""
    if delivery.envelope is None:  # purged payloads belong to acknowledged messages only
        raise LookupError("the envelope of a pending delivery was purged")
    return b'{"envelope":' + delivery.envelope + b',"receipt":' + delivery.receipt.encode() + b"}"
