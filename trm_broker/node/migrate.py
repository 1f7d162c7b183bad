"""The node's schema migrations (Alembic, ``trm_broker/node/migrations``), the adoption of a
database an earlier release made without them, and the check at start.

The node's revisions are recorded in ``node_alembic_version``, apart from the broker's
``alembic_version``: a node and a broker may share one database. On SQLite, the embedded
default, the node upgrades its own database at start (one process owns the file). On
PostgreSQL it refuses to start on a schema behind its code, as the broker does: the
operator runs `trm-broker node db upgrade` once per release (docs/node.md, "Upgrades").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from trm_broker.store.database import create_engine, ensure_sqlite_folder
from trm_broker.store.revisions import recorded_in, recorded_revision, revisions

if TYPE_CHECKING:
    from alembic.config import Config

log = structlog.get_logger("trm_broker.node.migrate")

#: Inside the package, so a wheel (and the container image) carries them.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The node's own version table: a database shared with a broker keeps both apart.
VERSION_TABLE = "node_alembic_version"


class NodeSchemaNotCurrentError(RuntimeError):
    """The node's database is behind this code's head revision (or empty, or unversioned)."""


class UnknownNodeSchemaError(RuntimeError):
    """An unversioned database whose node tables match no release's schema."""


def is_node_table(name: str) -> bool:
    return name.startswith("node_") and name != VERSION_TABLE


def node_metadata() -> MetaData:
    """Every table of the node's models (each module that declares some, imported)."""
    # Each module's tables join NodeBase when it is imported.
    from trm_broker.node import audit, consent_forms, users  # noqa: F401
    from trm_broker.node.store import NodeBase
    from trm_broker.node.web import sessions  # noqa: F401

    return NodeBase.metadata


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    return revisions(MIGRATIONS_DIR).head


def known_revisions() -> frozenset[str]:
    return revisions(MIGRATIONS_DIR).known


# --- adopting a database made with create_all by a release before the migrations -----------


@dataclass(frozen=True)
class _Shape:
    """The node's tables (and their columns) as a database at ``revision`` has them."""

    revision: str
    tables: dict[str, frozenset[str]]
    #: The message types' CHECK admits the types issue 17 added (``n0002`` widened it).
    wide_types: bool


def _columns(*names: str) -> frozenset[str]:
    return frozenset(names)


_N0001 = {
    "node_received": _columns(
        *("seq", "id", "type", "case_ref", "sender", "recipient", "created_at"),
        *("received_at", "envelope_digest", "header", "payload", "ack"),
    ),
    "node_rejected": _columns("id", "envelope_digest", "ack"),
    "node_sent": _columns(
        *("id", "type", "case_ref", "sender", "recipient", "sent_at", "envelope_digest"),
        "receipt",
    ),
    "node_request_nonces": _columns("keyid", "nonce", "expires_at"),
}
_N0002 = {
    **_N0001,
    "node_received": _N0001["node_received"]
    | _columns("consent_ref", "restricted_at", "restriction", "purged_at"),
    "node_withdrawn_consents": _columns("consent_ref", "case_ref", "learned_at", "learned_from"),
    "node_alerts_handled": _columns("alert_id", "handled_at"),
}
_N0003 = {
    **_N0002,
    "node_outbox": _columns(
        *("seq", "id", "type", "case_ref", "sender", "recipient", "state", "envelope"),
        *("earlier_envelopes", "after_id", "queued_at", "attempts", "next_attempt_at"),
        *("last_attempt_at", "last_error", "settled_at", "refusal"),
    ),
    "node_idempotency": _columns(
        *("caller", "route", "key", "fingerprint", "status", "body", "created_at"),
        "expires_at",
    ),
}
_N0004 = {
    **_N0003,
    "node_users": _columns(
        "name", "organisation", "role", "created_at", "disabled_at", "password_hash"
    ),
    "node_user_tokens": _columns(
        *("id", "user_name", "digest", "label", "created_at", "expires_at", "revoked_at"),
    ),
    "node_audit": _columns(
        *("seq", "at", "user_name", "organisation", "role", "action", "case_ref"),
        *("message_id", "outcome", "status", "request_id"),
    ),
}
#: What earlier code made with ``create_all``, before the node had migrations: the release
#: before issue 17 (commit d6d59a8) made ``n0001``'s shape; development versions of issues
#: 17 and 18 made the later ones. Frozen: a database made from now on is versioned.
_UNVERSIONED_SHAPES = (
    _Shape("n0001", _N0001, wide_types=False),
    _Shape("n0002", _N0002, wide_types=True),
    _Shape("n0003", _N0003, wide_types=True),
    _Shape("n0004", _N0004, wide_types=True),
)


def _unversioned_revision(connection: Connection) -> str | None:
    """The revision an unversioned database's node tables match; ``None``: it has none."""
    inspector = inspect(connection)
    tables = {
        name: frozenset(column["name"] for column in inspector.get_columns(name))
        for name in inspector.get_table_names()
        if is_node_table(name)
    }
    if not tables:
        return None
    checks = " ".join(
        str(check.get("sqltext", ""))
        for table in ("node_received", "node_sent")
        if table in tables
        for check in inspector.get_check_constraints(table)
    )
    wide = "pre_departure_contact" in checks
    for shape in _UNVERSIONED_SHAPES:
        if tables == shape.tables and wide == shape.wide_types:
            return shape.revision
    raise UnknownNodeSchemaError(
        "the node's database has no version table and its node tables "
        f"({', '.join(sorted(tables))}) match no release's schema: restore it from the "
        'backup taken before the upgrade, or see docs/node.md, "Upgrades"'
    )


def _state(connection: Connection) -> tuple[str | None, str | None]:
    """(the recorded revision, the revision an unversioned database matches)."""
    current = recorded_in(connection, VERSION_TABLE)
    if current is not None:
        return current, None
    return None, _unversioned_revision(connection)


async def _read_state(database_url: str) -> tuple[str | None, str | None]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_state)
    finally:
        await engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> str:
    """Bring the node's database to ``revision`` (runs its own event loop: call from sync
    code); an unversioned database an earlier release made is adopted first. Answers the
    revision it is at now."""
    from alembic import command

    ensure_sqlite_folder(database_url)
    config = alembic_config(database_url)
    current, unversioned = asyncio.run(_read_state(database_url))
    if unversioned is not None:
        command.stamp(config, unversioned)
        log.info("node_schema_adopted", revision=unversioned)
        current = unversioned
    command.upgrade(config, revision)
    now, _ = asyncio.run(_read_state(database_url))
    if now != current:
        log.info("node_schema_upgraded", from_revision=current, to_revision=now)
    return now or ""


async def upgrade_async(database_url: str, revision: str = "head") -> str:
    return await asyncio.to_thread(upgrade, database_url, revision)


async def current_state(database_url: str) -> tuple[str | None, str | None]:
    """(the node database's recorded revision, or the one an unversioned database matches)."""
    return await _read_state(database_url)


async def current_revision(engine: AsyncEngine) -> str | None:
    return await recorded_revision(engine, VERSION_TABLE)


async def check_schema_current(engine: AsyncEngine) -> None:
    """Refuse a node database behind this code, as the broker refuses its own
    (trm_broker/store/migrate.py): a revision this code does not know was written by a newer
    release's upgrade, whose migrations are additive, so it still fits this code."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head or (current is not None and current not in known_revisions()):
        return
    raise NodeSchemaNotCurrentError(
        f"the node's database schema is at revision {current or 'none'}, this version of "
        f"trm-broker needs {head}: run `trm-broker node db upgrade` first"
    )


async def ready_schema(database_url: str, engine: AsyncEngine) -> None:
    """At start: SQLite (embedded, one process owns the file) upgrades itself; any other
    database must be upgraded already (`trm-broker node db upgrade`). A SQLite database
    already at the head is left alone, without loading Alembic."""
    if make_url(database_url).get_backend_name() == "sqlite":
        if await current_revision(engine) != head_revision():
            await upgrade_async(database_url)
    else:
        await check_schema_current(engine)
