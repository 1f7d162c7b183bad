"""Alembic environment of the node's database: async engine, SQLite and PostgreSQL alike.

The node's revisions are recorded in their own version table (``node_alembic_version``), so
a node and a broker may share one database, each with its own migrations.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection

from trm_broker.node.migrate import VERSION_TABLE, is_node_table, node_metadata
from trm_broker.settings import get_settings
from trm_broker.store.database import create_engine

config = context.config
target_metadata = node_metadata()


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().node_database_url


def _include(obj: Any, name: str | None, type_: str, reflected: bool, _: Any) -> bool:
    # A database shared with a broker: autogenerate compares the node's tables only.
    return type_ != "table" or is_node_table(name or "")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_object=_include,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        _check_foreign_keys(connection)


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    # As in the broker's migrations/env.py: SQLite changes a table's constraints by copying
    # it, which its foreign keys would refuse; they are off while migrations run and
    # checked once they are done.
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise RuntimeError(f"the migration broke foreign keys in: {', '.join(tables)}")


async def _run_async() -> None:
    engine = create_engine(_url())
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _foreign_keys_off)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
