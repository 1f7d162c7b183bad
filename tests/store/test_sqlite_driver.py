"""SQLite through the broker's engine: each statement is one hand-off to aiosqlite's
thread (store/sqlite_driver.py), and still behaves as the DB-API says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from trm_broker.store import sqlite_driver
from trm_broker.store.database import create_engine, session_factory

_META = MetaData()
_ITEMS = Table(
    "items",
    _META,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True, nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(_META.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function aiosqlite's thread is handed."""
    seen: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


async def test_a_statement_costs_one_hand_off_to_the_database_thread(
    engine: AsyncEngine, hand_offs: list[str]
) -> None:
    """SQLAlchemy's own adapter makes four (open a cursor, execute, fetch, close): each
    wakes a thread and the event loop, which under load cost more than the statement."""
    async with engine.connect() as connection:
        await connection.execute(select(_ITEMS))  # the connection is open and warm
        hand_offs.clear()
        await connection.execute(insert(_ITEMS).values(name="a"))
        await connection.execute(select(_ITEMS.c.name))
        assert len(hand_offs) == 2
        await connection.commit()
    assert hand_offs[2:] == ["commit"]  # and nothing when the pool takes it back


async def test_rows_counts_and_new_ids_come_back_as_the_db_api_says(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        first = await connection.execute(insert(_ITEMS).values(name="a"))
        await connection.execute(insert(_ITEMS), [{"name": "b"}, {"name": "c"}])  # executemany
        assert first.inserted_primary_key == (1,)
        changed = await connection.execute(
            update(_ITEMS).where(_ITEMS.c.name != "a").values(name=_ITEMS.c.name + "!")
        )
        assert changed.rowcount == 2
        rows = await connection.execute(select(_ITEMS.c.id, _ITEMS.c.name).order_by(_ITEMS.c.id))
        assert rows.keys() == ["id", "name"]
        assert rows.all() == [(1, "a"), (2, "b!"), (3, "c!")]
        returned = await connection.execute(
            insert(_ITEMS).values(name="d").returning(_ITEMS.c.id, _ITEMS.c.name)
        )
        assert returned.one() == (4, "d")
        nothing = await connection.execute(select(_ITEMS).where(_ITEMS.c.id > 99))
        assert nothing.first() is None
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1


async def test_a_refused_statement_raises_the_usual_error_and_leaves_the_connection_usable(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(_ITEMS).values(name="a"))
    async with engine.connect() as connection:
        with pytest.raises(IntegrityError):
            await connection.execute(insert(_ITEMS).values(name="a"))
        await connection.rollback()
        with pytest.raises(OperationalError):
            await connection.execute(text("SELECT * FROM no_such_table"))
        await connection.rollback()
        assert (await connection.execute(select(_ITEMS.c.name))).scalars().all() == ["a"]


async def test_what_one_session_writes_another_reads_once_committed(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as writer, sessions() as reader:
        await writer.execute(insert(_ITEMS).values(name="a"))
        assert (await reader.execute(select(_ITEMS.c.name))).scalars().all() == []
        await reader.rollback()
        await writer.commit()
        assert (await reader.execute(select(_ITEMS.c.name))).scalars().all() == ["a"]


async def test_large_results_stream_in_parts(engine: AsyncEngine) -> None:
    """Streamed results (server-side cursors) keep SQLAlchemy's own cursor."""
    async with engine.begin() as connection:
        await connection.execute(insert(_ITEMS), [{"name": f"n{i:04d}"} for i in range(1000)])
    async with engine.connect() as connection:
        stream = await connection.stream(select(_ITEMS.c.name).order_by(_ITEMS.c.id))
        names = [row.name async for row in stream]
    assert names == [f"n{i:04d}" for i in range(1000)]


async def test_a_connection_with_nothing_to_roll_back_goes_back_to_the_pool_at_no_cost(
    engine: AsyncEngine, hand_offs: list[str]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(insert(_ITEMS).values(name="a"))
        await connection.commit()
    hand_offs.clear()
    async with engine.connect() as connection:
        await connection.execute(insert(_ITEMS).values(name="b"))
    assert hand_offs == ["_run", "rollback"]  # left open: rolled back when given back
    async with engine.connect() as connection:
        assert (await connection.execute(select(_ITEMS.c.name))).scalars().all() == ["a"]


async def test_a_connection_made_by_the_callers_own_function_works_the_same(
    tmp_path: Path, hand_offs: list[str]
) -> None:
    """SQLAlchemy's ``async_creator``: the connection comes from the caller's function."""
    path = tmp_path / "own.db"
    engine = create_async_engine(
        "sqlite+aiosqlite://",
        module=sqlite_driver.dbapi(),
        async_creator=lambda: aiosqlite.connect(path),
    )
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_META.create_all)
            hand_offs.clear()
            await connection.execute(insert(_ITEMS).values(name="a"))
            assert hand_offs == ["_run"]
        async with engine.connect() as connection:
            assert (await connection.execute(select(_ITEMS.c.name))).scalars().all() == ["a"]
    finally:
        await engine.dispose()
    assert path.exists()
