"""A node refuses a payload that does not fit its type's schema: it stores nothing and answers
a signed rejection whose reasons name locations only; the broker takes that as final."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Broker, broker_settings, referral, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import KeySet, load_ed25519_public
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
TOKEN = "case-worker-token"
CANARY = "CANARY4VX9QZ"

#: A referral payload with personal data in every place a refusal could leak it from.
NON_CONFORMING: dict[str, Any] = {
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
    assert claims.status == "rejected"
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
    payload = {"form_of_exploitation": "forced_labour", "immediate_needs": ["shelter"]}
    ack = await push(broker, ng_node, referral(AT, NG, payload=payload))
    claims = jws.parse(ack, jws.TYP_ACK).claims()
    assert claims["status"] == "received"
    assert "reasons" not in claims  # a receipt is signed as it always was
    assert [m["payload"] for m in await stored(ng_node)] == [payload]


async def test_the_broker_records_the_nodes_rejection_as_final(
    broker: Broker, ng_node: httpx.AsyncClient
) -> None:
    accepted = await broker.submit(referral(AT, NG, payload=NON_CONFORMING))
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
