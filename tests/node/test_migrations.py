"""The node's migrations (issue 18), on SQLite and PostgreSQL: from empty they give exactly
the models' schema; the previous release's database, made by its ``create_all`` and holding
its rows, is adopted and upgraded keeping them; the revisions form one additive line; the
`trm-broker node db` commands work as a real process; a PostgreSQL node refuses a schema
that is behind, a SQLite node upgrades its own.

The previous release's schema (commit d6d59a8, before issues 17 and 18) is written out
below as that release's models declared it, and its rows are written with SQL of its shape.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.node.harness import TOKEN, node_settings, running_node
from tests.store.test_upgrade import migration_problems
from trm_broker.crypto.keys import KeySet
from trm_broker.node import store
from trm_broker.node.migrate import (
    MIGRATIONS_DIR,
    VERSION_TABLE,
    NodeSchemaNotCurrentError,
    UnknownNodeSchemaError,
    alembic_config,
    current_state,
    head_revision,
    is_node_table,
    node_metadata,
    upgrade_async,
)
from trm_broker.node.store import ReceivedMessage, RejectedMessage, SentMessage
from trm_broker.store import migrate as broker_migrate
from trm_broker.store.database import create_engine
from trm_broker.store.models import NAMING

NG = KeySet.generate("ng.naptip")
AT = KeySet.generate("at.focal-point")

# --- the previous release's schema, as its models declared it (commit d6d59a8) -----------

_OLD_TYPES = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
)


def _old_type() -> sa.Enum:
    # What ``stored_enum(MessageType, "type", 32)`` was: VARCHAR(32) and a CHECK of the list.
    return sa.Enum(*_OLD_TYPES, name="type", native_enum=False, create_constraint=True, length=32)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


PREVIOUS_RELEASE = sa.MetaData(naming_convention=NAMING)
OLD_RECEIVED = sa.Table(
    "node_received",
    PREVIOUS_RELEASE,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), unique=True, nullable=False),
    sa.Column("type", _old_type(), nullable=False),
    *(sa.Column(name, sa.String(64), nullable=False) for name in ("case_ref", "sender")),
    sa.Column("recipient", sa.String(64), nullable=False),
    sa.Column("created_at", _utc(), nullable=False),
    sa.Column("received_at", _utc(), nullable=False),
    sa.Column("envelope_digest", sa.String(80), nullable=False),
    *(sa.Column(name, sa.Text, nullable=False) for name in ("header", "payload", "ack")),
)
OLD_REJECTED = sa.Table(
    "node_rejected",
    PREVIOUS_RELEASE,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("envelope_digest", sa.String(80), nullable=False),
    sa.Column("ack", sa.Text, nullable=False),
)
OLD_SENT = sa.Table(
    "node_sent",
    PREVIOUS_RELEASE,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("type", _old_type(), nullable=False),
    *(sa.Column(name, sa.String(64), nullable=False) for name in ("case_ref", "sender")),
    sa.Column("recipient", sa.String(64), nullable=False),
    sa.Column("sent_at", _utc(), nullable=False),
    sa.Column("envelope_digest", sa.String(80), nullable=False),
    sa.Column("receipt", sa.Text, nullable=False),
)
OLD_NONCES = sa.Table(
    "node_request_nonces",
    PREVIOUS_RELEASE,
    sa.Column("keyid", sa.String(64), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("expires_at", _utc(), index=True, nullable=False),
)

NOW = datetime.now(UTC).replace(microsecond=0)
RECEIVED_ID = "019ae000-0000-7000-8000-000000000001"
REJECTED_ID = "019ae000-0000-7000-8000-000000000002"
SENT_ID = "019ae000-0000-7000-8000-000000000003"
OLD_ROWS: dict[sa.Table, dict[str, Any]] = {
    OLD_RECEIVED: {
        "id": RECEIVED_ID,
        "type": "referral",
        "case_ref": "AT-2026-OLD-0001",
        "sender": AT.participant,
        "recipient": NG.participant,
        "created_at": NOW - timedelta(days=3),
        "received_at": NOW - timedelta(days=3, seconds=-2),
        "envelope_digest": "sha-256:" + "A" * 43,
        "header": json.dumps({"risk_level": "high"}),
        "payload": json.dumps({"person": {"age_group": "adult"}}),
        "ack": "ack-jws",
    },
    OLD_REJECTED: {"id": REJECTED_ID, "envelope_digest": "sha-256:" + "B" * 43, "ack": "nack"},
    OLD_SENT: {
        "id": SENT_ID,
        "type": "referral_response",
        "case_ref": "AT-2026-OLD-0001",
        "sender": NG.participant,
        "recipient": AT.participant,
        "sent_at": NOW - timedelta(days=2),
        "envelope_digest": "sha-256:" + "C" * 43,
        "receipt": "receipt-jws",
    },
    OLD_NONCES: {"keyid": "broker-key", "nonce": "n" * 22, "expires_at": NOW + timedelta(days=1)},
}


async def _write_old_rows(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for table, row in OLD_ROWS.items():
                await connection.execute(sa.insert(table).values(**row))
    finally:
        await engine.dispose()


async def _previous_release_made(url: str) -> None:
    """What the previous release's node left: its ``create_all``, no version table, rows."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(PREVIOUS_RELEASE.create_all)
    finally:
        await engine.dispose()
    await _write_old_rows(url)


# --- the schema as the database has it -----------------------------------------------------


def _schema(connection: Connection) -> dict[str, Any]:
    """Every node table as the database reports it: columns (type, nullability, default),
    keys, unique constraints, indexes, foreign keys and CHECK constraints (their text)."""
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    tables: dict[str, Any] = {}
    for table in sorted(t for t in inspector.get_table_names() if is_node_table(t)):
        pk = inspector.get_pk_constraint(table)
        tables[table] = {
            "columns": {
                c["name"]: (c["type"].compile(dialect=dialect), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            },
            "primary_key": (pk.get("name"), tuple(pk["constrained_columns"])),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                # PostgreSQL reports a unique constraint's index as an index too.
                if not i.get("duplicates_constraint")
            ),
            "foreign_keys": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "checks": sorted(
                (c["name"], " ".join(str(c["sqltext"]).split()))
                for c in inspector.get_check_constraints(table)
            ),
        }
    return tables


async def schema_of(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema)
    finally:
        await engine.dispose()


async def create_all(url: str, metadata: sa.MetaData) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "version_table": VERSION_TABLE,
            "include_name": lambda name, kind, _: kind != "table" or is_node_table(name or ""),
        },
    )
    return list(compare_metadata(context, node_metadata()))


@pytest.fixture
def empty_node_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    url: str = request.getfixturevalue("empty_postgres_database")
    return url


@pytest.fixture
def other_empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    url: str = request.getfixturevalue("another_empty_postgres_database")
    return url


# --- from empty: exactly the models' schema --------------------------------------------------


async def test_upgrade_from_empty_gives_exactly_the_models_schema(
    empty_node_database: str, other_empty_database: str
) -> None:
    assert await upgrade_async(empty_node_database) == head_revision()
    await create_all(other_empty_database, node_metadata())
    migrated, modelled = await schema_of(empty_node_database), await schema_of(other_empty_database)
    assert sorted(migrated) == sorted(node_metadata().tables)
    assert migrated == modelled
    engine = create_engine(empty_node_database)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()
    assert (
        await upgrade_async(empty_node_database) == head_revision()
    )  # a second run changes nothing


async def test_n0001_is_the_previous_releases_schema(
    empty_node_database: str, other_empty_database: str
) -> None:
    await upgrade_async(empty_node_database, "n0001")
    await create_all(other_empty_database, PREVIOUS_RELEASE)
    assert await schema_of(empty_node_database) == await schema_of(other_empty_database)


# --- the previous release's data survives --------------------------------------------------


async def _rows(url: str) -> dict[str, list[Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return {
                model.__tablename__: [
                    dict(row._mapping) for row in await connection.execute(sa.select(model))
                ]
                for model in (ReceivedMessage, RejectedMessage, SentMessage)
            }
    finally:
        await engine.dispose()


def _check_kept(rows: dict[str, list[Any]]) -> None:
    [received] = rows["node_received"]
    old = OLD_ROWS[OLD_RECEIVED]
    assert {k: received[k] for k in old} == old
    assert received["seq"] == 1
    for new in ("consent_ref", "restricted_at", "restriction", "purged_at"):
        assert received[new] is None
    assert rows["node_rejected"] == [OLD_ROWS[OLD_REJECTED]]
    assert rows["node_sent"] == [OLD_ROWS[OLD_SENT]]


@asynccontextmanager
async def _node(tmp_path: Path, url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        httpx.AsyncClient(base_url="http://broker.invalid") as nowhere,
        running_node(node_settings(tmp_path, [NG], url), nowhere) as node,
    ):
        yield node


async def test_a_database_at_n0001_with_rows_upgrades_to_head_keeping_them(
    empty_node_database: str, backend: str, tmp_path: Path
) -> None:
    url = empty_node_database
    await upgrade_async(url, "n0001")
    await _write_old_rows(url)
    if backend == "postgresql":  # refused until `trm-broker node db upgrade`
        with pytest.raises(NodeSchemaNotCurrentError, match="trm-broker node db upgrade"):
            async with _node(tmp_path, url):
                pass
        assert await upgrade_async(url) == head_revision()
    # On SQLite the node upgrades its own database at start.
    async with _node(tmp_path, url) as node:
        response = await node.get("/messages", headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        [message] = response.json()["messages"]
        old = OLD_ROWS[OLD_RECEIVED]
        assert (message["message_id"], message["seq"], message["restricted"]) == (
            RECEIVED_ID,
            1,
            False,
        )
        assert message["payload"] == json.loads(old["payload"])
        assert message["header"] == json.loads(old["header"])
    assert (await current_state(url)) == (head_revision(), None)
    _check_kept(await _rows(url))
    # A redelivery of an old message gets the answer it got before.
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            session = AsyncSession(bind=connection)
            answered = await store.answered(session, RECEIVED_ID)
            rejected = await store.answered(session, REJECTED_ID)
            await session.close()
    finally:
        await engine.dispose()
    assert answered == store.Answered(old["envelope_digest"], "ack-jws", rejected=False)
    assert rejected == store.Answered("sha-256:" + "B" * 43, "nack", rejected=True)


# --- an unversioned database of the previous release is adopted ------------------------------


async def test_the_previous_releases_create_all_database_is_adopted(
    database_url: str, other_empty_database: str
) -> None:
    """In a database the broker shares (its own schema and ``alembic_version`` in it)."""
    url = database_url
    await _previous_release_made(url)
    assert await current_state(url) == (None, "n0001")
    with capture_logs() as logs:
        assert await upgrade_async(url) == head_revision()
    events = [(e["event"], e.get("revision"), e.get("to_revision")) for e in logs]
    assert events == [
        ("node_schema_adopted", "n0001", None),
        ("node_schema_upgraded", None, head_revision()),
    ]
    assert {key for e in logs for key in e} <= {
        "event",
        "log_level",
        "revision",
        "from_revision",
        "to_revision",
    }
    _check_kept(await _rows(url))
    await create_all(other_empty_database, node_metadata())
    assert await schema_of(url) == await schema_of(other_empty_database)
    engine = create_engine(url)
    try:  # the broker's revision is untouched beside the node's
        assert await broker_migrate.current_revision(engine) == broker_migrate.head_revision()
        await broker_migrate.check_schema_current(engine)
    finally:
        await engine.dispose()


async def test_an_unversioned_database_of_no_release_is_refused(empty_node_database: str) -> None:
    url = empty_node_database
    await _previous_release_made(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE node_sent ADD COLUMN extra INTEGER"))
    finally:
        await engine.dispose()
    before = await schema_of(url)
    with pytest.raises(UnknownNodeSchemaError, match="match no release's schema"):
        await upgrade_async(url)
    assert await schema_of(url) == before  # left as it was, unversioned


# --- the revisions: one line, named, additive, constraints named with op.f ------------------

REVISION_FILES = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))


def test_the_revisions_form_one_line_named_in_order() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [head_revision()]
    line = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in line] == [f"n{n:04d}" for n in range(1, len(line) + 1)]
    assert [r.down_revision for r in line] == [None, *(r.revision for r in line[:-1])]
    assert len(REVISION_FILES) == len(line)
    for path, revision in zip(REVISION_FILES, line, strict=True):
        assert re.fullmatch(r"n\d{4}_[a-z0-9_]+\.py", path.name), path.name
        assert path.name.startswith(revision.revision + "_")


@pytest.mark.parametrize("path", REVISION_FILES, ids=lambda path: path.name)
def test_every_revision_only_adds(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert migration_problems(source) == []
    assert "contract step" not in source.lower()


_CONSTRAINTS = {
    "PrimaryKeyConstraint",
    "UniqueConstraint",
    "CheckConstraint",
    "ForeignKeyConstraint",
}
_NAMED_FIRST = {
    "create_index",
    "drop_index",
    "create_check_constraint",
    "create_unique_constraint",
    "create_foreign_key",
    "drop_constraint",
}


def _is_op_f(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "f"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "op"
    )


def unnamed_constraints(source: str) -> list[str]:
    """Constraints and indexes not named with ``op.f()`` (the models' naming convention
    would otherwise rename them, or leave them to the database's own names)."""
    problems = []
    for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)):
        name = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        if name in _CONSTRAINTS:
            given = next((k.value for k in call.keywords if k.arg == "name"), None)
            if not _is_op_f(given):
                problems.append(f"line {call.lineno}: {name} without name=op.f(...)")
        if name in _NAMED_FIRST and not (call.args and _is_op_f(call.args[0])):
            problems.append(f"line {call.lineno}: {name} without op.f(...)")
    return problems


@pytest.mark.parametrize("path", REVISION_FILES, ids=lambda path: path.name)
def test_every_revision_names_its_constraints_with_op_f(path: Path) -> None:
    assert unnamed_constraints(path.read_text(encoding="utf-8")) == []


def test_the_naming_check_finds_an_unnamed_constraint() -> None:
    assert unnamed_constraints('sa.UniqueConstraint("id", name="uq_t_id")') != []
    assert unnamed_constraints('sa.PrimaryKeyConstraint("id")') != []
    assert unnamed_constraints('op.create_index("ix_t_c", "t", ["c"])') != []
    assert unnamed_constraints('op.create_index(op.f("ix_t_c"), "t", ["c"])') == []


# --- `trm-broker node db` as the operator runs it ---------------------------------------------


def _cli(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env["TRM_NODE_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "trm_broker.cli", "node", "db", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_node_db_upgrade_and_current_from_the_command_line(
    empty_node_database: str,
) -> None:
    url, head = empty_node_database, head_revision()
    result = _cli(url, "current")
    assert (result.returncode, result.stdout) == (
        0,
        f"none: empty (`trm-broker node db upgrade` creates it; head {head})\n",
    )
    result = _cli(url, "upgrade", "n0001")
    assert (result.returncode, result.stdout) == (0, "node database schema upgraded to n0001\n")
    result = _cli(url, "current")
    assert (result.returncode, result.stdout) == (
        0,
        f"n0001 (behind: run `trm-broker node db upgrade`; head {head})\n",
    )
    result = _cli(url, "upgrade")
    assert (result.returncode, result.stdout) == (0, f"node database schema upgraded to {head}\n")
    [event] = [json.loads(line) for line in result.stderr.splitlines()]
    assert (event["event"], event["from_revision"], event["to_revision"]) == (
        "node_schema_upgraded",
        "n0001",
        head,
    )
    result = _cli(url, "current")
    assert (result.returncode, result.stdout) == (0, f"{head} (current; head {head})\n")


async def test_node_db_upgrade_adopts_the_previous_releases_database(
    empty_node_database: str,
) -> None:
    url = empty_node_database
    await _previous_release_made(url)
    result = _cli(url, "current")
    assert result.returncode == 0
    assert result.stdout.startswith("none: unversioned, made by an earlier release at n0001's")
    result = _cli(url, "upgrade")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events == ["node_schema_adopted", "node_schema_upgraded"]
    _check_kept(await _rows(url))


def _serve(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    files = node_settings(tmp_path, [NG], url).node_key_files
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env |= {
        "TRM_NODE_DATABASE_URL": url,
        "TRM_NODE_KEY_FILES": ",".join(map(str, files)),
        "TRM_NODE_API_TOKEN": TOKEN,
    }
    return subprocess.run(
        [sys.executable, "-m", "trm_broker.cli", "node", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_postgresql_node_refuses_to_start_on_a_schema_behind(
    empty_postgres_database: str, tmp_path: Path
) -> None:
    result = _serve(empty_postgres_database, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    assert "run `trm-broker node db upgrade` first" in result.stderr


async def test_a_sqlite_node_refuses_to_start_on_a_database_of_no_release(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'odd.db'}"
    await _previous_release_made(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE node_unknown (id INTEGER)"))
    finally:
        await engine.dispose()
    result = _serve(url, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    assert "match no release's schema" in result.stderr


async def test_a_node_serves_a_schema_a_newer_release_upgraded(
    node_postgres_database: str, tmp_path: Path
) -> None:
    """A revision this code does not know was written by a newer release's (additive)
    upgrade: this node keeps serving, as a broker does during a rolling upgrade."""
    engine = create_engine(node_postgres_database)
    try:
        async with engine.begin() as connection:
            newer = f"UPDATE {VERSION_TABLE} SET version_num = 'n9999'"  # noqa: S608
            await connection.execute(sa.text(newer))
    finally:
        await engine.dispose()
    async with _node(tmp_path, node_postgres_database) as node:
        response = await node.get("/messages", headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
