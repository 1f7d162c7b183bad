"""Pull mode (docs/design.md §8): a node the broker cannot reach fetches its messages instead.

For each participant the node serves, a loop long-polls the broker's ``GET /v1/inbox``
signed as that participant, receives each item exactly as a push (``inbox.receive_once``:
verify, open, check, store once), and only then posts the node's signed answer to
``POST /v1/inbox/{message_id}/ack``. Nothing is lost: an item stays unacknowledged at the
broker until the node has committed it, and the broker hands it out again after a restart,
when the node answers it from what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.crypto.keys import SigningKey
from trm_broker.node import inbox
from trm_broker.node.broker_client import BrokerClient, BrokerError, InboxItem
from trm_broker.node.keyring import Keyring
from trm_broker.web.problems import Problem

log = structlog.get_logger("trm_broker.node.puller")

_jitter = secrets.SystemRandom()

#: Answers to an ack that are final for that message: no delivery of it to us (404), or the
#: broker does not take the ack (422, its code in ``reason``). Others are retried.
_FINAL_ACK_REFUSALS = frozenset({404, 422})


def _code(value: object) -> str | None:
    """The broker's refusal code (``ack_mismatch``), if it is one: never free text."""
    if isinstance(value, str) and len(value) <= 64 and value.isascii():
        return value if value.replace("_", "").isalnum() else None
    return None


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential, bounded by ``cap``, with jitter so that nodes do not retry in step."""
    ceiling = min(cap, base * 2 ** min(failures - 1, 30))
    return _jitter.uniform(ceiling / 2, ceiling)


class InboxPuller:
    """One long-poll loop per participant; ``start`` it, then ``stop`` it on shutdown.

    The cursor is kept in memory only: after a restart the loop starts without ``after`` and
    the broker returns everything still unacknowledged.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: Keyring,
        broker: BrokerClient,
        *,
        wait: float,
        limit: int = 20,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._broker = broker
        self._wait = wait
        self._limit = limit
        self._backoff = (backoff_base, backoff_cap)
        self._stopping = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        for participant in self._keys.participants():
            self._tasks[participant] = asyncio.create_task(
                self._run(participant), name=f"inbox-puller:{participant}"
            )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop fetching. A loop waiting on a long poll is cancelled; one taking a page
        finishes the item in hand first, for up to ``grace`` seconds. Cancelling is safe
        anyway: an item is acknowledged only after its commit, and answered again after."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        for participant, task in self._tasks.items():
            if participant not in self._busy:
                task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, participant: str) -> None:
        signer = self._keys.current[participant].signing
        cursor: int | None = None
        failures = 0
        structlog.contextvars.clear_contextvars()  # not what the task that started us had bound
        log.info("inbox_pull_started", participant=participant)
        while not self._stopping.is_set():
            try:
                page = await self._broker.fetch_inbox(
                    signer, after=cursor, wait=self._wait, limit=self._limit
                )
                self._busy.add(participant)
                try:
                    for item in page.items:
                        await self._take(participant, signer, item)
                        cursor = item.cursor  # taken, or refused for good: not again
                        if self._stopping.is_set():
                            break
                finally:
                    self._busy.discard(participant)
                failures = 0
            except Exception as exc:  # the loop must outlive any one failure
                # The item that failed is fetched again from the same cursor. Only the error's
                # class and status are logged: a message can carry personal data.
                failures += 1
                delay = backoff(failures, *self._backoff)
                log.warning(
                    "inbox_pull_failed",
                    participant=participant,
                    error=type(exc).__name__,
                    status=getattr(exc, "status", None),
                    failures=failures,
                    retry_in=round(delay, 2),
                )
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the puller is stopped."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the task would outlive its cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _take(self, participant: str, signer: SigningKey, item: InboxItem) -> None:
        """Receive one item as a push, commit it, then acknowledge it at the broker.

        An item the node refuses (a 4xx problem: bad receipt, bad signature, not ours) is
        logged and skipped; it stays unacknowledged and the broker dead-letters it in time.
        A transient failure (the broker unreachable, the database) propagates: retried.
        """
        body = json.dumps(item.push).encode()
        try:
            async with self._sessions() as session:
                result = await inbox.receive_once(session, body, self._keys, self._broker)
        except Problem as exc:
            if exc.status >= 500:
                raise
            log.warning(
                "inbox_item_refused",
                participant=participant,
                message_id=item.message_id,
                problem=exc.slug,
                status=exc.status,
            )
            return
        try:
            await self._broker.ack_inbox(signer, result.message_id, result.ack)
        except BrokerError as exc:
            if exc.status not in _FINAL_ACK_REFUSALS:
                raise
            log.warning(
                "inbox_ack_refused",
                participant=participant,
                message_id=result.message_id,
                status=exc.status,
                reason=_code(exc.problem.get("reason")),
            )
            return
        log.info(
            "message_rejected" if result.rejected else "message_received",
            participant=participant,
            message_id=result.message_id,
            via="pull",
            **({"code": result.code} if result.rejected else {}),
        )
