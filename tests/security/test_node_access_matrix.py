# ruff: noqa: E501
"""The node's access matrix (issue 18): every route of the node by every kind of caller, with
an object of the caller's own organisation or of the other organisation the node serves,
with the expected outcome of each cell written out below for review.

The node serves `ng.naptip` and `ng.shelter` (tests/security/node_access_world.py). Callers:

- ``N.cw`` ``N.sup`` ``N.ro``: NAPTIP's case worker, supervisor and read-only user;
- ``S.cw`` ``S.sup`` ``S.ro``: the shelter's;
- ``ADM``: the administrator's token (TRM_NODE_API_TOKEN), which acts for both;
- ``REV``: a revoked token; ``DIS``: a disabled user's token; ``GONE``: a user of an
  organisation the node does not serve; ``---``: no credential.

Outcomes: ``OK`` 2xx; ``PASS`` the node let the call through, signed as the caller's own
organisation, and the broker judged it (2xx, or the broker's refusal relayed: the workflow
lets NAPTIP send few of these in case A); ``400`` the administrator must name the
organisation; ``401``/``403`` the node's own refusal (`unauthenticated`, `forbidden`);
``B404`` the broker's "not found", relayed (a case the organisation is no party to); ``404``
the node's own "not found" (a message another organisation sent, in the node's outbox).
The web app's pages (``/web``) take no bearer token, only a signed-in session
(tests/node/web/): ``SIGN_IN`` a page answers 303 to the sign-in page, and shows nothing;
``PAGE403`` a form post is refused (403, a page: no session's CSRF token); ``303`` a
redirect within the app (the language switch).

Each cell asserts the outcome; that an allowed read holds the caller's organisation's data
only (and all of it); that no answer shows a message id or case reference of the other
organisation; that a refused write leaves the broker's state as it was (nothing was signed as
anyone); and, at the end, that each call of a known caller is in the node's audit log once,
with its user, organisation, action and status, and calls of nobody are not. A route the
table does not list fails :func:`test_the_table_covers_every_route_of_the_node`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select

from tests.security.node_access_world import (
    ADMIN,
    ADMIN_TOKEN,
    AT,
    CALLERS,
    NAPTIP,
    NOBODY,
    SHELTER,
    USERS,
    NodeWorld,
    node_world,
    organisation,
    other,
    payloads,
)
from tests.security.test_access_matrix import app_routes
from tests.security.world import consent_body, fingerprint
from tests.support import PROBLEM, broker_settings, running_broker
from trm_broker.node import users
from trm_broker.node.app import CASE_CALLS, create_node_app
from trm_broker.node.audit import AuditEntry
from trm_broker.node.sign_in_throttle import SignInThrottle
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import Message

Expect = Literal["OK", "PASS", "B404", "SIGN_IN", "PAGE403", 303, 400, 401, 403, 404]
OK: Expect = "OK"
PASS: Expect = "PASS"
B404: Expect = "B404"
SIGN_IN: Expect = "SIGN_IN"
PAGE403: Expect = "PAGE403"

Row = tuple[Expect, ...]
ALL_OK: Row = (OK,) * 11
UNSIGNED: Row = (401,) * 11
# fmt: off
#: Callers:           N.cw  N.sup N.ro  S.cw  S.sup S.ro  ADM   REV  DIS  GONE ---
SENDS_OWN: Row =      (PASS, 403,  403,  PASS, 403,  403,  400,  401, 401, 403, 401)
SENDS_AS_OTHER: Row = (403,  403,  403,  403,  403,  403,  PASS, 401, 401, 403, 401)
READS: Row =          (OK,   OK,   OK,   OK,   OK,   OK,   OK,   401, 401, 403, 401)

EXPECTED: dict[tuple[str, str], tuple[Expect, ...]] = {
    ("GET /healthz", "-"): ALL_OK,
    ("GET /openapi.json", "-"): ALL_OK,
    ("GET /docs", "-"): ALL_OK,
    ("GET /docs/oauth2-redirect", "-"): ALL_OK,
    ("GET /redoc", "-"): ALL_OK,
    ("POST /inbox", "-"): UNSIGNED,  # the broker's pushes only, signed
    ("POST /login", "wrong password"): UNSIGNED,
    # The web app: a bearer token is no session (tests/node/web/ test the signed-in pages).
    ("GET /web/sign-in", "-"): ALL_OK,
    ("POST /web/sign-in", "no form token"): (PAGE403,) * 11,
    ("POST /web/sign-out", "-"): (SIGN_IN,) * 11,
    ("GET /web/language/{code}", "-"): (303,) * 11,
    ("Mount /web/static", "-"): ALL_OK,
    ("GET /web/", "-"): (SIGN_IN,) * 11,
    ("GET /web/find", "-"): (SIGN_IN,) * 11,
    ("GET /web/cases/{case_ref}", "case A"): (SIGN_IN,) * 11,
    ("GET /web/messages/{message_id}", "NAPTIP's"): (SIGN_IN,) * 11,
    ("GET /web/audit", "-"): (SIGN_IN,) * 11,
    ("GET /web/cases/{case_ref}/send/{message_type}", "case A"): (SIGN_IN,) * 11,
    ("POST /web/cases/{case_ref}/send/{message_type}", "case A"): (SIGN_IN,) * 11,
    ("GET /web/returns/{case_ref}", "case A"): (SIGN_IN,) * 11,
    ("GET /web/settings", "-"): (SIGN_IN,) * 11,
    ("POST /web/settings", "-"): (SIGN_IN,) * 11,
    ("GET /web/new-case", "-"): (SIGN_IN,) * 11,
    ("POST /web/new-case", "-"): (SIGN_IN,) * 11,
    ("GET /web/cases/{case_ref}/consent", "case A"): (SIGN_IN,) * 11,
    ("POST /web/cases/{case_ref}/consent", "case A"): (SIGN_IN,) * 11,
    ("GET /web/consent-forms/{form_id}", "-"): (SIGN_IN,) * 11,
    ("POST /web/consent-forms/{form_id}", "-"): (SIGN_IN,) * 11,
    ("GET /web/consent-forms/{form_id}/file", "-"): (SIGN_IN,) * 11,
    ("GET /messages", "-"): READS,
    ("GET /messages/{message_id}", "NAPTIP's"):   (OK,  OK,  OK,  404,  404,  404,  OK,  401, 401, 403, 401),
    ("GET /messages/{message_id}", "shelter's"):  (404, 404, 404, OK,   OK,   OK,   OK,  401, 401, 403, 401),
    ("GET /outbox", "-"): READS,
    ("GET /outbox/{message_id}", "NAPTIP's"):     (OK,  OK,  OK,  404,  404,  404,  OK,  401, 401, 403, 401),
    ("GET /sent", "-"): READS,
    ("GET /sent/{message_id}", "NAPTIP's"):       (OK,  OK,  OK,  404,  404,  404,  OK,  401, 401, 403, 401),
    ("GET /cases/{case_ref}", "case A"):          (OK,  OK,  OK,  OK,   OK,   OK,   400, 401, 401, 403, 401),
    ("GET /cases/{case_ref}", "case A as other"): (403, 403, 403, 403,  403,  403,  OK,  401, 401, 403, 401),
    ("GET /cases/{case_ref}", "case B"):          (OK,  OK,  OK,  B404, B404, B404, 400, 401, 401, 403, 401),
    ("GET /audit", "-"):                          (403, OK,  403, 403,  OK,   403,  OK,  401, 401, 403, 401),
    ("POST /messages", "own"): SENDS_OWN,
    ("POST /messages", "as other"): SENDS_AS_OTHER,
    ("POST /consents", "own"): SENDS_OWN,
    ("POST /consents", "as other"): SENDS_AS_OTHER,
    ("POST /consents/{consent_id}/withdraw", "own"): SENDS_OWN,
    ("POST /consents/{consent_id}/withdraw", "as other"): SENDS_AS_OTHER,
    **{
        (f"POST /cases/{{case_ref}}/{call.path}", obj): row
        for call in CASE_CALLS
        for obj, row in (("own", SENDS_OWN), ("as other", SENDS_AS_OTHER))
    },
}
# fmt: on

REFUSALS = {400: "invalid-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found"}


def test_the_table_covers_every_route_of_the_node(tmp_path: Path) -> None:
    served = app_routes(create_node_app(Settings()))
    listed = {route for route, _ in EXPECTED}
    assert not served - listed, f"routes missing from the node's matrix: {sorted(served - listed)}"
    assert not listed - served, f"the matrix lists routes the node lacks: {sorted(listed - served)}"
    assert all(len(row) == len(CALLERS) for row in EXPECTED.values())


# --- the requests of each cell ------------------------------------------------------------


@dataclass
class Call:
    method: str
    url: str
    json: Any = None


def request(world: NodeWorld, caller: str, route: str, obj: str) -> Call:
    method, path = route.split(" ", 1)
    if method == "Mount":
        return Call("GET", f"{path}/web.css")
    if path.startswith("/web/"):
        return Call(
            method,
            path.replace("{case_ref}", world.case["A"])
            .replace("{message_id}", min(world.received[NAPTIP.participant]))
            .replace("{code}", "fr")
            .replace("{form_id}", "0" * 32)
            .replace("{message_type}", "risk_assessment?recipient=" + AT.participant),
        )
    case_a = world.case["A"]
    as_other = {"sender": other(caller)} if obj == "as other" else {}
    if path == "/inbox":
        return Call(method, path, {"envelope": "e", "receipt": "r"})
    if path == "/login":
        return Call(method, path, {"user": "naptip.cw", "password": "not-the-password"})
    if path == "/cases/{case_ref}":
        reader = f"?reader={other(caller)}" if obj.endswith("as other") else ""
        return Call(method, f"/cases/{world.case[obj.split()[1]]}{reader}")
    if path == "/consents":
        consent = consent_body(
            f"cns-m-{uuid.uuid4().hex[:10]}",
            f"NG-M{uuid.uuid4().hex[:8].upper()}",
            [AT.participant],
        )
        return Call(method, path, {"consent": consent, **as_other})
    if path in ("/outbox/{message_id}", "/sent/{message_id}"):
        return Call(method, path.replace("{message_id}", world.sent[0]))
    if path == "/messages/{message_id}":
        owner = NAPTIP if obj == "NAPTIP's" else SHELTER
        return Call(method, f"/messages/{min(world.received[owner.participant])}")
    if path == "/consents/{consent_id}/withdraw":
        query = f"?sender={other(caller)}" if as_other else ""
        return Call(method, f"/consents/{world.consent['B']}/withdraw{query}")
    step = path.rsplit("/", 1)[-1]
    body = {
        "recipient": AT.participant,
        "consent_ref": world.consent["A"],
        **as_other,
    }
    if path == "/messages":
        now_payloads = payloads_now()
        return Call(
            method,
            path,
            {
                **body,
                "type": "risk_assessment",
                "case_ref": case_a,
                "payload": now_payloads["risk-assessment"],
            },
        )
    if path.startswith("/cases/"):
        return Call(
            method, path.replace("{case_ref}", case_a), {**body, "payload": payloads_now()[step]}
        )
    return Call(method, path)


def payloads_now() -> dict[str, dict[str, Any]]:
    return payloads(datetime.now(UTC))


# --- what an answer may hold --------------------------------------------------------------


def hidden_from(world: NodeWorld, caller: str) -> set[str]:
    """What the shelter may not see: case B, its reference and its messages' ids. (Both
    organisations are parties to case A: its timeline at the broker names every message's
    id to both; its contents are checked by `GET /messages` below.)"""
    if organisation(caller) != SHELTER.participant:
        return set()
    return world.in_case["B"] | {world.case["B"]}


def check_allowed(world: NodeWorld, caller: str, route: str, body: Any) -> list[str]:
    org = organisation(caller)
    if route == "GET /messages":
        seen = {m["message_id"] for m in body["messages"]}
        recipients = {m["recipient"] for m in body["messages"]}
        expected = (
            set().union(*world.received.values()) if caller == ADMIN else world.received[str(org)]
        )
        problems = [] if seen == expected else [f"read {sorted(seen)}, expected {sorted(expected)}"]
        if caller != ADMIN and recipients != {org}:
            problems.append(f"messages for {sorted(recipients)} shown to {org}")
        return problems
    if route == "GET /messages/{message_id}":
        problems = []
        if caller != ADMIN and body["recipient"] != org:
            problems.append(f"a message for {body['recipient']} shown to {org}")
        if body["next_steps"] is None:
            problems.append(f"no next steps: {body['next_steps_unavailable']}")
        return problems
    if route == "GET /sent":
        senders = {m["sender"] for m in body["messages"]}
        listed = {m["message_id"] for m in body["messages"]}
        mine = caller == ADMIN or org == NAPTIP.participant
        if mine and not set(world.sent) <= listed:
            return ["NAPTIP's sent messages are missing"]
        if not mine and listed & set(world.sent):
            return [f"NAPTIP's sent messages shown to {org}"]
        if caller != ADMIN and not senders <= {org}:
            return [f"messages sent by {sorted(senders)} shown to {org}"]
    if route == "GET /cases/{case_ref}":
        reader = body["reader"]
        if caller != ADMIN and reader != org:
            return [f"{reader}'s view shown to {org}"]
        strays = [
            e["message_id"]
            for e in body["timeline"]
            if (e["sender"] if e["direction"] == "sent" else e["recipient"]) != reader
        ]
        if strays:
            return [f"messages {strays} in {reader}'s timeline are another's"]
    if route == "GET /outbox":
        senders = {m["sender"] for m in body["messages"]}
        if not set(world.sent) <= {m["message_id"] for m in body["messages"]} and (
            caller == ADMIN or org == NAPTIP.participant
        ):
            return ["NAPTIP's sent messages are missing"]
        if caller != ADMIN and not senders <= {org}:
            return [f"messages sent by {sorted(senders)} shown to {org}"]
    if route == "GET /audit":
        orgs = {e["organisation"] for e in body["entries"]}
        if not body["entries"]:
            return ["the audit log is empty: the check proves nothing"]
        if caller != ADMIN and orgs != {org}:
            return [f"audit rows of {sorted(map(str, orgs))} shown to {org}"]
    return []


# --- the matrix ---------------------------------------------------------------------------


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[NodeWorld]:
    async with (
        running_broker(broker_settings(database_url, tmp_path)) as broker,
        node_world(broker, tmp_path) as world,
    ):
        yield world


@dataclass
class Cell:
    caller: str
    route: str
    obj: str
    expected: Expect
    status: int = 0
    request_id: str = ""


async def run_cell(world: NodeWorld, cell: Cell) -> list[str]:
    call = request(world, cell.caller, cell.route, cell.obj)
    refused = cell.expected not in (OK, PASS)
    before = await fingerprint(world.broker) if refused and call.method == "POST" else None
    cell.request_id = uuid.uuid4().hex
    if call.url == "/login":
        # Each caller's wrong-password login is judged on its own: the guessing budget
        # (tests/node/test_users_and_audit.py) would otherwise run out across the cells.
        app = world.node._transport.app  # type: ignore[attr-defined]
        app.state.sign_in_throttle = SignInThrottle()
    response = await world.node.request(
        call.method,
        call.url,
        json=call.json,
        headers={**world.auth(cell.caller), "x-request-id": cell.request_id},
    )
    cell.status = response.status_code
    is_problem = response.headers.get("content-type") == PROBLEM
    kind = response.json()["type"].rsplit(":", 1)[-1] if is_problem else None
    outcome = f"{response.status_code} {kind or ''}: {response.text[:200]}"
    if cell.expected == OK and not response.is_success:
        return [f"expected 2xx, got {outcome}"]
    if cell.expected == PASS and not (response.is_success or kind == "broker-refused"):
        return [f"expected the broker to judge it, got {outcome}"]
    if cell.expected == B404 and (response.status_code, kind) != (404, "broker-refused"):
        return [f"expected the broker's 404, got {outcome}"]
    location = response.headers.get("location", "")
    if cell.expected == SIGN_IN and not (
        response.status_code == 303 and location.startswith("/web/sign-in")
    ):
        return [f"expected a redirect to sign in, got {outcome} {location}"]
    if cell.expected == 303 and not (response.status_code == 303 and location.startswith("/web/")):
        return [f"expected a redirect within the web app, got {outcome} {location}"]
    if cell.expected == PAGE403 and not (
        response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    ):
        return [f"expected the web app's refusal page, got {outcome}"]
    if cell.expected in (400, 401, 403, 404) and (response.status_code, kind) != (
        cell.expected,
        REFUSALS[cell.expected],
    ):
        return [f"expected {cell.expected} {REFUSALS[cell.expected]}, got {outcome}"]
    sent = repr(call.url) + repr(call.json)  # what the caller itself sent may come back
    hidden = {t for t in hidden_from(world, cell.caller) if t not in sent}
    if cell.route == "GET /audit":  # the shelter's users' own probes of case B are in it
        hidden.discard(world.case["B"])
    problems = [f"shows {t}" for t in sorted(hidden) if t in response.text]
    if cell.expected == OK and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        problems += check_allowed(world, cell.caller, cell.route, response.json())
    if before is not None and (after := await fingerprint(world.broker)) != before:
        problems.append(f"a refused call changed the broker's state: {before} -> {after}")
    return problems


async def audit_rows(world: NodeWorld) -> dict[str, list[AuditEntry]]:
    engine = create_engine(world.database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(AuditEntry.__table__))).all()
    finally:
        await engine.dispose()
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(str(row.request_id), []).append(row)
    return found


def check_audit(cells: list[Cell], rows: dict[str, list[Any]]) -> list[str]:
    problems: list[str] = []
    for cell in cells:
        logged = rows.get(cell.request_id, [])
        where = f"{cell.caller} {cell.route} [{cell.obj}]"
        anonymous = (
            cell.caller == NOBODY
            or cell.route in ("POST /inbox", "POST /login")
            or cell.route.startswith(("GET /healthz", "GET /openapi", "GET /docs", "GET /redoc"))
            or cell.route.split(" ", 1)[1].startswith("/web")  # a token is no web session
        )
        if cell.route == "POST /login":  # audited as the named user's refused login
            anonymous = False
        if anonymous:
            if logged:
                problems.append(f"{where}: audited without a known caller")
            continue
        if len(logged) != 1:
            problems.append(f"{where}: {len(logged)} audit rows")
            continue
        row = logged[0]
        user = "naptip.cw" if cell.route == "POST /login" else cell.caller
        org = USERS["naptip.cw"][0] if cell.route == "POST /login" else organisation(cell.caller)
        seen = (row.user_name, row.organisation, row.action, row.status)
        wanted = (user, org, cell.route, cell.status)
        if seen != wanted:
            problems.append(f"{where}: audited as {seen}, expected {wanted}")
        if cell.route.startswith("POST /cases/") and row.case_ref is None:
            problems.append(f"{where}: the audit row names no case")
    return problems


async def test_every_caller_of_the_node_reaches_exactly_what_the_table_says(
    world: NodeWorld, backend: str
) -> None:
    cells: list[Cell] = []
    failures: list[str] = []
    for (route, obj), row in EXPECTED.items():
        for caller, expected in zip(CALLERS, row, strict=True):
            cell = Cell(caller, route, obj, expected)
            cells.append(cell)
            failures += [f"{caller:11} {route} [{obj}]: {p}" for p in await run_cell(world, cell)]
    failures += check_audit(cells, await audit_rows(world))
    refused = sum(cell.expected not in (OK, PASS) for cell in cells)
    print(  # the count the closing note reports
        f"node access matrix ({backend}): {len(cells)} cells checked "
        f"({len(cells) - refused} allowed, {refused} refused), {len(failures)} failures"
    )
    assert not failures, "\n".join(failures)


async def test_each_organisations_case_worker_sends_as_its_own_organisation_only(
    world: NodeWorld,
) -> None:
    """The setup's sends by NAPTIP's case worker named no sender: the broker holds them as
    NAPTIP's. The shelter's case worker, naming none, sends as the shelter."""
    body = {
        "recipient": AT.participant,
        "consent_ref": world.consent["A"],
        "payload": payloads_now()["reception-plan-response"],
    }
    response = await world.node.post(
        f"/cases/{world.case['A']}/reception-plan-response",
        json=body,
        headers=world.auth("shelter.cw"),
    )
    assert response.status_code == 201, response.text
    async with world.broker.app.state.broker.sessions() as session:
        rows = await session.execute(
            select(Message.id, Message.sender_id).where(Message.case_ref == world.case["A"])
        )
        senders = {message_id: sender for message_id, sender in rows.all()}
    assert senders[response.json()["message_id"]] == SHELTER.participant
    sent_by_the_node = {s for s in senders.values() if s != AT.participant}
    assert sent_by_the_node == {NAPTIP.participant, SHELTER.participant}


async def test_a_token_stops_working_when_revoked_or_its_user_disabled(world: NodeWorld) -> None:
    auth = world.auth("naptip.ro")
    assert (await world.node.get("/messages", headers=auth)).status_code == 200
    engine = create_engine(world.database_url)
    try:
        async with session_factory(engine)() as session:
            second = await users.new_token(session, "naptip.ro", datetime.now(UTC))
            await users.revoke_token(
                session, (await users.tokens(session, "naptip.ro"))[0].id, datetime.now(UTC)
            )
            await session.commit()
        assert (await world.node.get("/messages", headers=auth)).status_code == 401
        fresh = {"authorization": f"Bearer {second.token}"}
        assert (await world.node.get("/messages", headers=fresh)).status_code == 200
        async with session_factory(engine)() as session:
            await users.disable(session, "naptip.ro", datetime.now(UTC))
            await session.commit()
        refused = await world.node.get("/messages", headers=fresh)
        assert refused.status_code == 401
        assert "disabled" in refused.json()["detail"]
    finally:
        await engine.dispose()


async def test_a_token_that_is_nearly_right_is_refused(world: NodeWorld) -> None:
    token = world.tokens["naptip.cw"]
    for wrong in (
        token[:-1],
        token + "A",
        token.upper(),
        "trmu_",
        f"{token} {token}",
        ADMIN_TOKEN[:-1],
    ):
        response = await world.node.get("/messages", headers={"authorization": f"Bearer {wrong}"})
        assert response.status_code == 401, wrong
    for scheme in ("Basic", "Token", ""):
        response = await world.node.get(
            "/messages", headers={"authorization": f"{scheme} {token}".strip()}
        )
        assert response.status_code == 401, scheme
