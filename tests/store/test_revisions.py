"""The start-up schema check reads the revisions without Alembic (store/revisions.py): its
answers are Alembic's own, for the broker's and the node's migrations alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from trm_broker.node import migrate as node_migrate
from trm_broker.store import migrate as broker_migrate
from trm_broker.store.database import create_engine
from trm_broker.store.revisions import recorded_revision, revisions

FOLDERS = {"broker": broker_migrate.MIGRATIONS_DIR, "node": node_migrate.MIGRATIONS_DIR}


def _alembic_script(folder: Path) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(folder))
    return ScriptDirectory.from_config(config)


@pytest.mark.parametrize("which", sorted(FOLDERS))
def test_head_and_known_revisions_are_alembics(which: str) -> None:
    script = _alembic_script(FOLDERS[which])
    read = revisions(FOLDERS[which])
    assert [read.head] == script.get_heads()
    assert read.known == {revision.revision for revision in script.walk_revisions()}


def test_a_second_head_or_an_unreadable_revision_is_refused(tmp_path: Path) -> None:
    versions = tmp_path / "two" / "versions"
    versions.mkdir(parents=True)
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision: str = "b"\ndown_revision: str | None = "a"\n')
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    with pytest.raises(RuntimeError, match="2 heads"):
        revisions(tmp_path / "two")
    computed = tmp_path / "computed" / "versions"
    computed.mkdir(parents=True)
    (computed / "a.py").write_text('revision = "a" + "b"\ndown_revision = None\n')
    with pytest.raises(RuntimeError, match="does not declare its revision as one string"):
        revisions(tmp_path / "computed")


def _alembic_current(connection: Connection, table: str) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": table})
    return context.get_current_revision()


async def test_the_recorded_revision_is_the_one_alembic_reads(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        assert await recorded_revision(engine, "alembic_version") is None
        await broker_migrate.upgrade_async(empty_database, "0009")
        await node_migrate.upgrade_async(empty_database)
        for table, expected in (
            ("alembic_version", "0009"),
            (node_migrate.VERSION_TABLE, node_migrate.head_revision()),
        ):
            async with engine.connect() as connection:
                alembics = await connection.run_sync(_alembic_current, table)
            assert await recorded_revision(engine, table) == alembics == expected
        with pytest.raises(broker_migrate.SchemaNotCurrentError, match="0009"):
            await broker_migrate.check_schema_current(engine)
    finally:
        await engine.dispose()


def test_serving_loads_no_alembic() -> None:
    """What the servers import at start leaves Alembic out (only `db upgrade` needs it)."""
    probe = (
        "import sys, trm_broker.cli.app, trm_broker.api.app, trm_broker.node.app;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
