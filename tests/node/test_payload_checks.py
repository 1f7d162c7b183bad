"""A node refuses a payload that does not fit its type's schema, or a clear header or data
categories that say other than the payload: it stores nothing and answers a signed rejection
(its code says which) whose reasons name locations only; the broker takes that as final."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    Broker,
    broker_settings,
    envelope,
    referral,
    running_broker,
    running_node,
)
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import KeySet, load_ed25519_public
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
TOKEN = "case-worker-token"
CANARY = "CANARY4VX9QZ"

#: A referral payload with personal data in every place a refusal could leak it from.
NON_CONFORMING: dict[str, Any] = {
    "destination_country": "NG",
    "identification_summary": f"{CANARY} identified at a car wash",
    "person": {"given_name": CANARY, "nationality": CANARY, CANARY: CANARY},
    "immediate_needs": ["shelter", CANARY],
    "is_child": CANARY,
    CANARY: CANARY,
}


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        assert (
            await broker.register(AT, "AT", inbox_url="http://127.0.0.1:9/at")
        ).status_code == 201
        assert (
            await broker.register(NG, "NG", inbox_url="http://127.0.0.1:9/inbox")
        ).status_code == 201
        yield broker


@pytest.fixture
async def ng_node(broker: Broker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    key_file = tmp_path / "ng.keys.json"
    NG.write(key_file)
    async with running_node(tmp_path, [key_file], broker.client, TOKEN) as client:
        yield client


async def push(broker: Broker, node: httpx.AsyncClient, envelope: dict[str, str]) -> Any:
    """Submit to the broker, then push to the node as the broker would; the node's answer."""
    accepted = await broker.submit(envelope)
    assert accepted.status_code == 202, accepted.text
    body = {"envelope": envelope, "receipt": accepted.json()["receipt"]}
    signer = SignedRequests(broker.app.state.broker.signing_key)
    response = await node.post("/inbox", json=body, auth=signer)
    assert response.status_code == 200, response.text
    return response.json()["ack"]


async def stored(node: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await node.get("/messages", headers={"authorization": f"Bearer {TOKEN}"})
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_a_non_conforming_payload_gets_a_signed_rejection_and_nothing_is_stored(
    broker: Broker, ng_node: httpx.AsyncClient
) -> None:
    envelope = referral(AT, NG, payload=NON_CONFORMING)
    ack = await push(broker, ng_node, envelope)

    # The rejection is signed by the recipient's key, for exactly this envelope.
    parsed = jws.parse(ack, jws.TYP_ACK)
    assert parsed.kid == NG.signing.kid
    jws.verify(parsed, load_ed25519_public(NG.signing.public_b64))
    claims = AckClaims.model_validate(parsed.claims())
    assert (claims.status, claims.code) == ("rejected", "payload-invalid")
    assert claims.envelope_digest == jws.digest(envelope)
    assert claims.recipient == NG.participant
    assert set(claims.reasons) == {
        "payload: unknown member",
        "payload/person: unknown member",
        "payload/person/nationality: not in the expected format",
        "payload/immediate_needs/1: not a known code",
        "payload/is_child: expected true or false",
    }
    # Its reasons name where, never what: no personal data travels back or is logged.
    assert CANARY not in b64url_decode(ack["payload"]).decode()
    assert CANARY not in json.dumps(ack)
    assert await stored(ng_node) == []


async def test_a_conforming_payload_is_stored_and_acknowledged_as_received(
    broker: Broker, ng_node: httpx.AsyncClient
) -> None:
    payload = {
        "destination_country": "NG",
        "form_of_exploitation": "forced_labour",
        "immediate_needs": ["shelter"],
    }
    ack = await push(broker, ng_node, referral(AT, NG, payload=payload))
    claims = jws.parse(ack, jws.TYP_ACK).claims()
    assert claims["status"] == "received"
    assert "reasons" not in claims  # a receipt is signed as it always was
    assert "code" not in claims
    assert [m["payload"] for m in await stored(ng_node)] == [payload]


#: A referral whose header says an adult where its payload says a child.
HIDDEN_CHILD: dict[str, Any] = {
    "payload": {"destination_country": "NG", "is_child": True},
    "header": {"destination_country": "NG", "subject_is_minor": False},
}


@pytest.mark.parametrize(
    "changes", [{"payload": NON_CONFORMING}, HIDDEN_CHILD], ids=["payload-invalid", "header-lies"]
)
async def test_the_broker_records_the_nodes_rejection_as_final(
    broker: Broker, ng_node: httpx.AsyncClient, changes: dict[str, Any]
) -> None:
    accepted = await broker.submit(referral(AT, NG, **changes))
    message_id = accepted.json()["message_id"]
    dispatcher = DeliveryDispatcher(
        broker.app.state.broker.sessions,
        ng_node,
        timeout=30,  # a push's deadline: room for a loaded machine
        poll_interval=0.1,
        backoff_cap=1,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=broker.app.state.broker.signing_key,
    )
    assert await dispatcher.run_once() == 1
    status = (await broker.status(message_id, AT)).json()
    assert (status["status"], status["delivery"]["status"]) == ("rejected", "rejected")
    assert status["delivery"]["attempts"] == 1
    assert await dispatcher.run_once() == 0
    assert await stored(ng_node) == []


# --- the clear header is the payload's projection (domain/projections.py) ------------------
# A sending node that writes its own header (here: the test signs its own envelopes) could
# talk the broker's safeguards around; the recipient's node, which alone opens the payload,
# computes the header again and rejects one that says otherwise.


async def test_a_referral_whose_header_hides_a_child_gets_a_signed_rejection_naming_the_field(
    broker: Broker, ng_node: httpx.AsyncClient
) -> None:
    payload = {
        "destination_country": "NG",
        "is_child": False,  # the referrer says an adult; the date of birth says a child
        "person": {"given_name": CANARY, "date_of_birth": "2011-05-01"},
    }
    adult = {"destination_country": "NG", "subject_is_minor": False}
    envelope = referral(AT, NG, payload=payload, header=adult)
    ack = await push(broker, ng_node, envelope)

    parsed = jws.parse(ack, jws.TYP_ACK)
    jws.verify(parsed, load_ed25519_public(NG.signing.public_b64))
    claims = AckClaims.model_validate(parsed.claims())
    assert (claims.status, claims.code) == ("rejected", "header-payload-mismatch")
    assert claims.envelope_digest == jws.digest(envelope)
    assert claims.reasons == ["header/subject_is_minor: does not match the payload"]
    assert CANARY not in b64url_decode(ack["payload"]).decode()
    assert await stored(ng_node) == []


async def accepted_case(broker: Broker, node: httpx.AsyncClient) -> tuple[str, str]:
    """A case AT referred to NG (delivered to NG's node) and NG accepted: its case and
    consent references. A risk assessment may follow."""
    case_ref = f"AT-{uuid.uuid4().hex[:12]}"
    consent = f"consent-{case_ref}"
    ack = await push(broker, node, referral(AT, NG, case_ref=case_ref))
    assert jws.parse(ack, jws.TYP_ACK).claims()["status"] == "received"
    acceptance = envelope(
        NG,
        AT,
        MessageType.REFERRAL_RESPONSE,
        None,
        case_ref=case_ref,
        consent_ref=consent,
        payload={"accepted": True},
    )
    assert (await broker.submit(acceptance)).status_code == 202
    return case_ref, consent


ASSESSED = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
#: The risk assessment's payload: high risk, remain; with health data.
ASSESSMENT: dict[str, Any] = {
    "risk_level": "high",
    "recommendation": "remain_in_country_of_exploitation",
    "assessed_at": ASSESSED.isoformat(),
    "health": {"medical_needs": True, "notes": CANARY},
}


@pytest.mark.parametrize(
    ("header", "categories", "reasons"),
    [
        (  # the first bypass: a low risk and a return the payload does not say
            {"risk_level": "low", "return_recommended": True, "assessed_at": ASSESSED.isoformat()},
            None,
            ["header/risk_level", "header/return_recommended"],
        ),
        (
            {
                "risk_level": "high",
                "return_recommended": False,
                "assessed_at": (ASSESSED + timedelta(days=30)).isoformat(),
            },
            None,
            ["header/assessed_at"],
        ),
        (None, [], ["data_categories"]),  # health data declared as none
        (None, [DataCategory.HEALTH, DataCategory.OTHER], ["data_categories"]),
    ],
    ids=["risk-said-low", "assessed-later", "health-as-no-data", "more-categories"],
)
async def test_a_risk_assessment_whose_header_or_categories_lie_is_rejected_and_not_stored(
    broker: Broker,
    ng_node: httpx.AsyncClient,
    header: dict[str, Any] | None,
    categories: list[DataCategory] | None,
    reasons: list[str],
) -> None:
    case_ref, consent = await accepted_case(broker, ng_node)
    lie = envelope(
        AT,
        NG,
        MessageType.RISK_ASSESSMENT,
        header,
        case_ref=case_ref,
        consent_ref=consent,
        payload=ASSESSMENT,
        data_categories=categories,
    )
    ack = await push(broker, ng_node, lie)
    claims = AckClaims.model_validate(jws.parse(ack, jws.TYP_ACK).claims())
    assert (claims.status, claims.code) == ("rejected", "header-payload-mismatch")
    assert claims.reasons == [f"{where}: does not match the payload" for where in reasons]
    assert CANARY not in json.dumps(ack)
    assert [m["type"] for m in await stored(ng_node)] == ["referral"]  # not the assessment


async def test_a_risk_assessment_whose_header_is_the_payloads_is_received(
    broker: Broker, ng_node: httpx.AsyncClient
) -> None:
    """The control: the same assessment, its header and categories computed from it."""
    case_ref, consent = await accepted_case(broker, ng_node)
    honest = envelope(
        AT,
        NG,
        MessageType.RISK_ASSESSMENT,
        None,
        case_ref=case_ref,
        consent_ref=consent,
        payload=ASSESSMENT,
    )
    claims = jws.parse(honest, jws.TYP_ENVELOPE).claims()
    assert claims["data_categories"] == ["health"]
    assert claims["header"]["risk_level"] == "high"
    assert claims["header"]["return_recommended"] is False
    ack = await push(broker, ng_node, honest)
    assert jws.parse(ack, jws.TYP_ACK).claims()["status"] == "received"
    assert [m["payload"] for m in await stored(ng_node)][-1] == ASSESSMENT
