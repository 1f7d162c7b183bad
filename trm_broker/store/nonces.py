"""The nonce store that makes a signed request usable once (RFC 9421 §7.2.2, replay)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.store.direct import Query
from trm_broker.store.models import RequestNonce


async def remember(
    session: AsyncSession,
    keyid: str,
    nonce: str,
    expires_at: datetime,
    table: type[Any] = RequestNonce,
) -> bool:
    """Record a nonce; ``False`` when this key already used it (a replay).

    ``table`` is any mapped class with ``keyid``, ``nonce`` (the primary key) and
    ``expires_at``: the broker's, or a node's own.

    ``INSERT … ON CONFLICT DO NOTHING`` makes two concurrent uses of one nonce race
    safely on both backends: exactly one insert counts.
    """
    values = {"keyid": keyid, "nonce": nonce, "expires_at": expires_at}
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return await _insert(dialect, table).run(session, values) == 1


_INSERTS: dict[tuple[str, str], Query] = {}


def _insert(dialect: str, table: type[Any]) -> Query:
    """The statement, built once per table and backend (its compiled form is then cached)."""
    found = _INSERTS.get((dialect, table.__tablename__))
    if found is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        found = _INSERTS[dialect, table.__tablename__] = Query(
            insert(table.__table__).on_conflict_do_nothing()
        )
    return found


async def spend(
    session: AsyncSession,
    keyid: str,
    nonce: str,
    created: datetime,
    window: timedelta,
    table: type[Any] = RequestNonce,
) -> bool:
    """Spend a verified request's nonce; ``False`` when it was spent before (a replay).

    It is kept for twice the window: a signature is accepted while ``created`` lies within
    the window of the receiver's clock on either side, so no replay can outlive that.
    """
    return await remember(session, keyid, nonce, created + 2 * window, table)


async def prune(session: AsyncSession, now: datetime, table: type[Any] = RequestNonce) -> int:
    """Forget nonces whose signatures are past the acceptance window: they cannot replay."""
    result = await session.execute(delete(table).where(table.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
