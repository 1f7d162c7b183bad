"""Request dependencies: the broker's state and one database session per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from trm_broker.api.metrics import BrokerMetrics
from trm_broker.api.rate_limits import RateLimits
from trm_broker.crypto.broker_keys import RetiredKey
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.workflow import Rules
from trm_broker.ledger.note import NoteSigner
from trm_broker.settings import Settings
from trm_broker.web.problems import Conflict, Unavailable


@dataclass
class BrokerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    signing_key: SigningKey
    retired_keys: tuple[RetiredKey, ...] = ()
    metrics: BrokerMetrics = field(default_factory=BrokerMetrics)
    extras: dict[str, Any] = field(default_factory=dict)
    rate_limits: RateLimits = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limits = RateLimits.from_settings(self.settings)

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
        """The workflow's time limits (DESIGN.md §6), from the settings."""
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


def broker_state(request: Request) -> BrokerState:
    state: BrokerState = request.app.state.broker
    return state


State = Annotated[BrokerState, Depends(broker_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request. Endpoints commit at their boundary; services never do."""
    async with state.sessions() as session:
        try:
            yield session
        except IntegrityError as exc:
            await session.rollback()
            raise Conflict(
                "The change conflicts with one made at the same time; read the current state "
                "and retry."
            ) from exc
        except (OperationalError, DBAPIError) as exc:
            await session.rollback()
            raise Unavailable(
                "The database is unreachable; nothing was applied. Retry later."
            ) from exc


Session = Annotated[AsyncSession, Depends(db_session)]
