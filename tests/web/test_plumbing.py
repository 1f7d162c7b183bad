"""Request ids, JSON log lines without data, and a 500 that leaks nothing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from trm_broker.logs import configure_logging
from trm_broker.web import middleware, problems

SECRET = "Jane Doe, born 1990-01-01"


def app_that_fails() -> FastAPI:
    app = FastAPI()
    problems.install(app)
    middleware.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError(f"could not process {SECRET}")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


async def test_unexpected_error_is_a_problem_without_the_exception_text(
    json_logs: io.StringIO,
) -> None:
    transport = httpx.ASGITransport(app=app_that_fails())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == problems.MEDIA_TYPE
    assert response.json()["type"] == "urn:trm-broker:problem:internal-error"
    assert SECRET not in response.text
    err = json_logs.getvalue()
    assert "ValueError" in err
    assert SECRET not in err


async def test_every_request_is_logged_as_json_with_its_request_id(
    json_logs: io.StringIO,
) -> None:
    transport = httpx.ASGITransport(app=app_that_fails())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        given = await client.get("/fine", headers={"x-request-id": "0123456789abcdef"})
        generated = await client.get("/fine?case=AT-1", headers={"x-request-id": "bad id\n"})
        # Words could name someone: a caller's id is kept only if hex or a UUID.
        worded = await client.get("/fine", headers={"x-request-id": "maria.lopez.2026"})
    assert given.headers["x-request-id"] == "0123456789abcdef"
    assert generated.headers["x-request-id"] != "bad id\n"
    assert worded.headers["x-request-id"] != "maria.lopez.2026"
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line]
    requests = [line for line in lines if line["event"] == "request"]
    assert [r["request_id"] for r in requests] == [
        "0123456789abcdef",
        generated.headers["x-request-id"],
        worded.headers["x-request-id"],
    ]
    assert all(r["route"] == "/fine" and r["status"] == 200 for r in requests)
    assert "AT-1" not in json.dumps(lines)  # query strings are not logged
    assert "maria" not in json.dumps(lines)


async def test_a_broken_log_stream_prints_no_traceback_with_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    stream.close()
    configure_logging("info", stream)
    try:
        transport = httpx.ASGITransport(app=app_that_fails())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/boom")).status_code == 500
    finally:
        logging.getLogger().handlers.clear()
    captured = capsys.readouterr()
    assert SECRET not in captured.err + captured.out


class _Sqlstate(Exception):
    """A driver error carrying a SQLSTATE, as asyncpg's do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"server said no to {SECRET}")
        self.sqlstate = sqlstate


class _SqliteCode(Exception):
    """A driver error carrying SQLite's result code name, as sqlite3's do."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no such table near {SECRET}")
        self.sqlite_errorname = name


def _raising(error: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    middleware.install(app)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, f"Connect call failed {SECRET}"),
        TimeoutError(),
        sa_exc.OperationalError(f"SELECT '{SECRET}'", {}, Exception("database is locked")),
        sa_exc.InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        sa_exc.DBAPIError("SELECT 1", {}, _Sqlstate("57P01")),  # admin shutdown
        sa_exc.DBAPIError("SELECT 1", {}, _Sqlstate("08006")),  # connection failure
        sa_exc.TimeoutError(f"QueuePool limit reached {SECRET}"),
        sa_exc.OperationalError("SELECT 1", {}, _SqliteCode("SQLITE_BUSY")),
        sa_exc.OperationalError("SELECT 1", {}, _SqliteCode("SQLITE_IOERR_READ")),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_unreachable_database_is_a_503_problem_wherever_it_is_met(
    error: Exception, json_logs: io.StringIO
) -> None:
    """Raised outside the request's session (authentication, a session of its own), a
    database outage is a 503 the caller can retry, never a 500; nothing of the error's text
    reaches the caller or the log."""
    transport = httpx.ASGITransport(app=_raising(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/fail")
    assert response.status_code == 503
    assert response.headers["content-type"] == problems.MEDIA_TYPE
    assert response.json()["type"] == "urn:trm-broker:problem:unavailable"
    assert SECRET not in response.text
    assert SECRET not in json_logs.getvalue()
    assert "database_unavailable" in json_logs.getvalue()


@pytest.mark.parametrize(
    "error",
    [
        sa_exc.IntegrityError("INSERT", {}, _Sqlstate("23505")),
        sa_exc.ProgrammingError("SELECT", {}, _Sqlstate("42P01")),
        # SQLite reports a missing table or a syntax error as an OperationalError too.
        sa_exc.OperationalError("SELECT", {}, _SqliteCode("SQLITE_ERROR")),
        sa_exc.DBAPIError("SELECT", {}, _Sqlstate("22001")),  # a value too long: a bug
    ],
    ids=lambda error: type(error).__name__,
)
async def test_other_database_errors_stay_internal_errors(
    error: Exception, json_logs: io.StringIO
) -> None:
    """A bug, logged at error level with where it was raised, never the error's text."""
    transport = httpx.ASGITransport(app=_raising(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/fail")
    assert response.status_code == 500
    assert response.json()["type"] == "urn:trm-broker:problem:internal-error"
    assert SECRET not in response.text
    [logged] = [
        json.loads(line)
        for line in json_logs.getvalue().splitlines()
        if '"unexpected_error"' in line
    ]
    assert logged["level"] == "error"
    assert any("test_plumbing.py" in frame and "in fail" in frame for frame in logged["trace"])
    assert SECRET not in json_logs.getvalue()
