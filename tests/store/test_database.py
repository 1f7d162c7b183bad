"""Connections as the broker opens them: SQLite's settings, PostgreSQL's pool."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from trm_broker.store.database import create_engine


def _secure_delete_off(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA secure_delete=OFF")
    cursor.close()


async def test_what_a_delete_frees_is_overwritten_whatever_the_sqlite_build(
    tmp_path: Path,
) -> None:
    """A purged payload must not stay readable in the file's free pages (principle 6). Some
    builds of SQLite zero freed space by default (Debian's), SQLite's own does not: open
    each connection as the latter would, before the broker's own settings apply."""
    path = tmp_path / "broker.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    event.listen(engine.sync_engine, "connect", _secure_delete_off, insert=True)
    secret = os.urandom(8000).hex().encode()  # larger than a page: it overflows
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
            await connection.exec_driver_sql("INSERT INTO t (b) VALUES (?)", (secret,))
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DELETE FROM t")
        async with engine.connect() as connection:
            on = await connection.exec_driver_sql("PRAGMA secure_delete")
            assert on.scalar_one() == 1
            await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await engine.dispose()
    stored = path.read_bytes()
    assert not any(secret[i : i + 32] in stored for i in range(0, len(secret) - 32, 32))


async def _backend_pid(engine: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_pooled_connection_the_server_closed_is_replaced_before_use(
    empty_postgres_database: str,
) -> None:
    """PostgreSQL restarted, or the link dropped, while connections sat in the pool: the
    next request gets a working connection, not an error. Connections idle for a while are
    checked before use (a busy pool skips the check: it costs three round trips)."""
    engine = create_engine(empty_postgres_database, idle_ping_seconds=0.2)
    dsn = make_url(empty_postgres_database).set(drivername="postgresql")
    try:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first  # the pool keeps it
        admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await asyncio.sleep(0.4)
        replaced = await _backend_pid(engine)
        assert replaced != first
    finally:
        await engine.dispose()
