"""Users of a node's organisations, what they do in its audit log, password logins, and the
administrator's token (issue 18). The world: a node serving `ng.naptip` and `ng.shelter`
(tests/security/node_access_world.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from tests.node.harness import node_settings, rows, running_node
from tests.security.node_access_world import (
    AT,
    NAPTIP,
    SHELTER,
    NodeWorld,
    node_world,
    payloads,
)
from tests.support import broker_settings, running_broker
from trm_broker.logs import configure_logging
from trm_broker.node import users
from trm_broker.node.audit import AuditEntry
from trm_broker.node.sign_in_throttle import PER_USER
from trm_broker.node.users import NodeUserToken, Role
from trm_broker.store.database import create_engine, session_factory

CANARY = "CANARY-family-situation-7Q2"


@pytest.fixture
async def world(sqlite_database: str, tmp_path: Path) -> AsyncIterator[NodeWorld]:
    async with (
        running_broker(broker_settings(sqlite_database, tmp_path)) as broker,
        node_world(broker, tmp_path) as world,
    ):
        yield world


async def audit(world: NodeWorld, caller: str, **params: Any) -> list[dict[str, Any]]:
    response = await world.node.get("/audit", params=params, headers=world.auth(caller))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def test_a_supervisor_reads_who_did_what_in_which_case_and_never_the_content(
    world: NodeWorld,
) -> None:
    now = datetime.now(UTC)
    assessment = payloads(now)["risk-assessment"] | {"family_situation": CANARY}
    sent = await world.node.post(
        f"/cases/{world.case['A']}/risk-assessment",
        json={
            "recipient": AT.participant,
            "payload": assessment,
            "consent_ref": world.consent["A"],
        },
        headers=world.auth("naptip.cw"),
    )
    assert sent.status_code == 201, sent.text
    refused = await world.node.post(  # a read-only user tries to send: refused, and recorded
        f"/cases/{world.case['A']}/closure",
        json={"recipient": AT.participant, "payload": {"reason": "other"}},
        headers=world.auth("naptip.ro"),
    )
    assert refused.status_code == 403
    read = await world.node.get("/messages", headers=world.auth("naptip.ro"))
    assert read.status_code == 200

    entries = await audit(world, "naptip.sup", case_ref=world.case["A"])
    mine = [
        e
        for e in entries
        if e["request_id"] in {sent.headers["x-request-id"], refused.headers["x-request-id"]}
    ]
    assert [
        (e["user"], e["role"], e["action"], e["message_id"], e["outcome"], e["status"])
        for e in mine
    ] == [
        (
            "naptip.cw",
            "case_worker",
            "POST /cases/{case_ref}/risk-assessment",
            sent.json()["message_id"],
            "ok",
            201,
        ),
        ("naptip.ro", "read_only", "POST /cases/{case_ref}/closure", None, "refused", 403),
    ]
    assert all(
        e["organisation"] == NAPTIP.participant and e["case_ref"] == world.case["A"] for e in mine
    )
    everything = await audit(world, "naptip.sup", limit=500)
    reading = [e for e in everything if e["request_id"] == read.headers["x-request-id"]]
    assert [(e["user"], e["action"], e["outcome"]) for e in reading] == [
        ("naptip.ro", "GET /messages", "ok")
    ]
    # The shelter's supervisor sees none of it; the log is paged by seq.
    assert not {e["user"] for e in await audit(world, "shelter.sup", limit=500)} - {"shelter.sup"}
    page = await audit(world, "naptip.sup", limit=2)
    after = await audit(world, "naptip.sup", after=page[-1]["seq"], limit=500)
    full = await audit(world, "naptip.sup", limit=500)
    assert [e["seq"] for e in page + after] == [e["seq"] for e in full][: len(page + after)]
    # No content, anywhere in the table.
    stored = json.dumps(await rows(world.database_url, AuditEntry), default=str)
    assert CANARY not in stored
    assert "family_situation" not in stored


async def test_an_audited_read_is_not_answered_when_the_audit_log_cannot_be_written(
    world: NodeWorld,
) -> None:
    engine = create_engine(world.database_url)
    try:
        async with engine.begin() as connection:
            # The database refuses every audit row, as a full disk would.
            await connection.execute(
                text(
                    "CREATE TRIGGER audit_refused BEFORE INSERT ON node_audit "
                    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )
    finally:
        await engine.dispose()
    response = await world.node.get("/messages", headers=world.auth("naptip.cw"))
    assert response.status_code == 503
    assert "messages" not in response.text
    assert response.json()["type"] == "urn:trm-broker:problem:unavailable"


async def test_a_user_with_a_password_logs_in_for_a_token_that_expires(world: NodeWorld) -> None:
    engine = create_engine(world.database_url)
    try:
        async with session_factory(engine)() as session:
            await users.set_password(session, "shelter.ro", "a long enough passphrase")
            await session.commit()
        wrong = await world.node.post(
            "/login", json={"user": "shelter.ro", "password": "a long enough passphrasE"}
        )
        unknown = await world.node.post(
            "/login", json={"user": "nobody.here", "password": "a long enough passphrase"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["detail"] == unknown.json()["detail"]  # tells nobody who exists

        login = await world.node.post(
            "/login", json={"user": "shelter.ro", "password": "a long enough passphrase"}
        )
        assert login.status_code == 201, login.text
        answer = login.json()
        assert (answer["user"], answer["organisation"], answer["role"]) == (
            "shelter.ro",
            SHELTER.participant,
            "read_only",
        )
        auth = {"authorization": f"Bearer {answer['token']}"}
        read = await world.node.get("/messages", headers=auth)
        assert read.status_code == 200
        assert {m["recipient"] for m in read.json()["messages"]} == {SHELTER.participant}
        assert (await world.node.post("/messages", json={}, headers=auth)).status_code == 403

        stored = await rows(world.database_url, NodeUserToken)
        assert answer["token"] not in json.dumps(stored, default=str)  # its digest only
        async with session_factory(engine)() as session:
            expired = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(
                update(NodeUserToken)
                .where(NodeUserToken.id == answer["token_id"])
                .values(expires_at=expired)
            )
            await session.commit()
        assert (await world.node.get("/messages", headers=auth)).status_code == 401
    finally:
        await engine.dispose()
    logins = [
        e for e in await audit(world, "shelter.sup", limit=500) if e["action"] == "POST /login"
    ]
    assert [(e["user"], e["outcome"]) for e in logins] == [
        ("shelter.ro", "refused"),
        ("shelter.ro", "ok"),
    ]


async def test_passwords_cannot_be_guessed_at_speed_through_login(world: NodeWorld) -> None:
    """After PER_USER wrong passwords for one user, `POST /login` refuses even the right one
    for a while (429 with Retry-After), as the web app's sign-in form does (one budget for
    both); other users log in as before."""
    engine = create_engine(world.database_url)
    try:
        async with session_factory(engine)() as session:
            await users.set_password(session, "shelter.ro", "a long enough passphrase")
            await users.set_password(session, "shelter.sup", "another long passphrase")
            await session.commit()
    finally:
        await engine.dispose()
    for attempt in range(PER_USER):
        wrong = await world.node.post(
            "/login", json={"user": "shelter.ro", "password": f"guess number {attempt}"}
        )
        assert wrong.status_code == 401
    right = await world.node.post(
        "/login", json={"user": "shelter.ro", "password": "a long enough passphrase"}
    )
    assert right.status_code == 429, right.text
    assert int(right.headers["retry-after"]) > 60
    assert right.json()["type"] == "urn:trm-broker:problem:rate-limited"
    assert "wait" in right.json()["detail"]
    other = await world.node.post(
        "/login", json={"user": "shelter.sup", "password": "another long passphrase"}
    )
    assert other.status_code == 201, other.text
    logins = [
        (e["user"], e["outcome"], e["status"])
        for e in await audit(world, "shelter.sup", limit=500)
        if e["action"] == "POST /login"
    ]
    assert logins.count(("shelter.ro", "refused", 429)) == 1, logins  # a finding, audited


def test_passwords_are_stored_as_argon2id() -> None:
    account = users.NodeUser(name="ada", organisation="ng.shelter", role=Role.CASE_WORKER)
    account.password_hash = users._HASHER.hash("correct horse battery")
    assert account.password_hash.startswith("$argon2id$")
    assert users.password_matches(account, "correct horse battery")
    assert not users.password_matches(account, "correct horse batterY")
    assert not users.password_matches(None, "correct horse battery")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize("served", [[NAPTIP], [NAPTIP, SHELTER]])
async def test_the_administrators_token_on_a_node_of_two_organisations_is_warned_of(
    tmp_path: Path, log_lines: io.StringIO, served: list[Any]
) -> None:
    settings = node_settings(tmp_path, served, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    async with running_node(settings, None):  # type: ignore[arg-type]
        pass
    warnings = [
        line
        for line in map(json.loads, log_lines.getvalue().splitlines())
        if line["event"] == "admin_token_crosses_organisations"
    ]
    assert len(warnings) == (len(served) > 1)
    assert "harness" not in log_lines.getvalue()


async def test_a_node_with_no_way_in_says_how_to_make_one(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    settings = node_settings(tmp_path, [NAPTIP], database, node_api_token=None)
    async with running_node(settings, None) as node:  # type: ignore[arg-type]
        closed = await node.get("/messages", headers={"authorization": "Bearer guess"})
        assert closed.status_code == 503
        assert "trm-broker node users add" in closed.json()["detail"]
        engine = create_engine(database)
        try:
            async with session_factory(engine)() as session:
                issued = await users.add_user(
                    session, "ada", NAPTIP.participant, Role.READ_ONLY, datetime.now(UTC)
                )
                await session.commit()
        finally:
            await engine.dispose()
        assert (
            await node.get("/messages", headers={"authorization": "Bearer guess"})
        ).status_code == 401
        opened = await node.get("/messages", headers={"authorization": f"Bearer {issued.token}"})
        assert opened.status_code == 200
