"""Request dependencies: the broker's state, one database session per request, operator auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.settings import Settings
from trm_broker.web.problems import Conflict, NotConfigured, Unauthenticated, Unavailable


@dataclass
class BrokerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    signing_key: SigningKey
    extras: dict[str, Any] = field(default_factory=dict)

    def inbox_policy(self) -> InboxPolicy:
        return InboxPolicy(
            allow_loopback=self.settings.allow_loopback_inboxes,
            allow_private=self.settings.allow_private_inboxes,
        )

    def wake_dispatcher(self) -> None:
        wake = self.extras.get("wake_dispatcher")
        if wake is not None:
            wake()


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


def require_operator(state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    """Registry changes need the operator's bearer token (TRM_OPERATOR_TOKEN)."""
    configured = state.settings.operator_token
    if configured is None:
        raise NotConfigured("Operator calls are disabled: set TRM_OPERATOR_TOKEN on the broker.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        raise Unauthenticated("Send the operator token as `Authorization: Bearer <token>`.")


Operator = Annotated[None, Depends(require_operator)]
