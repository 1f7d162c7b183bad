"""Engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from trm_broker.store import sqlite_driver


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file on first use, so the default works out of the box."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue instead
    # of failing; foreign keys are off by default in SQLite. secure_delete overwrites what
    # a delete or update frees with zeros: without it a purged payload stays readable in the
    # file's free pages (principle 6; tests/e2e/test_no_personal_data.py).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


#: A pooled PostgreSQL connection idle longer than this is checked before use.
IDLE_PING_SECONDS = 1.0


def _idle_from(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_after_idle(seconds: float) -> Any:
    """A checkout hook that pings a connection only if it sat idle in the pool for more
    than ``seconds`` (a database restart or a dropped link shows there), and has the pool
    replace it if the ping fails. SQLAlchemy's ``pool_pre_ping`` pings at every checkout:
    three round trips (BEGIN, a query, ROLLBACK) before each request's own, under load too,
    when a connection was in use a millisecond ago."""

    def check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the driver's error for a closed connection
            raise DisconnectionError("The pooled connection is closed.") from exc

    return check


def _sqlite_dbapi(url: str) -> Any:
    """aiosqlite with one thread hand-off per statement (store/sqlite_driver.py); None
    (the dialect's own) for another SQLite driver named in the URL."""
    if make_url(url).get_driver_name() != "aiosqlite":
        return None
    return sqlite_driver.dbapi()


def create_engine(url: str, *, idle_ping_seconds: float = IDLE_PING_SECONDS) -> AsyncEngine:
    ensure_sqlite_folder(url)
    if is_sqlite(url):
        engine = create_async_engine(url, module=_sqlite_dbapi(url))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=10)
    event.listen(engine.sync_engine, "checkin", _idle_from)
    event.listen(engine.sync_engine, "checkout", _ping_after_idle(idle_ping_seconds))
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
