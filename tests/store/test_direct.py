"""Statements sent directly through asyncpg (store/direct.py) behave as the session's own: in
its transaction, with its types, its errors, and its recovery from a lost connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, event, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from trm_broker.domain.alerts import AlertKind
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.direct import Query
from trm_broker.store.models import AlertRecord, RequestNonce, table_of

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
NONCES = table_of(RequestNonce)
ADD_NONCE = Query(insert(NONCES))
READ_NONCE = Query(
    select(NONCES.c.keyid, NONCES.c.nonce, NONCES.c.expires_at).where(
        NONCES.c.nonce == bindparam("nonce")
    )
)
COUNT = Query(select(func.count()).select_from(NONCES))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def nonce(name: str, expires: datetime = NOW) -> dict[str, Any]:
    return {"keyid": "key-a", "nonce": name, "expires_at": expires}


async def test_a_statement_is_part_of_the_sessions_transaction(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:  # the session's first statement: its transaction begins
        assert await ADD_NONCE.run(session, nonce("rolled-back")) == 1
        assert (await COUNT.one(session, {}))[0] == 1
        await session.rollback()
    async with sessions() as session:
        assert (await COUNT.one(session, {}))[0] == 0  # nothing was written on its own
        await session.execute(select(1))  # begun by the session this time
        assert await ADD_NONCE.run(session, nonce("committed")) == 1
        await session.commit()
        assert await ADD_NONCE.run(session, nonce("second")) == 1  # a new transaction
        await session.commit()
    async with sessions() as session:
        assert (await COUNT.one(session, {}))[0] == 2


async def test_columns_are_written_and_read_with_their_types(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        later = datetime(2026, 12, 7, 14, 0, tzinfo=UTC) + timedelta(microseconds=5)
        await ADD_NONCE.run(session, nonce("typed", later))
        row = await READ_NONCE.first(session, {"nonce": "typed"})
        assert row is not None
        assert (row.keyid, row.nonce, row.expires_at) == ("key-a", "typed", later)
        assert row.expires_at.tzinfo is not None
        assert await READ_NONCE.first(session, {"nonce": "missing"}) is None
        with pytest.raises(StatementError) as naive:  # the column type's own check
            await ADD_NONCE.run(session, nonce("naive", datetime(2026, 12, 7, 12, 0)))
        assert isinstance(naive.value.orig, ValueError)


async def test_a_stored_enum_is_written_and_read_as_its_member(engine: AsyncEngine) -> None:
    alerts = table_of(AlertRecord)
    add = Query(insert(alerts))
    read = Query(select(alerts.c.kind).where(alerts.c.id == bindparam("id")))
    row = {
        "id": "alert-1",
        "kind": AlertKind.RECEPTION_OVERDUE,
        "case_ref": "AT-2026-1",
        "party1": "at.focal-point",
        "party2": None,
        "party3": None,
        "raised_at": NOW,
        "closed_at": None,
    }
    async with session_factory(engine)() as session:
        await add.run(session, row)
        kind = (await read.one(session, {"id": "alert-1"})).kind
        assert kind is AlertKind.RECEPTION_OVERDUE  # the member, as the session reads it
        with pytest.raises(StatementError) as unknown:  # not one of its values: not sent
            await add.run(session, {**row, "id": "alert-2", "kind": "no-such-kind"})
        assert isinstance(unknown.value.orig, LookupError)
        await session.rollback()


async def test_a_conflict_is_an_integrity_error_and_the_session_recovers(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        await ADD_NONCE.run(session, nonce("twice"))
        await session.commit()
    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await ADD_NONCE.run(session, nonce("twice"))
        await session.rollback()
        assert await ADD_NONCE.run(session, nonce("after")) == 1
        await session.commit()
    async with sessions() as session:
        assert (await COUNT.one(session, {}))[0] == 2


async def test_statements_are_seen_by_the_engines_listeners(engine: AsyncEngine) -> None:
    seen: list[tuple[str, bool]] = []

    def listener(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        seen.append((sql.split(None, 1)[0].upper(), cursor is None))

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with session_factory(engine)() as session:
            await ADD_NONCE.run(session, nonce("seen"))
            await READ_NONCE.first(session, {"nonce": "seen"})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)
    direct = engine.dialect.driver == "asyncpg"  # PostgreSQL: sent without a cursor
    assert seen == [("INSERT", direct), ("SELECT", direct)]


async def test_a_lost_connection_is_an_error_and_the_next_session_works(
    postgres_database: str,
) -> None:
    engine = create_engine(postgres_database)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with sessions() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as lost:
                await ADD_NONCE.run(session, nonce("lost"))
            assert lost.value.connection_invalidated
        async with sessions() as session:
            assert await ADD_NONCE.run(session, nonce("next")) == 1
            await session.commit()
        async with sessions() as session:
            assert (await COUNT.one(session, {}))[0] == 1
    finally:
        await engine.dispose()


async def test_a_list_expanded_at_execution_goes_through_the_session(engine: AsyncEngine) -> None:
    some = Query(
        select(NONCES.c.nonce)
        .where(NONCES.c.nonce.in_(bindparam("names", expanding=True)))
        .order_by(NONCES.c.nonce)
    )
    async with session_factory(engine)() as session:
        for name in ("a", "b", "c"):
            await ADD_NONCE.run(session, nonce(name))
        found = await some.rows(session, {"names": ["a", "c", "x"]})
        assert [row.nonce for row in found] == ["a", "c"]
