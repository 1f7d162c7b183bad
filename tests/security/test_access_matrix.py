# ruff: noqa: E501
"""The access-control matrix (issue 8): every kind of caller, every route of the broker,
an object of the caller's own vs one of another country's, with the expected outcome of
each cell written out below for review.

Callers (the columns; tests/security/world.py sets them up):

- ``FP``   focal point of Austria, sending focal point of case A (AT → NG)
- ``FP*``  focal point of another country (France), sending focal point of case B (FR → DE)
- ``ORG``  receiving organisation (ng.shelter) designated in case A
- ``AUD``  auditor;  ``OPS`` operator
- ``UNK``  a key the registry does not know;  ``REV`` a revoked key of FP's;  ``---`` unsigned

Each cell asserts the status (``2xx`` allowed, else the problem's status and type), that
no response shows an id, case reference or digest its caller may not see (refusals: none
at all but what the caller sent), that allowed reads return only the caller's (ledger
entries, alerts, inbox), that a refused write changes nothing stored, and that every
refusal is logged with its status and route template and without any case reference, id
or payload. A route the table does not list fails :func:`test_the_table_covers_every_route`,
so no endpoint goes live unreviewed.

The two tests at the end are bugs the matrix's probes found, since fixed: a message could
cite a consent its sender may not read (and learn its scope from the refusal), and a
consent registered by one focal point could cover another's case.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from tests.security.world import (
    AT,
    AUDITOR,
    CALLERS,
    CANARY,
    DE,
    DE_INBOX,
    FOCAL_POINT,
    FOCAL_POINT_ABROAD,
    FR,
    NG,
    RECEIVING_ORG,
    REVOKED,
    SPARE,
    UNKNOWN_KEY,
    UNSIGNED,
    World,
    build_world,
    consent_body,
    fingerprint,
)
from tests.support import PROBLEM, Broker, broker_settings, envelope, referral, running_broker
from trm_broker.api.app import create_app
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import EncryptionKey, KeySet
from trm_broker.domain.messages import MessageType
from trm_broker.logs import configure_logging

Expect = Literal["2xx", 401, 403, 404, 409, "SIGN_IN", "PAGE403", 303]
OK: Expect = "2xx"
#: The auditors' console (``/console``) takes no signed request, only a signed-in session
#: (tests/api/console/): ``SIGN_IN`` a page answers 303 to the sign-in page and shows
#: nothing; ``PAGE403`` a form post is refused (403, a page: no form token); ``303`` a
#: redirect within the console (the language switch).
SIGN_IN: Expect = "SIGN_IN"
PAGE403: Expect = "PAGE403"
PAGE_OUTCOMES = {SIGN_IN, PAGE403, 303}

# fmt: off
#: (route, object) -> the expected outcome for each caller, in the order of the columns.
#: Objects: ``-`` none; ``case A``/``case B`` the case (or a new message or consent in it);
#: ``A.referral`` … a message; ``consent A`` … a consent; ``entry A.referral`` the ledger
#: entry of its acceptance; ``self``/``spare`` the caller's own or a bystander's registry
#: entry. 404 is "not found" to outsiders: the same answer as for an id that does not exist.
#: 2xx on a list (inbox, alerts, ledger entries and search) means the caller's own only,
#: empty for outsiders. A message in another's case (409) cites that case's own consent,
#: which lets it pass the consent check: the workflow refuses it, as not a party's.
EXPECTED: dict[tuple[str, str], tuple[Expect, ...]] = {
    # route                                      object                 FP   FP*  ORG  AUD  OPS  UNK  REV  ---
    ("GET /healthz",                             "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /readyz",                              "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /metrics",                             "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /openapi.json",                        "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /docs",                                "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /docs/oauth2-redirect",                "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /redoc",                               "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /v1/broker",                           "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /v1/participants",                     "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("POST /v1/participants",                    "-"):                 (403, 403, 403, 403, OK,  401, 401, 401),
    ("POST /v1/participants/{participant_id}/keys", "self"):           (403, 403, 403, 403, OK,  401, 401, 401),
    ("POST /v1/participants/{participant_id}/keys", "spare"):          (403, 403, 403, 403, OK,  401, 401, 401),
    ("POST /v1/participants/{participant_id}/keys/{kid}/revoke", "self"):  (403, 403, 403, 403, OK, 401, 401, 401),
    ("POST /v1/participants/{participant_id}/keys/{kid}/revoke", "spare"): (403, 403, 403, 403, OK, 401, 401, 401),
    ("GET /v1/messages/{message_id}",            "A.referral"):        (OK,  404, 404, 404, 404, 401, 401, 401),
    ("GET /v1/messages/{message_id}",            "A.withdrawal"):      (OK,  404, OK,  404, 404, 401, 401, 401),
    ("GET /v1/messages/{message_id}",            "B.referral"):        (404, OK,  404, 404, 404, 401, 401, 401),
    ("POST /v1/messages",                        "case A"):            (OK,  409, OK,  403, 403, 401, 401, 401),
    ("POST /v1/messages",                        "case B"):            (409, OK,  409, 403, 403, 401, 401, 401),
    ("GET /v1/inbox",                            "-"):                 (OK,  OK,  OK,  OK,  OK,  401, 401, 401),
    ("POST /v1/inbox/{message_id}/ack",          "A.response"):        (OK,  404, 404, 404, 404, 401, 401, 401),
    ("POST /v1/inbox/{message_id}/ack",          "A.withdrawal"):      (404, 404, OK,  404, 404, 401, 401, 401),
    ("POST /v1/inbox/{message_id}/ack",          "B.response"):        (404, OK,  404, 404, 404, 401, 401, 401),
    ("GET /v1/deliveries",                       "-"):                 (403, 403, 403, 403, OK,  401, 401, 401),
    ("POST /v1/deliveries/{message_id}/requeue", "A.referral"):        (403, 403, 403, 403, OK,  401, 401, 401),
    ("POST /v1/deliveries/{message_id}/requeue", "B.referral"):        (403, 403, 403, 403, OK,  401, 401, 401),
    ("GET /v1/consents/{consent_id}",            "consent A"):         (OK,  404, OK,  404, 404, 401, 401, 401),
    ("GET /v1/consents/{consent_id}",            "consent B"):         (404, OK,  404, 404, 404, 401, 401, 401),
    ("POST /v1/consents",                        "case A"):            (OK,  403, 403, 403, 403, 401, 401, 401),
    ("POST /v1/consents",                        "case B"):            (403, OK,  403, 403, 403, 401, 401, 401),
    ("POST /v1/consents/{consent_id}/withdraw",  "spare consent A"):   (OK,  404, 403, 404, 404, 401, 401, 401),
    ("POST /v1/consents/{consent_id}/withdraw",  "spare consent B"):   (404, OK,  404, 404, 404, 401, 401, 401),
    ("GET /v1/cases/{case_ref}",                 "case A"):            (OK,  404, OK,  404, 404, 401, 401, 401),
    ("GET /v1/cases/{case_ref}",                 "case B"):            (404, OK,  404, 404, 404, 401, 401, 401),
    ("GET /v1/alerts",                           "-"):                 (OK,  OK,  OK,  OK,  OK,  401, 401, 401),
    ("GET /v1/alerts",                           "case A"):            (OK,  OK,  OK,  OK,  OK,  401, 401, 401),
    ("GET /v1/alerts",                           "case B"):            (OK,  OK,  OK,  OK,  OK,  401, 401, 401),
    ("GET /v1/audit/report",                     "-"):                 (403, 403, 403, OK,  403, 401, 401, 401),
    ("GET /v1/ledger/checkpoint",                "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /v1/ledger/consistency",               "-"):                 (OK,  OK,  OK,  OK,  OK,  OK,  OK,  OK),
    ("GET /v1/ledger/entries",                   "-"):                 (OK,  OK,  OK,  OK,  403, 401, 401, 401),
    ("GET /v1/ledger/entries/raw",               "-"):                 (403, 403, 403, OK,  403, 401, 401, 401),
    ("GET /v1/ledger/entries/{index}",           "entry A.referral"):  (OK,  404, 404, OK,  403, 401, 401, 401),
    ("GET /v1/ledger/entries/{index}",           "entry A.withdrawal"): (OK, 404, OK,  OK,  403, 401, 401, 401),
    ("GET /v1/ledger/entries/{index}",           "entry B.referral"):  (404, OK,  404, OK,  403, 401, 401, 401),
    ("GET /v1/ledger/search",                    "case A"):            (OK,  OK,  OK,  OK,  403, 401, 401, 401),
    ("GET /v1/ledger/search",                    "case B"):            (OK,  OK,  OK,  OK,  403, 401, 401, 401),
    ("GET /v1/ledger/search",                    "case B as CSV"):     (OK,  OK,  OK,  OK,  403, 401, 401, 401),
    # The auditors' console: a challenge for auditors' and operators' keys; the pages need a session.
    ("POST /console/challenges",                 "-"):                 (403, 403, 403, OK,  OK,  401, 401, 401),
    ("GET /console/sign-in",                     "-"):                 (OK,) * 8,
    ("POST /console/sign-in",                    "no form token"):     (PAGE403,) * 8,
    ("POST /console/sign-out",                   "-"):                 (SIGN_IN,) * 8,
    ("GET /console/language/{code}",             "-"):                 (303,) * 8,
    ("Mount /console/static",                    "-"):                 (OK,) * 8,
    ("GET /console/",                            "-"):                 (SIGN_IN,) * 8,
    ("GET /console/ledger",                      "-"):                 (SIGN_IN,) * 8,
    ("GET /console/checkpoints",                 "-"):                 (SIGN_IN,) * 8,
    ("GET /console/cases/{case_ref}",            "case A"):            (SIGN_IN,) * 8,
    ("GET /console/overview",                    "-"):                 (SIGN_IN,) * 8,
    ("GET /console/ledger.csv",                  "-"):                 (SIGN_IN,) * 8,
    ("GET /console/overview.csv",                "-"):                 (SIGN_IN,) * 8,
    ("GET /console/overview/{table}.csv",        "-"):                 (SIGN_IN,) * 8,
    ("GET /console/checkpoints.csv",             "-"):                 (SIGN_IN,) * 8,
    ("GET /console/cases/{case_ref}.csv",        "case A"):            (SIGN_IN,) * 8,
}
# fmt: on

#: The problem type of each refusal (401s depend on the caller).
REFUSALS = {403: "forbidden", 404: "not-found", 409: "workflow-rule"}
UNAUTHENTICATED = {
    UNKNOWN_KEY: "unauthenticated",
    REVOKED: "key-not-usable",
    UNSIGNED: "unauthenticated",
}


# --- the routes of the app ----------------------------------------------------------------


def app_routes(app: FastAPI) -> set[str]:
    """``METHOD /path`` of every route the app serves, through included routers (which
    FastAPI may keep as routers rather than copy into ``app.routes``)."""

    def walk(routes: list[Any], prefix: str) -> Iterator[str]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                context = getattr(route, "include_context", None)
                yield from walk(included.routes, prefix + getattr(context, "prefix", ""))
                continue
            path, methods = getattr(route, "path", "?"), getattr(route, "methods", None)
            if not methods:  # a mount, a websocket …: unknown here, so it must be reviewed
                yield f"{type(route).__name__} {prefix}{path}"
                continue
            implied = {"HEAD"} if "GET" in methods else set()
            yield from (f"{method} {prefix}{path}" for method in sorted(methods - implied))

    return set(walk(list(app.routes), ""))


def test_the_table_covers_every_route(tmp_path: Path) -> None:
    app = create_app(broker_settings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path))
    served = app_routes(app)
    listed = {route for route, _ in EXPECTED}
    assert not served - listed, f"routes missing from the access matrix: {sorted(served - listed)}"
    assert not listed - served, f"the matrix lists routes the app lacks: {sorted(listed - served)}"
    # The walk above misses nothing the OpenAPI document shows.
    documented = {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= served
    assert all(len(row) == len(CALLERS) for row in EXPECTED.values())
    assert set(REQUESTS) == listed  # every route has a request to try it with


# --- the requests of each cell ------------------------------------------------------------


@dataclass
class Call:
    method: str
    url: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """Everything the caller sent, JWS payloads decoded: what a refusal may echo."""
        body = json.dumps(self.json) if self.json is not None else (self.content or b"").decode()
        parts = [self.url, body]
        try:
            sent = json.loads(body) if body else None
        except ValueError:
            sent = None
        for obj in (sent, sent.get("ack") if isinstance(sent, dict) else None):
            if isinstance(obj, dict) and isinstance(obj.get("payload"), str):
                parts.append(b64url_decode(obj["payload"]).decode())
        return "\n".join(parts)


Builder = Callable[[World, str, str], Call]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _submit(world: World, caller: str, obj: str) -> Call:
    case = obj[-1]
    sender = world.keyset(caller)
    recipient = NG if case == "A" else DE
    # What each may send in a case it is party to (docs/design.md §6); the others try the same.
    kind = MessageType.RISK_ASSESSMENT
    header: dict[str, Any] = {"risk_level": "low", "return_recommended": True}
    header["assessed_at"] = _now()
    if caller == RECEIVING_ORG:
        kind, header = MessageType.RECEPTION_CONFIRMATION, {"outcome": "received", "at": _now()}
    signed = envelope(
        sender,
        recipient,
        kind,
        header,
        case_ref=world.case[case],
        consent_ref=world.consents[f"consent {case}"],  # the case's own: the worst case
        payload={"note": CANARY},
    )
    return Call(
        "POST",
        "/v1/messages",
        content=json.dumps(signed).encode(),
        headers={"content-type": "application/jose+json"},
    )


def _ack(world: World, caller: str, obj: str) -> Call:
    keyset = world.keyset(caller)
    claims = {
        "v": 1,
        "message_id": world.messages[obj],
        "envelope_digest": jws.digest(world.envelopes[obj]),
        "recipient": keyset.participant,
        "received_at": "2026-11-23T00:00:00.000Z",
        "status": "received",
    }
    ack = jws.sign(claims, keyset.signing, jws.TYP_ACK)
    return Call("POST", f"/v1/inbox/{world.messages[obj]}/ack", json={"ack": ack})


def _target(world: World, caller: str, obj: str) -> KeySet:
    return world.keyset(caller) if obj == "self" else SPARE


def _rotation(world: World, caller: str, obj: str) -> Call:
    body = {"use": "enc", "alg": "X25519", "public": EncryptionKey.generate().public_b64}
    target = _target(world, caller, obj).participant
    return Call("POST", f"/v1/participants/{target}/keys", json=body)


def _revocation(world: World, caller: str, obj: str) -> Call:
    # The target's encryption key: refused, it changes nothing; allowed, it harms no caller.
    target = _target(world, caller, obj)
    return Call(
        "POST", f"/v1/participants/{target.participant}/keys/{target.encryption.kid}/revoke"
    )


def _registration(world: World, caller: str, obj: str) -> Call:
    new = KeySet.generate(f"xx.new-{uuid.uuid4().hex[:8]}")
    body = {"id": new.participant, "kind": "receiving_org", "country": "DE", "keys": new.public()}
    return Call("POST", "/v1/participants", json=body)


def _new_consent(world: World, caller: str, obj: str) -> Call:
    case = obj[-1]
    consent_id = f"cns-{case.lower()}-matrix-{uuid.uuid4().hex[:8]}"
    recipient = NG if case == "A" else DE
    return Call(
        "POST",
        "/v1/consents",
        json=consent_body(consent_id, world.case[case], [recipient.participant]),
    )


def _get(path: str, of: Callable[[World, str], object] | None = None) -> Builder:
    """A GET of ``path``, its ``{}`` filled with the object's id (``of``)."""
    return lambda world, caller, obj: Call("GET", path.format(of(world, obj) if of else ""))


def _report(world: World, caller: str, obj: str) -> Call:
    since = datetime.now(UTC) - timedelta(days=1)
    query = urlencode({"from": since.isoformat(), "to": (since + timedelta(days=30)).isoformat()})
    return Call("GET", f"/v1/audit/report?{query}")


def _alerts(world: World, caller: str, obj: str) -> Call:
    if obj == "-":
        return Call("GET", "/v1/alerts")
    return Call("GET", f"/v1/alerts?case_ref={world.case[obj[-1]]}&include_closed=true")


def _search(world: World, caller: str, obj: str) -> Call:
    query = f"case_ref={world.case[obj.split()[1]]}&limit=1000"
    return Call("GET", f"/v1/ledger/search?{query}" + ("&format=csv" if "CSV" in obj else ""))


REQUESTS: dict[str, Builder] = {
    "GET /healthz": _get("/healthz"),
    "GET /readyz": _get("/readyz"),
    "GET /metrics": _get("/metrics"),
    "GET /openapi.json": _get("/openapi.json"),
    "GET /docs": _get("/docs"),
    "GET /docs/oauth2-redirect": _get("/docs/oauth2-redirect"),
    "GET /redoc": _get("/redoc"),
    "GET /v1/broker": _get("/v1/broker"),
    "GET /v1/participants": _get("/v1/participants"),
    "POST /v1/participants": _registration,
    "POST /v1/participants/{participant_id}/keys": _rotation,
    "POST /v1/participants/{participant_id}/keys/{kid}/revoke": _revocation,
    "GET /v1/messages/{message_id}": _get("/v1/messages/{}", lambda w, o: w.messages[o]),
    "POST /v1/messages": _submit,
    "GET /v1/inbox": _get("/v1/inbox?limit=100"),
    "POST /v1/inbox/{message_id}/ack": _ack,
    "GET /v1/deliveries": _get("/v1/deliveries"),
    "POST /v1/deliveries/{message_id}/requeue": lambda world, caller, obj: Call(
        "POST", f"/v1/deliveries/{world.messages[obj]}/requeue"
    ),
    "GET /v1/consents/{consent_id}": _get("/v1/consents/{}", lambda w, o: w.consents[o]),
    "POST /v1/consents": _new_consent,
    "POST /v1/consents/{consent_id}/withdraw": lambda world, caller, obj: Call(
        "POST", f"/v1/consents/{world.consents[obj]}/withdraw"
    ),
    "GET /v1/cases/{case_ref}": lambda world, caller, obj: Call(
        "GET", f"/v1/cases/{world.case[obj[-1]]}"
    ),
    "GET /v1/alerts": _alerts,
    "GET /v1/audit/report": _report,
    "GET /v1/ledger/checkpoint": _get("/v1/ledger/checkpoint"),
    "GET /v1/ledger/consistency": _get(
        "/v1/ledger/consistency?first=1&second={}", lambda w, o: w.tree_size
    ),
    "GET /v1/ledger/entries": _get("/v1/ledger/entries?limit=1000"),
    "GET /v1/ledger/entries/raw": _get("/v1/ledger/entries/raw"),
    "GET /v1/ledger/entries/{index}": _get("/v1/ledger/entries/{}", lambda w, o: w.entries[o]),
    "GET /v1/ledger/search": _search,
    "POST /console/challenges": lambda world, caller, obj: Call("POST", "/console/challenges"),
    "GET /console/sign-in": _get("/console/sign-in"),
    "POST /console/sign-in": lambda world, caller, obj: Call("POST", "/console/sign-in"),
    "POST /console/sign-out": lambda world, caller, obj: Call("POST", "/console/sign-out"),
    "GET /console/language/{code}": _get("/console/language/fr"),
    "Mount /console/static": _get("/console/static/proofs.js"),
    "GET /console/": _get("/console/"),
    "GET /console/ledger": _get("/console/ledger"),
    "GET /console/checkpoints": _get("/console/checkpoints"),
    "GET /console/overview": _get("/console/overview"),
    "GET /console/ledger.csv": _get("/console/ledger.csv"),
    "GET /console/overview.csv": _get("/console/overview.csv"),
    "GET /console/cases/{case_ref}": lambda world, caller, obj: Call(
        "GET", f"/console/cases/{world.case[obj[-1]]}"
    ),
    "GET /console/overview/{table}.csv": _get("/console/overview/refusals.csv"),
    "GET /console/checkpoints.csv": _get("/console/checkpoints.csv"),
    "GET /console/cases/{case_ref}.csv": lambda world, caller, obj: Call(
        "GET", f"/console/cases/{world.case[obj[-1]]}.csv"
    ),
}


# --- what an allowed answer may hold ------------------------------------------------------


#: The case each party caller is party to (auditors read every case's metadata).
OWN_CASE = {FOCAL_POINT: "A", FOCAL_POINT_ABROAD: "B", RECEIVING_ORG: "A"}


def sees_case(caller: str, case: str) -> bool:
    return caller == AUDITOR or OWN_CASE.get(caller) == case


def _scoped(world: World, caller: str, entries: list[dict[str, Any]]) -> list[str]:
    """Ledger entries: auditors read all; parties only those naming them."""
    reader = world.reader(caller)
    if caller == AUDITOR:
        return []
    return [f"entry {e['index']} is not {reader}'s" for e in entries if reader not in e["parties"]]


def check_allowed(world: World, caller: str, route: str, obj: str, body: Any) -> list[str]:
    """Problems with an allowed answer beyond the leak check every answer gets."""
    reader = world.reader(caller) or world.keyset(caller).participant
    problems: list[str] = []
    if route == "GET /v1/participants":
        if DE_INBOX in json.dumps(body) or "inbox_url" in json.dumps(body):
            problems.append("the registry publishes inbox URLs")
    elif route == "GET /metrics":
        shown = [p for p in world.broker.keysets if p in body]
        problems += [f"/metrics names participant {p}" for p in shown]
    elif route == "GET /v1/inbox":
        mine = world.inboxes.get(reader, set())
        problems += [
            f"inbox offers {item['message_id']}, not addressed to {reader}"
            for item in body["items"]
            if item["message_id"] not in mine
        ]
        if caller == FOCAL_POINT and not body["items"]:
            problems.append("the focal point's inbox is empty: the check proves nothing")
    elif route == "GET /v1/alerts":
        if caller != AUDITOR:
            problems += [
                f"alert {a['id']} of {a['parties']} shown to {reader}"
                for a in body["alerts"]
                if reader not in a["parties"]
            ]
        if obj != "-" and sees_case(caller, obj[-1]) and not body["alerts"]:
            problems.append(f"no alert of case {obj[-1]} for a party: the check proves nothing")
    elif route in ("GET /v1/ledger/entries", "GET /v1/ledger/search") and "CSV" not in obj:
        entries = [dict(e["entry"], index=e["index"]) for e in body["entries"]]
        problems += _scoped(world, caller, entries)
        if obj != "-" and sees_case(caller, obj[-1]) and not entries:
            problems.append("a party's search found nothing: the check proves nothing")
        if caller == AUDITOR and obj == "-":
            found = {e.get("case_ref") for e in entries}
            if not {world.case["A"], world.case["B"]} <= found:
                problems.append("the auditor does not see every case's entries")
    elif route == "GET /v1/ledger/search":  # as CSV
        rows = list(csv.DictReader(io.StringIO(body)))
        entries = [{"index": r["index"], "parties": r["parties"].split(" ")} for r in rows]
        problems += _scoped(world, caller, entries)
    elif route == "GET /v1/ledger/entries/{index}":
        problems += _scoped(world, caller, [dict(body["entry"], index=body["index"])])
    elif route == "GET /v1/cases/{case_ref}":
        case = obj[-1]
        if body["case_ref"] != world.case[case]:
            problems.append("another case was returned")
        ours = {m for name, m in world.messages.items() if name.startswith(case)}
        problems += [
            f"timeline holds {item['message_id']} of another case"
            for item in body["timeline"]
            if item["message_id"] not in ours
        ]
    elif route == "GET /v1/messages/{message_id}":
        if body["message_id"] != world.messages[obj] or {"envelope", "payload"} & set(body):
            problems.append("the status is of another message, or shows content")
    elif route == "GET /v1/consents/{consent_id}" and body["id"] != world.consents[obj]:
        problems.append("another consent was returned")
    elif route == "GET /v1/deliveries" and "case_ref" in json.dumps(body):
        problems.append("dead letters show case references")
    return problems


def learn(world: World, caller: str, route: str, obj: str, call: Call, body: Any) -> None:
    """Objects made by allowed writes join the secrets of their case."""
    case = obj[-1]
    if route == "POST /v1/messages":
        signed = json.loads(call.content or b"{}")
        world.message_accepted(f"{case}.matrix-{uuid.uuid4().hex[:6]}", case, signed)
    elif route == "POST /v1/consents":
        world.case_secret(case, body["id"])


# --- the matrix ---------------------------------------------------------------------------


@pytest.fixture
def json_logs(database_url: str) -> Iterator[io.StringIO]:
    """The broker's JSON log lines (structlog), from start-up on."""
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.fixture
async def world(database_url: str, tmp_path: Path, json_logs: io.StringIO) -> AsyncIterator[World]:
    settings = broker_settings(database_url, tmp_path, alert_check_seconds=3600)
    async with running_broker(settings) as broker:
        yield await build_world(broker)


@dataclass
class Cell:
    caller: str
    route: str
    obj: str
    expected: Expect
    status: int
    request_id: str
    call: Call


def console_page_outcome(expected: Expect, response: httpx.Response) -> list[str]:
    """A console page or form, asked with a signed request and no session."""
    outcome = f"{response.status_code}: {response.text[:200]}"
    location = response.headers.get("location", "")
    if expected == SIGN_IN and not (
        response.status_code == 303 and location.startswith("/console/sign-in")
    ):
        return [f"expected a redirect to sign in, got {outcome} {location}"]
    if expected == 303 and not (response.status_code == 303 and location.startswith("/console/")):
        return [f"expected a redirect within the console, got {outcome} {location}"]
    if expected == PAGE403 and not (
        response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    ):
        return [f"expected the console's refusal page, got {outcome}"]
    return []


async def run_cell(world: World, cell: Cell) -> list[str]:
    broker: Broker = world.broker
    call, caller = cell.call, cell.caller
    writes = call.method == "POST"
    before = await fingerprint(broker) if writes and cell.expected != OK else None
    response = await broker.call(
        call.method,
        call.url,
        world.signer(caller),
        json=call.json,
        content=call.content,
        headers={**call.headers, "x-request-id": cell.request_id},
    )
    cell.status = response.status_code
    # The id the broker logged the request under (ours, unless it chose its own).
    cell.request_id = response.headers.get("x-request-id", "")
    problems: list[str] = []
    if cell.expected in PAGE_OUTCOMES:
        return console_page_outcome(cell.expected, response)
    if cell.expected == OK:
        if not response.is_success:
            return [f"expected 2xx, got {response.status_code}: {response.text[:300]}"]
    elif response.status_code != cell.expected:
        return [f"expected {cell.expected}, got {response.status_code}: {response.text[:300]}"]
    # Zero leaks: nothing the caller may not see, and nothing sealed, in any answer.
    sent = call.text()
    hidden = {s.text for s in world.secrets} - world.visible_to(caller)
    leaked = [text for text in hidden if text in response.text and text not in sent]
    problems += [f"leaks {text}" for text in sorted(leaked)]
    if CANARY in response.text:
        problems.append("shows a sealed payload's content")
    if cell.expected == OK:
        is_json = response.headers.get("content-type", "").startswith("application/json")
        body = response.json() if is_json else response.text
        problems += check_allowed(world, caller, cell.route, cell.obj, body)
        if writes:
            learn(world, caller, cell.route, cell.obj, call, body)
        return problems
    assert isinstance(cell.expected, int)
    slug = UNAUTHENTICATED[caller] if cell.expected == 401 else REFUSALS[cell.expected]
    if response.headers.get("content-type") != PROBLEM:
        problems.append(f"refused without problem+json: {response.headers.get('content-type')}")
    elif response.json()["type"] != f"urn:trm-broker:problem:{slug}":
        problems.append(f"problem {response.json()['type']}, expected {slug}")
    if before is not None and (after := await fingerprint(broker)) != before:
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        problems.append(f"a refused write changed what is stored: {changed}")
    return problems


def check_logs(world: World, log_text: str, cells: list[Cell]) -> list[str]:
    """Each refusal is logged (status, route template) with no case reference, id or payload."""
    lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    problems = []
    if CANARY in log_text or any(ref in log_text for ref in world.case.values()):
        problems.append("the log holds a case reference or payload content")
    by_request: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_request.setdefault(str(line.get("request_id")), []).append(line)
    protected = {s.text for s in world.secrets}
    for cell in cells:
        if cell.expected == OK:
            continue
        logged = by_request.get(cell.request_id, [])
        path = cell.route.split(" ", 1)[1]
        request = [ln for ln in logged if ln["event"] == "request"]
        refused = [ln for ln in logged if ln["event"] == "request_refused"]
        where = f"{cell.caller} {cell.route} [{cell.obj}]"
        if [(ln["route"], ln["status"]) for ln in request] != [(path, cell.status)]:
            problems.append(f"{where}: no request line with route and status: {request}")
        if cell.expected in PAGE_OUTCOMES:  # a page or redirect, not an API refusal
            continue
        if [ln["status"] for ln in refused] != [cell.status]:
            problems.append(f"{where}: the refusal is not logged: {refused}")
        text = json.dumps(logged)
        problems += [f"{where}: the log names {t}" for t in protected if t in text]
    return problems


async def test_every_caller_reaches_exactly_what_the_table_says(
    world: World, json_logs: io.StringIO, backend: str
) -> None:
    cells: list[Cell] = []
    failures: list[str] = []
    for (route, obj), row in EXPECTED.items():
        for caller, expected in zip(CALLERS, row, strict=True):
            call = REQUESTS[route](world, caller, obj)
            cell = Cell(caller, route, obj, expected, 0, uuid.uuid4().hex, call)
            cells.append(cell)
            problems = await run_cell(world, cell)
            failures += [f"{caller:18} {route} [{obj}]: {p}" for p in problems]
    failures += check_logs(world, json_logs.getvalue(), cells)
    refused = sum(cell.expected != OK for cell in cells)
    print(  # the count the closing note reports (shown in the test summary)
        f"access matrix ({backend}): {len(cells)} cells checked "
        f"({len(cells) - refused} allowed, {refused} refused), {len(failures)} failures"
    )
    assert not failures, "\n".join(failures)


# --- found by the matrix's probes, and fixed: a consent covers only its registrant's case --


async def test_citing_a_consent_one_may_not_read_tells_nothing_of_it(
    sqlite_database: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        for keyset, country in [(AT, "AT"), (NG, "NG"), (FR, "FR"), (DE, "DE")]:
            assert (await broker.register(keyset, country)).status_code == 201
        theirs = f"cns-at-{uuid.uuid4().hex[:8]}"
        body = consent_body(theirs, f"AT-{uuid.uuid4().hex[:8]}", [NG.participant])
        assert (await broker.call("POST", "/v1/consents", AT, json=body)).status_code == 201
        withdrawn = await broker.call("POST", f"/v1/consents/{theirs}/withdraw", AT)
        assert withdrawn.status_code == 200
        assert (await broker.call("GET", f"/v1/consents/{theirs}", FR)).status_code == 404

        async def cite(consent_ref: str) -> httpx.Response:
            header = {"risk_level": "low", "return_recommended": True, "assessed_at": _now()}
            signed = envelope(
                FR,
                DE,
                MessageType.RISK_ASSESSMENT,
                header,
                case_ref=f"FR-{uuid.uuid4().hex[:8]}",
                consent_ref=consent_ref,
            )
            return await broker.submit(signed)

        foreign, unknown = await cite(theirs), await cite("cns-never-registered")
        # Before the fix: 403 with rule consent_scope, the withdrawal time and the scope
        # gaps of AT's consent; now exactly what an unknown id gets.
        assert withdrawn.json()["withdrawn_at"][:16] not in foreign.text
        seen = {k: v for k, v in foreign.json().items() if k not in ("detail", "instance")}
        expected = {k: v for k, v in unknown.json().items() if k not in ("detail", "instance")}
        assert seen == expected


async def test_a_case_is_covered_only_by_consents_its_sending_focal_point_registered(
    sqlite_database: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        broker.auto_consent = False
        for keyset, country in [(AT, "AT"), (FR, "FR"), (DE, "DE")]:
            assert (await broker.register(keyset, country)).status_code == 201
        # AT registers a consent for a case reference nobody has referred yet …
        case_ref, theirs = f"FR-{uuid.uuid4().hex[:8]}", f"cns-at-{uuid.uuid4().hex[:8]}"
        body = consent_body(theirs, case_ref, [DE.participant])
        assert (await broker.call("POST", "/v1/consents", AT, json=body)).status_code == 201
        # … FR's referral of that case citing it was accepted (202) before the fix, after
        # which AT, party to nothing in the case, could withdraw it and purge FR's message.
        signed = referral(FR, DE, case_ref=case_ref, consent_ref=theirs, destination_country="DE")
        response = await broker.submit(signed)
        assert response.status_code == 403, response.text
        assert response.json()["type"] == "urn:trm-broker:problem:consent-refused"
