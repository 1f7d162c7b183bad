"""Request ids, JSON log lines without data, and a 500 that leaks nothing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

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
        given = await client.get("/fine", headers={"x-request-id": "req-12345678"})
        generated = await client.get("/fine?case=AT-1", headers={"x-request-id": "bad id\n"})
    assert given.headers["x-request-id"] == "req-12345678"
    assert generated.headers["x-request-id"] != "bad id\n"
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line]
    requests = [line for line in lines if line["event"] == "request"]
    assert [r["request_id"] for r in requests] == [
        "req-12345678",
        generated.headers["x-request-id"],
    ]
    assert all(r["route"] == "/fine" and r["status"] == 200 for r in requests)
    assert "AT-1" not in json.dumps(lines)  # query strings are not logged


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
