"""Request dependencies: the broker's state and one database session per request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from trm_broker.api.metrics import BrokerMetrics
from trm_broker.api.rate_limits import RateLimits
from trm_broker.crypto.broker_keys import RetiredKey
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.workflow import Rules
from trm_broker.ledger.note import NoteSigner
from trm_broker.settings import Settings
from trm_broker.store.registry_cache import RegistryCache
from trm_broker.web.problems import Conflict, database_unavailable, unavailable_problem


@dataclass
class BrokerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    signing_key: SigningKey
    retired_keys: tuple[RetiredKey, ...] = ()
    #: The key prepared for the next rotation (published, signing nothing yet).
    next_key: SigningKey | None = None
    metrics: BrokerMetrics = field(default_factory=BrokerMetrics)
    extras: dict[str, Any] = field(default_factory=dict)
    #: The registry's rows, valid while its version has not moved (store/registry_cache.py).
    registry: RegistryCache = field(default_factory=RegistryCache)
    rate_limits: RateLimits = field(init=False)
    #: SQLite: the accept path's writing transactions take turns in this process (FIFO),
    #: instead of polling for the file's write lock (busy_timeout), which under load can
    #: starve one request for seconds. ``None`` on PostgreSQL (row locks suffice).
    sqlite_writes: asyncio.Lock | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rate_limits = RateLimits.from_settings(self.settings)
        if self.engine.dialect.name == "sqlite":
            self.sqlite_writes = asyncio.Lock()

    def write_turn(self) -> WriteTurn:
        """One request's turn to write (see ``sqlite_writes``)."""
        return WriteTurn(self.sqlite_writes)

    def inbox_policy(self) -> InboxPolicy:
        return InboxPolicy(
            allow_loopback=self.settings.allow_loopback_inboxes,
            allow_private=self.settings.allow_private_inboxes,
        )

    def wake_dispatcher(self) -> None:
        wake = self.extras.get("wake_dispatcher")
        if wake is not None:
            wake()

    def wake_retention(self) -> None:
        wake = self.extras.get("wake_retention")
        if wake is not None:
            wake()

    def wake_sequencer(self) -> None:
        wake = self.extras.get("wake_sequencer")
        if wake is not None:
            wake()

    def inbox_signal(self) -> asyncio.Event:
        """An event set when the next message is accepted here (pull inbox long-polls)."""
        signal: asyncio.Event | None = self.extras.get("inbox_signal")
        if signal is None:
            signal = self.extras["inbox_signal"] = asyncio.Event()
        return signal

    def notify_inbox(self) -> None:
        signal: asyncio.Event | None = self.extras.pop("inbox_signal", None)
        if signal is not None:
            signal.set()

    def rules(self) -> Rules:
        """The workflow's time limits (docs/design.md §6), from the settings."""
        return Rules(
            risk_max_age=self.settings.risk_max_age,
            min_notice=self.settings.min_notice,
            reception_grace=self.settings.reception_grace,
            monitoring_period=self.settings.monitoring_period,
            monitoring_interval=self.settings.monitoring_interval,
            clock_skew=timedelta(seconds=self.settings.clock_skew_seconds),
        )

    def note_signer(self) -> NoteSigner:
        """Checkpoints are signed notes by the broker's key, named by the ledger's origin."""
        return NoteSigner(self.settings.ledger_origin, self.signing_key)


class WriteTurn:
    """Taken before a request's first write, released once its transaction has ended
    (committed or rolled back); a no-op without a lock."""

    def __init__(self, lock: asyncio.Lock | None) -> None:
        self._lock = lock
        self._held = False

    async def take(self) -> None:
        if self._lock is not None and not self._held:
            await self._lock.acquire()
            self._held = True

    def release(self) -> None:
        if self._lock is not None and self._held:
            self._held = False
            self._lock.release()


async def broker_state(request: Request) -> BrokerState:
    """The broker's shared parts. Async, as every dependency here: FastAPI runs a plain
    function in a worker thread, a hop per request (issue 21's profile)."""
    state: BrokerState = request.app.state.broker
    return state


State = Annotated[BrokerState, Depends(broker_state)]


#: SQLSTATE class 40, transaction rollback (PostgreSQL appendix A): a serialization failure
#: or a deadlock with a concurrent request, which the caller resolves by retrying.
_ROLLED_BACK_SQLSTATE = "40"


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request. Endpoints commit at their boundary; services never do.

    A database error is told apart by what the caller can do about it: a conflict with a
    concurrent change is a 409 (read again and retry), the database out of reach a 503
    (retry later), and anything else (a missing table, a bad statement) a bug: it goes on
    to the problem handler, which logs it with its trace and answers 500.
    """
    async with state.sessions() as session:
        try:
            yield session
        except DBAPIError as exc:
            await _rollback(session)
            sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
            if isinstance(exc, IntegrityError) or sqlstate.startswith(_ROLLED_BACK_SQLSTATE):
                raise Conflict(
                    "The change conflicts with one made at the same time; read the current "
                    "state and retry."
                ) from exc
            if database_unavailable(exc):
                raise unavailable_problem(exc) from exc
            raise


async def _rollback(session: AsyncSession) -> None:
    # The connection may be gone with the error: the rollback then fails too, and the
    # first error is the one to answer.
    with contextlib.suppress(DBAPIError, OSError):
        await session.rollback()


Session = Annotated[AsyncSession, Depends(db_session)]
