"""The schema revisions a migrations folder declares, and the one a database records, read
without Alembic.

Every start of `trm-broker serve`, `worker` and `node serve` (and every `/readyz`) checks
that the database's schema is current. Alembic answers that by importing itself and
executing every migration script, a few tenths of a second of CPU at each process's start
(more on a busy machine); the scripts' ``revision`` and ``down_revision`` are plain
assignments, so reading them costs a millisecond. ``tests/store/test_revisions.py``
checks these answers against Alembic's own for both folders. Upgrades still run through
Alembic (store/migrate.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import String, column, inspect, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Revisions:
    """A migrations folder's revisions: the head, and every revision it knows."""

    head: str
    known: frozenset[str]


def _declared(script: Path) -> tuple[str, str | None]:
    """A migration script's ``revision`` and ``down_revision`` (module-level constants)."""
    values: dict[str, object] = {}
    for statement in ast.parse(script.read_text(encoding="utf-8")).body:
        target: ast.expr
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                values[target.id] = value  # not a constant: refused below
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
        raise RuntimeError(f"{script} does not declare its revision as one string")
    return revision, down


@cache
def revisions(folder: Path) -> Revisions:
    """The revisions of the scripts in ``folder/versions`` (one line of history: one head)."""
    declared = [_declared(script) for script in sorted((folder / "versions").glob("*.py"))]
    known = frozenset(revision for revision, _ in declared)
    heads = known - {down for _, down in declared if down is not None}
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {folder} have {len(heads)} heads, not one")
    return Revisions(head=next(iter(heads)), known=known)


def recorded_in(connection: Connection, name: str) -> str | None:
    """The revision recorded in the version table ``name``, read on a sync ``connection``."""
    if not inspect(connection).has_table(name):
        return None
    query = select(column("version_num", String)).select_from(table(name))
    found = list(connection.execute(query).scalars())
    if len(found) > 1:
        raise RuntimeError(f"{name} records {len(found)} revisions; one line of history has one")
    return found[0] if found else None


async def recorded_revision(engine: AsyncEngine, name: str) -> str | None:
    """The revision the database records in the version table ``name`` (Alembic's); None
    for a database never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(recorded_in, name)
