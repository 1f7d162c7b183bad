"""A reference node in-process, on a database of the test's choosing, with its app at hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.databases import copy_sqlite
from tests.support import WAIT_FOR_RECEIPT
from trm_broker.crypto.keys import KeySet
from trm_broker.node.app import create_node_app
from trm_broker.node.store import NodeBase
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine

TOKEN = "case-worker-token"


def node_database(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    """A node database with the node's schema at head: a copy of the migrated SQLite
    template, or a fresh PostgreSQL database (a PostgreSQL node does not migrate at start).
    A node given a new SQLite file instead migrates it at start, as a newcomer's does."""
    if backend == "sqlite":
        return copy_sqlite(request.getfixturevalue("node_sqlite_template"), tmp_path / "node.db")
    url: str = request.getfixturevalue("node_postgres_database")
    return url


def node_settings(
    tmp_path: Path, keysets: list[KeySet], database_url: str, **overrides: Any
) -> Settings:
    files = []
    for keyset in keysets:
        path = tmp_path / f"{keyset.participant}-{keyset.encryption.kid[:8]}.keys.json"
        if not path.exists():
            keyset.write(path)
        files.append(path)
    values: dict[str, Any] = {
        "node_database_url": database_url,
        "node_key_files": files,
        "node_api_token": TOKEN,
        "node_broker_url": "http://broker",
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_node(
    settings: Settings, broker: httpx.AsyncClient, *, wait_for_receipt: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The node app with its lifespan (its outbox sender and, in pull mode, its puller)
    running. The client sends ``Prefer: wait=30`` (tests/support.py ``WAIT_FOR_RECEIPT``)
    unless ``wait_for_receipt`` is off: each send then answers the receipt or the refusal."""
    app = create_node_app(settings, broker_http=broker)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://node",
            headers=WAIT_FOR_RECEIPT if wait_for_receipt else None,
        ) as client,
    ):
        yield client


async def stored_messages(node: httpx.AsyncClient) -> list[dict[str, Any]]:
    """What the node's case workers see: every message it stored, decrypted."""
    response = await node.get("/messages", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def rows(database_url: str, model: type[NodeBase]) -> list[dict[str, Any]]:
    """Every row of one of the node's tables, column by column."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(model.__table__))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()
