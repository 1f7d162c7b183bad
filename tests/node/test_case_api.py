"""The node's per-type calls: a case worker gives a typed header and payload, the node builds,
seals and signs the envelope; what does not fit the type is refused before anything is sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.domain.test_payloads import FULL
from tests.support import PROBLEM, Broker, broker_settings, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.crypto.seal import Binding, open_sealed
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.messages import DataCategory, MessageType

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
RO = KeySet.generate("ng.receiving-ngo")
TOKEN = "case-worker-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
T = MessageType


class Recording(httpx.AsyncBaseTransport):
    """Reaches the in-process broker, keeping every envelope the node submits."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.submitted: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/messages":
            self.submitted.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    broker: Broker
    node: httpx.AsyncClient  # one node serving AT, NG and the receiving organisation
    recording: Recording
    case_ref: str

    async def post(self, path: str, body: object) -> httpx.Response:
        return await self.node.post(path, json=body, headers=AUTH)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        inbox = "http://127.0.0.1:9/inbox"
        assert (await broker.register(AT, "AT", inbox_url=inbox)).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=inbox)).status_code == 201
        registered = await broker.register(RO, "NG", kind="receiving_org", inbox_url=inbox)
        assert registered.status_code == 201
        files = []
        for keyset in (AT, NG, RO):
            files.append(tmp_path / f"{keyset.participant}.keys.json")
            keyset.write(files[-1])
        recording = Recording(httpx.ASGITransport(app=broker.app))
        async with (
            httpx.AsyncClient(transport=recording, base_url="http://broker") as to_broker,
            running_node(tmp_path, files, to_broker, TOKEN) as node,
        ):
            case_ref = f"AT-{datetime.now(UTC):%H%M%S%f}"
            yield World(broker, node, recording, case_ref)


async def register_consent(world: World) -> str:
    """The person's consent to every exchange of this case with NG and its receiving NGO."""
    consent_ref = f"consent-{world.case_ref}"
    body = {
        "id": consent_ref,
        "case_ref": world.case_ref,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": [NG.participant, RO.participant, AT.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "A" * 43,
    }
    response = await world.broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text
    return consent_ref


def steps(now: datetime) -> list[tuple[str, MessageType, KeySet, KeySet, dict[str, Any]]]:
    """One call of each type, in the order a case goes: (path, type, from, to, header)."""
    return [
        ("referral", T.REFERRAL, AT, NG, {"destination_country": "NG", "subject_is_minor": False}),
        ("referral-response", T.REFERRAL_RESPONSE, NG, AT, {"accepted": True}),
        (
            "risk-assessment",
            T.RISK_ASSESSMENT,
            AT,
            NG,
            {"risk_level": "medium", "return_recommended": True, "assessed_at": now.isoformat()},
        ),
        (
            "return-preparation",
            T.RETURN_PREPARATION,
            AT,
            NG,
            {
                "receiving_org": RO.participant,
                "planned_arrival": (now + timedelta(days=8)).isoformat(),
            },
        ),
        (
            "reception-confirmation",
            T.RECEPTION_CONFIRMATION,
            RO,
            AT,
            {"outcome": "received", "at": now.isoformat()},
        ),
        (
            "monitoring",
            T.CASE_MONITORING,
            RO,
            AT,
            {"period_start": now.date().isoformat(), "period_end": now.date().isoformat()},
        ),
        ("closure", T.CASE_CLOSURE, AT, NG, {"reason": "monitoring_completed"}),
        ("consent-withdrawal", T.CONSENT_WITHDRAWAL, AT, NG, {}),
    ]


def opened(envelope: dict[str, str], recipient: KeySet) -> tuple[dict[str, Any], Any]:
    """The envelope's signed claims and its payload, opened with the recipient's key."""
    claims = jws.parse(envelope, jws.TYP_ENVELOPE).claims()
    binding = Binding(
        id=claims["id"],
        type=claims["type"],
        case_ref=claims["case_ref"],
        sender=claims["sender"],
        recipient=claims["recipient"],
    )
    return claims, json.loads(open_sealed(claims["sealed"], recipient.encryption, binding))


async def test_a_whole_case_goes_through_one_call_per_type(world: World) -> None:
    """Each call builds, seals and signs its type's envelope, and the broker accepts it."""
    consent_ref = await register_consent(world)
    now = datetime.now(UTC)
    for path, message_type, sender, recipient, header in steps(now):
        payload = FULL[message_type]
        if message_type is T.CASE_MONITORING:  # the period the header states
            payload = payload | {k: header[k] for k in ("period_start", "period_end")}
        before = len(world.recording.submitted)
        response = await world.post(
            f"/cases/{world.case_ref}/{path}",
            {
                "sender": sender.participant,
                "recipient": recipient.participant,
                "header": header,
                "payload": payload,
                "data_categories": ["identity", "health"],
                "consent_ref": consent_ref,
            },
        )
        assert response.status_code == 201, (path, response.text)
        envelope = world.recording.submitted[before]  # a return plan goes on to RO after
        claims, sealed_payload = opened(envelope, recipient)
        assert jws.parse(envelope, jws.TYP_ENVELOPE).kid == sender.signing.kid
        assert claims["type"] == message_type.value
        assert (claims["case_ref"], claims["sender"], claims["recipient"]) == (
            world.case_ref,
            sender.participant,
            recipient.participant,
        )
        assert (claims["consent_ref"], claims["data_categories"]) == (
            consent_ref,
            ["identity", "health"],
        )
        assert claims["header"].keys() == header.keys()
        assert sealed_payload == payload  # as given: nothing added, nothing normalised away
        assert response.json()["message_id"] == claims["id"]
    assert len(world.recording.submitted) == 9  # the return plan twice: to NG, then to RO


async def test_a_referral_sent_by_type_is_delivered_and_opened(world: World) -> None:
    consent_ref = await register_consent(world)
    payload = FULL[T.REFERRAL]
    sent = await world.post(
        f"/cases/{world.case_ref}/referral",
        {
            "sender": AT.participant,
            "recipient": NG.participant,
            "header": {"destination_country": "NG", "subject_is_minor": False},
            "payload": payload,
            "data_categories": ["identity", "health"],
            "consent_ref": consent_ref,
        },
    )
    assert sent.status_code == 201, sent.text
    dispatcher = DeliveryDispatcher(
        world.broker.app.state.broker.sessions,
        world.node,
        timeout=30,  # a push's deadline: room for a loaded machine
        poll_interval=0.1,
        backoff_cap=1,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=world.broker.app.state.broker.signing_key,
    )
    assert await dispatcher.run_once() == 1
    status = (await world.broker.status(sent.json()["message_id"], AT)).json()
    assert status["status"] == "acknowledged"
    received = (await world.node.get("/messages", headers=AUTH)).json()["messages"]
    assert [(m["type"], m["case_ref"], m["payload"]) for m in received] == [
        ("referral", world.case_ref, payload)
    ]


def referral_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sender": AT.participant,
        "recipient": NG.participant,
        "header": {"destination_country": "NG", "subject_is_minor": False},
        "payload": {"languages": ["en"]},
        "data_categories": ["identity"],
    }
    return body | changes


@pytest.mark.parametrize(
    ("body", "locations"),
    [
        (
            referral_body(payload={"immediate_needs": ["shelter", "spa"]}),
            ["body/payload/immediate_needs/1"],
        ),
        (referral_body(payload={"is_child": "perhaps"}), ["body/payload/is_child"]),
        (
            referral_body(payload={"person": {"given_name": "A", "secret": 1}}),
            ["body/payload/person/(unknown member)"],
        ),
        (
            referral_body(header={"destination_country": "XX", "subject_is_minor": False}),
            ["body/header/destination_country"],
        ),
        (referral_body(payload=None), ["body/payload"]),
        (referral_body(recipient="Not An Id"), ["body/recipient"]),
    ],
    ids=["bad-code", "wrong-type", "unknown-member", "bad-header", "no-payload", "bad-recipient"],
)
async def test_what_does_not_fit_the_type_is_refused_naming_members_and_nothing_is_sent(
    world: World, body: dict[str, Any], locations: list[str]
) -> None:
    response = await world.post(f"/cases/{world.case_ref}/referral", body)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert [e["location"] for e in problem["errors"]] == locations
    assert "secret" not in response.text
    assert world.recording.submitted == []


async def test_the_generic_call_checks_the_payload_against_its_type_too(world: World) -> None:
    response = await world.post(
        "/messages",
        {
            "type": "referral",
            "case_ref": world.case_ref,
            "recipient": NG.participant,
            "sender": AT.participant,
            "header": {"destination_country": "NG", "subject_is_minor": False},
            "payload": {"form_of_exploitation": "pickpocketing", "CANARY8Z": "Jane"},
        },
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"] == [
        {"location": "body/payload/form_of_exploitation", "error": "not a known code"},
        {"location": "body/payload", "error": "unknown member"},
    ]
    assert "CANARY8Z" not in response.text
    assert "Jane" not in response.text
    assert world.recording.submitted == []


async def test_a_malformed_case_reference_or_a_missing_token_is_refused(world: World) -> None:
    bad_ref = await world.post("/cases/x/referral", referral_body())
    assert bad_ref.status_code == 400
    assert bad_ref.json()["errors"][0]["location"] == "path/case_ref"
    unauthenticated = await world.node.post(
        f"/cases/{world.case_ref}/referral", json=referral_body()
    )
    assert unauthenticated.status_code == 401
    assert world.recording.submitted == []


# --- found by the API fuzzing (tests/security/test_api_fuzz.py) ------------------------------


async def test_a_broker_refusal_keeps_its_status_and_says_what_to_fix(world: World) -> None:
    """A referral the broker refuses (no consent registered) is the case worker's to fix:
    the broker's 403, not a 502 that would read as the broker failing."""
    body = referral_body()
    body["consent_ref"] = "consent-never-registered"
    response = await world.post(f"/cases/{world.case_ref}/referral", body)
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["type"] == "urn:trm-broker:problem:broker-refused"
    assert (problem["status"], problem["broker_status"]) == (403, 403)
    unknown = await world.node.get(
        f"/cases/{world.case_ref}", params={"reader": AT.participant}, headers=AUTH
    )
    assert (unknown.status_code, unknown.json()["broker_status"]) == (404, 404)


async def test_a_cursor_beyond_the_database_integers_is_refused(world: World) -> None:
    response = await world.node.get("/messages", params={"after": 2**70}, headers=AUTH)
    assert response.status_code == 400, response.text  # it was a 500 (SQLite overflow)


async def test_a_consent_id_that_is_no_consent_id_is_refused_before_the_broker(
    world: World,
) -> None:
    for consent_id in ("%5D%08x", "a%20b", "x" * 129):  # as sent: percent-encoded
        response = await world.node.post(f"/consents/{consent_id}/withdraw", headers=AUTH)
        assert response.status_code == 400, (consent_id, response.text)  # it was a 500
