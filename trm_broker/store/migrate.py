"""Schema migrations (Alembic) and the start-up check that the schema is current."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class SchemaNotCurrentError(RuntimeError):
    """The database's schema is not at the code's head revision."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (runs its own event loop: call from sync code)."""
    from trm_broker.store.database import ensure_sqlite_folder

    ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def check_schema_current(engine: AsyncEngine) -> None:
    """Refuse to serve a database whose migrations are behind (or ahead of) this code."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrentError(
            f"database schema is at revision {current or 'none (empty database)'}, "
            f"this version of trm-broker needs {head}: run `trm-broker db upgrade` first"
        )
