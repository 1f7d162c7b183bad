"""Push due deliveries to recipients' inboxes; only a verified signed answer ends a delivery:
an acknowledgement (delivered) or a rejection of the payload (final, never retried).

Each attempt runs in three steps so no network call happens inside a transaction
(DESIGN.md §8): claim under a lease and commit; POST; record the outcome and commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.crypto import jws
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import SigningKey
from trm_broker.delivery.acknowledgement import AckRefused, verify_ack
from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import deliveries as outbox
from trm_broker.store import ledger, messages
from trm_broker.store import participants as registry
from trm_broker.store.deliveries import ClaimedDelivery
from trm_broker.web.resolve import resolve

log = structlog.get_logger("trm_broker.delivery")

#: An acknowledgement is a small JWS; a larger answer is refused unread.
MAX_ACK_BYTES = 64 * 1024
_jitter = secrets.SystemRandom()


@dataclass(frozen=True)
class Answer:
    """A recipient's verified, signed answer: the JWS as stored, and whether it rejects."""

    ack: str
    rejected: bool


def backoff_seconds(attempts: int, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempts)]."""
    return _jitter.uniform(0, min(cap, base * (2 ** min(attempts, 30))))


class DeliveryDispatcher:
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
        batch_size: int = 20,
    ) -> None:
        self._sessions = sessions
        self._http = http
        self._timeout = timeout
        self._poll = poll_interval
        self._backoff_cap = backoff_cap
        self._batch = batch_size
        self._policy = policy
        self._key = signing_key
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Look for due work now (called after a message is committed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; the attempt in flight finishes (its lease covers it if not)."""
        self._stopping.set()
        self._wake.set()

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = await self.run_once()
            except Exception as exc:  # the database may be briefly away: keep going
                log.warning("dispatcher_error", error_type=type(exc).__name__)
                worked = 0
            if worked == 0 and not self._stopping.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def run_once(self) -> int:
        """Claim and attempt one batch of due deliveries; return how many were attempted."""
        now = datetime.now(UTC)
        # Each attempt ends within its timeout, so the batch ends within this lease.
        lease_until = now + timedelta(seconds=self._timeout * self._batch + 30)
        async with self._sessions() as session:
            claimed = await outbox.claim_due(session, now, lease_until, self._batch)
            await session.commit()
        for delivery in claimed:
            if self._stopping.is_set():
                break  # unattempted rows become due again when their lease ends
            await self._attempt(delivery)
        return len(claimed)

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        structlog.contextvars.bind_contextvars(message_id=delivery.message_id)
        try:
            try:
                answer, error = await self._push(delivery)
            except Exception as exc:  # one bad recipient must not stop everyone's delivery
                answer, error = None, f"internal_{type(exc).__name__}"
            async with self._sessions() as session:
                now = datetime.now(UTC)
                if answer is not None and answer.rejected:
                    if await outbox.record_rejected(session, delivery.delivery_id, now, answer.ack):
                        await _record_in_ledger(
                            session, delivery, answer.ack, now, EventType.MESSAGE_REJECTED
                        )
                    log.info("delivery_rejected", attempts=delivery.attempts + 1)
                elif answer is not None:
                    if await outbox.record_acknowledged(
                        session, delivery.delivery_id, now, answer.ack
                    ):
                        await _record_in_ledger(
                            session, delivery, answer.ack, now, EventType.MESSAGE_ACKNOWLEDGED
                        )
                    log.info("delivery_acknowledged", attempts=delivery.attempts + 1)
                else:
                    error = error or "unknown"
                    retry = now + timedelta(
                        seconds=backoff_seconds(delivery.attempts, self._backoff_cap)
                    )
                    await outbox.record_failed(session, delivery.delivery_id, error, retry)
                    log.info("delivery_failed", error=error, attempts=delivery.attempts + 1)
                await session.commit()
        finally:
            structlog.contextvars.unbind_contextvars("message_id")

    async def _push(self, delivery: ClaimedDelivery) -> tuple[Answer | None, str | None]:
        """POST the envelope; return (the verified answer, None) or (None, an error code)."""
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
        async with self._sessions() as session:
            try:
                claims = await verify_ack(
                    session,
                    ack,
                    delivery.message_id,
                    delivery.recipient_id,
                    delivery.envelope_digest,
                    datetime.now(UTC),
                )
            except AckRefused as refused:
                return None, refused.code
        return Answer(json.dumps(ack), rejected=claims.status == "rejected"), None

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


async def _record_in_ledger(
    session: AsyncSession, delivery: ClaimedDelivery, ack: str, now: datetime, event: EventType
) -> None:
    """The answer's ledger entry (acknowledged or rejected), in the transaction that records
    it (§9). A rejection's reasons stay out of it: its ``ack_digest`` commits to them."""
    message = await messages.get(session, delivery.message_id)
    if message is None:  # deliveries reference their message (foreign key)
        raise LookupError("a delivery without its message")
    parties = (message.sender_id, message.recipient_id)
    countries = await registry.countries_of(session, set(parties))
    ledger.append(
        session,
        LedgerEvent(
            event,
            now,
            parties=parties,
            countries=tuple(countries[p] for p in parties),
            case_ref=message.case_ref,
            facts={
                "message_id": message.id,
                "envelope_digest": message.envelope_digest,
                "ack_digest": jws.digest(json.loads(ack)),
                "attempts": delivery.attempts + 1,
            },
        ),
    )


def push_body(delivery: ClaimedDelivery) -> bytes:
    """What a push carries: the envelope and the broker's signed receipt for it, so the
    recipient can tell a message the broker accepted from one posted to it directly."""
    if delivery.envelope is None:  # purged payloads belong to acknowledged messages only
        raise LookupError("the envelope of a pending delivery was purged")
    return b'{"envelope":' + delivery.envelope + b',"receipt":' + delivery.receipt.encode() + b"}"
