"""The node's per-type calls: a case worker gives a typed payload, the node computes the clear
header and data categories from it, and builds, seals and signs the envelope; what does not
fit the type, or a header that says other than the payload, is refused before anything is
sent."""

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
from tests.support import (
    PROBLEM,
    Broker,
    broker_settings,
    projected,
    running_broker,
    running_node,
)
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
    """One call of each type, in the order a case goes: (path, type, from, to, payload), each
    payload the type's full form with this case's facts (accepted; an adult's case)."""
    today = now.date().isoformat()
    moment = now.isoformat().replace("+00:00", "Z")  # as the typed payload's JSON spells it
    arrival = (now + timedelta(days=8)).isoformat().replace("+00:00", "Z")
    facts: dict[MessageType, dict[str, Any]] = {
        T.REFERRAL_RESPONSE: {"accepted": True},
        T.RISK_ASSESSMENT: {"assessed_at": moment},
        T.RETURN_PREPARATION: {"receiving_org": RO.participant, "planned_arrival": arrival},
        T.RECEPTION_CONFIRMATION: {"received_at": moment},
        T.CASE_MONITORING: {"period_start": today, "period_end": today},
    }
    left_out = {"guardian", "best_interests_determination", "decline_reason"}
    calls = [
        ("referral", T.REFERRAL, AT, NG),
        ("referral-response", T.REFERRAL_RESPONSE, NG, AT),
        ("risk-assessment", T.RISK_ASSESSMENT, AT, NG),
        ("return-preparation", T.RETURN_PREPARATION, AT, NG),
        ("reception-confirmation", T.RECEPTION_CONFIRMATION, RO, AT),
        ("monitoring", T.CASE_MONITORING, RO, AT),
        ("closure", T.CASE_CLOSURE, AT, NG),
        ("consent-withdrawal", T.CONSENT_WITHDRAWAL, AT, NG),
    ]
    return [
        (
            path,
            kind,
            sender,
            recipient,
            {k: v for k, v in FULL[kind].items() if k not in left_out} | facts.get(kind, {}),
        )
        for path, kind, sender, recipient in calls
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
    """Each call builds, seals and signs its type's envelope, with the header and data
    categories computed from the payload, and the broker accepts it."""
    consent_ref = await register_consent(world)
    now = datetime.now(UTC)
    for path, message_type, sender, recipient, payload in steps(now):
        before = len(world.recording.submitted)
        response = await world.post(
            f"/cases/{world.case_ref}/{path}",
            {
                "sender": sender.participant,
                "recipient": recipient.participant,
                "payload": payload,
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
        # The header and categories are the payload's projection, made when the envelope was.
        computed = projected(message_type, payload, datetime.fromisoformat(claims["created_at"]))
        assert computed is not None
        header, categories = computed
        assert (claims["consent_ref"], claims["header"]) == (consent_ref, header)
        assert claims["data_categories"] == [c.value for c in categories]
        assert sealed_payload == payload  # as given: nothing added, nothing normalised away
        assert response.json()["message_id"] == claims["id"]
        if message_type is T.RISK_ASSESSMENT:  # its recipient acknowledges: now it counts
            await world.broker.acknowledge(envelope)
    assert len(world.recording.submitted) == 9  # the return plan twice: to NG, then to RO


async def test_a_referral_sent_by_type_is_delivered_and_opened(world: World) -> None:
    consent_ref = await register_consent(world)
    payload = FULL[T.REFERRAL]
    sent = await world.post(
        f"/cases/{world.case_ref}/referral",
        {
            "sender": AT.participant,
            "recipient": NG.participant,
            "payload": payload,
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
        "payload": {"destination_country": "NG", "languages": ["en"]},
    }
    return body | changes


@pytest.mark.parametrize(
    ("body", "locations"),
    [
        (
            referral_body(
                payload={"destination_country": "NG", "immediate_needs": ["shelter", "spa"]}
            ),
            ["body/payload/immediate_needs/1"],
        ),
        (
            referral_body(payload={"destination_country": "NG", "is_child": "perhaps"}),
            ["body/payload/is_child"],
        ),
        (
            referral_body(
                payload={"destination_country": "NG", "person": {"given_name": "A", "secret": 1}}
            ),
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
            "payload": {
                "destination_country": "NG",
                "form_of_exploitation": "pickpocketing",
                "CANARY8Z": "Jane",
            },
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
    # The case is not known at the broker: the node's case view shows what it holds (the
    # refused referral), and why the broker's part is missing: its 404, as it said it.
    view = await world.node.get(
        f"/cases/{world.case_ref}", params={"reader": AT.participant}, headers=AUTH
    )
    assert view.status_code == 200, view.text
    assert view.json()["broker"] is None
    assert view.json()["broker_problem"]["broker_status"] == 404
    assert [(e["direction"], e["status"]) for e in view.json()["timeline"]] == [("sent", "refused")]
    # A case nobody here has anything of: the broker's refusal, with its status.
    unknown = await world.node.get(
        f"/cases/{world.case_ref}-X", params={"reader": AT.participant}, headers=AUTH
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


# --- the header and data categories are computed from the payload ---------------------------

MISMATCH = "urn:trm-broker:problem:header-payload-mismatch"


def not_matching(*locations: str) -> list[dict[str, str]]:
    return [{"location": where, "error": "does not match the payload"} for where in locations]


async def test_a_header_that_contradicts_the_payload_is_refused_naming_the_fields(
    world: World,
) -> None:
    """The issue's first bypass, tried at the sending node: a header saying low risk and
    return recommended, and health data declared as none, over a payload saying otherwise."""
    assessed = datetime.now(UTC).isoformat()
    body = {
        "sender": AT.participant,
        "recipient": NG.participant,
        "header": {"risk_level": "low", "return_recommended": True, "assessed_at": assessed},
        "payload": {
            "risk_level": "high",
            "recommendation": "remain_in_country_of_exploitation",
            "assessed_at": assessed,
            "health": {"psychological_needs": True},
        },
        "data_categories": [],
    }
    response = await world.post(f"/cases/{world.case_ref}/risk-assessment", body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == MISMATCH
    assert "leave them out" in problem["detail"]
    assert problem["errors"] == not_matching(
        "body/header/risk_level", "body/header/return_recommended", "body/data_categories"
    )
    # Field names only: never what the payload or the header says.
    for value in ("high", "low", "remain", "psychological"):
        assert value not in response.text
    assert world.recording.submitted == []


async def test_the_generic_call_refuses_a_header_that_hides_a_child(world: World) -> None:
    response = await world.post(
        "/messages",
        {
            "type": "referral",
            "case_ref": world.case_ref,
            "recipient": NG.participant,
            "sender": AT.participant,
            "header": {"destination_country": "GH", "subject_is_minor": False},
            "payload": {"destination_country": "NG", "is_child": True},
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == MISMATCH
    assert response.json()["errors"] == not_matching(
        "body/header/destination_country", "body/header/subject_is_minor"
    )
    assert world.recording.submitted == []


async def test_a_header_that_does_not_fit_the_type_is_refused_as_invalid(world: World) -> None:
    body = referral_body(header={"accepted": True})
    response = await world.post(
        "/messages", {**body, "type": "referral", "case_ref": world.case_ref}
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "urn:trm-broker:problem:invalid-request"
    assert [e["location"] for e in problem["errors"]] == [
        "body/header/destination_country",
        "body/header/subject_is_minor",
        "body/header/(unknown member)",
    ]
    assert world.recording.submitted == []


async def test_a_header_and_categories_given_as_the_payload_says_are_taken(world: World) -> None:
    consent_ref = await register_consent(world)
    response = await world.post(
        f"/cases/{world.case_ref}/referral",
        referral_body(
            header={"destination_country": "NG", "subject_is_minor": False},
            data_categories=["identity"],
            consent_ref=consent_ref,
        ),
    )
    assert response.status_code == 201, response.text
    claims = jws.parse(world.recording.submitted[-1], jws.TYP_ENVELOPE).claims()
    assert (claims["header"], claims["data_categories"]) == (
        {"destination_country": "NG", "subject_is_minor": False},
        ["identity"],
    )


async def test_a_child_by_date_of_birth_is_sent_as_a_child_whatever_is_child_says(
    world: World,
) -> None:
    """The issue's second bypass: `is_child: false` over a date of birth 15 years back. The
    node says a child's case, so the broker holds it to a guardian's consent."""
    consent_ref = await register_consent(world)  # the person's own consent
    born = datetime.now(UTC).date().replace(day=1) - timedelta(days=15 * 366)
    payload = {
        "destination_country": "NG",
        "is_child": False,
        "person": {"date_of_birth": born.isoformat()},
    }
    response = await world.post(
        f"/cases/{world.case_ref}/referral",
        referral_body(payload=payload, consent_ref=consent_ref),
    )
    assert response.status_code == 409, response.text
    assert response.json()["rule"] == "minor_needs_guardian_consent"
    claims = jws.parse(world.recording.submitted[-1], jws.TYP_ENVELOPE).claims()
    assert claims["header"] == {"destination_country": "NG", "subject_is_minor": True}
    assert claims["data_categories"] == ["identity"]
