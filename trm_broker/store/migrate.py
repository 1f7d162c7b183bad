"""Schema migrations (Alembic) and the start-up check that the schema is current (which
reads the revisions without Alembic: store/revisions.py)."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from trm_broker.store.revisions import recorded_revision, revisions

if TYPE_CHECKING:
    from alembic.config import Config


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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    return revisions(MIGRATIONS_DIR).head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (runs its own event loop: call from sync code)."""
    from alembic import command

    from trm_broker.store.database import ensure_sqlite_folder

    ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    return await recorded_revision(engine, "alembic_version")


def known_revisions() -> frozenset[str]:
    """Every revision this code's migrations know of."""
    return revisions(MIGRATIONS_DIR).known


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
