"""Schema migrations (Alembic) and the start-up check that the schema is current."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


def _migrations_dir() -> Path:
    """Where the Alembic scripts are. A wheel (and so the container image) carries the
    repository's `migrations/` as `trm_broker/migrations` (pyproject.toml, package-dir);
    a source checkout or editable install has them beside the package."""
    packaged = resources.files("trm_broker") / "migrations"
    # Alembic needs a real folder, so a package imported from a zip falls through.
    if isinstance(packaged, Path) and (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR = _migrations_dir()


class SchemaNotCurrentError(RuntimeError):
    """The database's schema is behind this code's head revision (or empty)."""


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


def known_revisions() -> set[str]:
    """Every revision this code's migrations know of."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {revision.revision for revision in script.walk_revisions()}


async def check_schema_current(engine: AsyncEngine) -> None:
    """Refuse to serve a database whose migrations are behind this code.

    A revision this code does not know was written by a newer release's `trm-broker db
    upgrade`: migrations are additive first, then contract one release later
    (docs/operations.md, "Upgrades"), so that schema still fits this code, and replicas of
    the previous release keep serving (and stay ready) while a rolling upgrade replaces them.
    """
    current = await current_revision(engine)
    head = head_revision()
    if current == head or (current is not None and current not in known_revisions()):
        return
    raise SchemaNotCurrentError(
        f"database schema is at revision {current or 'none (empty database)'}, "
        f"this version of trm-broker needs {head}: run `trm-broker db upgrade` first"
    )
