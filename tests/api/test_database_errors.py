"""A database error through the request's real ``Session``: a bug (a bad statement, a table
that is not there) is a 500 logged with its trace, an unreachable database a 503 to retry
later, on both backends; the log never holds the error's text (it may quote data)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.node.harness import TOKEN as NODE_TOKEN
from tests.node.harness import node_database, node_settings, running_node
from tests.support import PROBLEM, Broker, broker_settings, running_broker
from trm_broker.api.deps import Session
from trm_broker.crypto.keys import KeySet
from trm_broker.logs import configure_logging
from trm_broker.store.database import session_factory
from trm_broker.store.models import Refusal

#: Stands for personal data a statement might carry as a parameter.
CANARY = "Jane-Doe-1990-01-01"


@pytest.fixture
def json_logs(database_url: str) -> Iterator[io.StringIO]:
    """The JSON lines logged once the database is migrated."""
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:

        @b.app.get("/test/bad-statement")
        async def bad_statement(session: Session) -> None:
            await session.execute(text("SELEC :name"), {"name": CANARY})

        @b.app.get("/test/refusals")
        async def refusals(session: Session) -> dict[str, int]:
            rows = (await session.scalars(select(Refusal).where(Refusal.rule == CANARY))).all()
            return {"count": len(rows)}

        yield b


def lines(logs: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]


def assert_logged_as_bug(logs: io.StringIO) -> None:
    [error] = [line for line in lines(logs) if line["event"] == "unexpected_error"]
    assert error["level"] == "error"
    assert error["database_code"]  # 42601/42P01 (PostgreSQL) or SQLITE_ERROR
    # The trace names the frames down to the statement, never the error's text.
    assert any(frame.startswith("tests/api/test_database_errors.py:") for frame in error["trace"])
    assert any(frame.startswith("sqlalchemy/") for frame in error["trace"])
    assert CANARY not in logs.getvalue()
    assert "database_unavailable" not in logs.getvalue()


async def test_a_bad_statement_is_an_internal_error_with_its_trace(
    broker: Broker, json_logs: io.StringIO
) -> None:
    response = await broker.client.get("/test/bad-statement")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:trm-broker:problem:internal-error"
    assert CANARY not in response.text
    assert_logged_as_bug(json_logs)


async def test_a_missing_table_is_an_internal_error_not_an_outage(
    broker: Broker, json_logs: io.StringIO
) -> None:
    assert (await broker.client.get("/test/refusals")).json() == {"count": 0}
    async with broker.app.state.broker.engine.begin() as connection:
        await connection.execute(text("DROP TABLE refusals"))
    response = await broker.client.get("/test/refusals")
    assert response.status_code == 500
    assert response.json()["type"] == "urn:trm-broker:problem:internal-error"
    assert_logged_as_bug(json_logs)


async def test_an_unreachable_database_is_unavailable(
    broker: Broker, json_logs: io.StringIO, backend: str, tmp_path: Path
) -> None:
    # Nothing listens on port 1; SQLite cannot open a directory as its file.
    url = (
        f"sqlite+aiosqlite:///{tmp_path}"
        if backend == "sqlite"
        else "postgresql+asyncpg://postgres@127.0.0.1:1/trm"
    )
    unreachable = create_async_engine(url)
    state = broker.app.state.broker
    reachable, state.sessions = state.sessions, session_factory(unreachable)
    try:
        response = await broker.client.get("/test/refusals")
    finally:
        state.sessions = reachable
        await unreachable.dispose()
    assert response.status_code == 503
    assert response.json()["type"] == "urn:trm-broker:problem:unavailable"
    assert "Retry later" in response.json()["detail"]
    events = [line["event"] for line in lines(json_logs)]
    assert "database_unavailable" in events
    assert "unexpected_error" not in events


async def test_the_node_tells_a_missing_table_from_an_outage(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, json_logs: io.StringIO
) -> None:
    """The node's session goes through the same handler: a missing table is a 500 with its
    trace, never a 503 that would have a case worker wait for a fix that is not coming."""
    url = node_database(request, tmp_path, backend)
    settings = node_settings(tmp_path, [KeySet.generate("at.focal-point")], url)
    headers = {"authorization": f"Bearer {NODE_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url="http://broker") as nowhere,
        running_node(settings, nowhere) as node,
    ):
        assert (await node.get("/messages", headers=headers)).status_code == 200
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE node_received"))
        await engine.dispose()
        response = await node.get("/messages", headers=headers)
    assert response.status_code == 500
    assert response.json()["type"] == "urn:trm-broker:problem:internal-error"
    [error] = [line for line in lines(json_logs) if line["event"] == "unexpected_error"]
    assert any(frame.startswith("trm_broker/node/") for frame in error["trace"])
    assert "database_unavailable" not in json_logs.getvalue()
