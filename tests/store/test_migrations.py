"""Models and migrations agree on both databases, and the server refuses a schema that is behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from tests.support import broker_settings, running_broker
from trm_broker.store.database import create_engine
from trm_broker.store.migrate import (
    SchemaNotCurrentError,
    current_revision,
    head_revision,
    upgrade_async,
)
from trm_broker.store.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(empty_database: str) -> None:
    # From an empty database, not the suite's migrated template: the migrations run here.
    await upgrade_async(empty_database)
    engine = create_engine(empty_database)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []


async def test_broker_refuses_to_start_on_a_database_that_is_behind(
    empty_database: str, tmp_path: Path
) -> None:
    with pytest.raises(SchemaNotCurrentError, match="trm-broker db upgrade"):
        async with running_broker(broker_settings(empty_database, tmp_path)):
            pass


async def test_upgrade_brings_an_empty_database_to_head_and_then_it_serves(
    empty_database: str, tmp_path: Path
) -> None:
    await upgrade_async(empty_database)
    async with running_broker(broker_settings(empty_database, tmp_path)) as broker:
        assert (await broker.client.get("/readyz")).status_code == 200
    await upgrade_async(empty_database)  # a second run is a no-op
    engine = create_engine(empty_database)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def test_serve_command_says_what_to_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env["TRM_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'broker.db'}"
    env["TRM_BROKER_KEY_FILE"] = str(tmp_path / "key.json")
    result = subprocess.run(
        [sys.executable, "-m", "trm_broker.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "run `trm-broker db upgrade` first" in result.stderr
