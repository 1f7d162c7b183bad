"""Nodes deduplicate by message id (docs/design.md §8): a message delivered again, one after the
other or at the same moment, gets the very answer it got the first time, acknowledgement or
rejection; another envelope under the same id is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import node_database, node_settings, rows, running_node, stored_messages
from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.signed_objects import ReceiptClaims
from trm_broker.node.store import ReceivedMessage, RejectedMessage
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
CANARY = "CANARY7DEDUP"
CONFORMING: dict[str, Any] = {"destination_country": "NG", "form_of_exploitation": "forced_labour"}
NON_CONFORMING: dict[str, Any] = {**CONFORMING, CANARY: CANARY}
PAYLOADS = pytest.mark.parametrize(
    ("payload", "status"), [(CONFORMING, "received"), (NON_CONFORMING, "rejected")]
)


@pytest.fixture
async def broker(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201
        yield broker


@pytest.fixture(params=["sqlite", "postgresql"])
def node_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return node_database(request, tmp_path, request.param)


@pytest.fixture
async def node(broker: Broker, node_db: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_node(node_settings(tmp_path, [NG], node_db), broker.client) as client:
        yield client


async def accepted(broker: Broker, envelope: dict[str, str]) -> dict[str, Any]:
    """The push the broker makes for an envelope it accepted: envelope and receipt."""
    response = await broker.submit(envelope)
    assert response.status_code == 202, response.text
    return {"envelope": envelope, "receipt": response.json()["receipt"]}


async def push(broker: Broker, node: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST to the node's inbox as the broker does: signed afresh by the broker's key."""
    signer = SignedRequests(broker.app.state.broker.signing_key)
    return await node.post("/inbox", json=body, auth=signer)


@PAYLOADS
async def test_a_repeated_delivery_gets_the_same_answer_byte_for_byte(
    broker: Broker,
    node: httpx.AsyncClient,
    node_db: str,
    payload: dict[str, Any],
    status: str,
) -> None:
    body = await accepted(broker, referral(AT, NG, payload=payload))
    first = await push(broker, node, body)
    await asyncio.sleep(0.01)  # a fresh answer would carry a later received_at
    again = await push(broker, node, body)
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.content == first.content
    assert jws.parse(first.json()["ack"], jws.TYP_ACK).claims()["status"] == status
    assert len(await stored_messages(node)) == (1 if status == "received" else 0)
    # A rejection is kept only as the signed answer: nothing of the payload.
    rejected = await rows(node_db, RejectedMessage)
    assert len(rejected) == (1 if status == "rejected" else 0)
    assert CANARY not in json.dumps(rejected, default=str)


@PAYLOADS
async def test_the_same_message_delivered_at_once_gets_one_answer(
    broker: Broker,
    node: httpx.AsyncClient,
    node_db: str,
    payload: dict[str, Any],
    status: str,
) -> None:
    body = await accepted(broker, referral(AT, NG, payload=payload))
    answers = await asyncio.gather(*(push(broker, node, body) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert {a.content for a in answers} == {answers[0].content}
    assert jws.parse(answers[0].json()["ack"], jws.TYP_ACK).claims()["status"] == status
    stored = await rows(node_db, ReceivedMessage if status == "received" else RejectedMessage)
    assert len(stored) == 1


@PAYLOADS
async def test_another_envelope_under_an_id_already_answered_is_refused(
    broker: Broker, node: httpx.AsyncClient, payload: dict[str, Any], status: str
) -> None:
    body = await accepted(broker, referral(AT, NG, payload=payload))
    first = await push(broker, node, body)
    assert first.status_code == 200, first.text
    message_id = jws.parse(body["envelope"], jws.TYP_ENVELOPE).claims()["id"]
    # The broker never receipts two envelopes under one id; sign such a receipt regardless,
    # so that only the node's own check stands in the way.
    other = referral(AT, NG, payload=payload, message_id=message_id)
    receipt = ReceiptClaims(
        v=1,
        message_id=message_id,
        envelope_digest=jws.digest(other),
        accepted_at=datetime.now(UTC).isoformat(),
        ledger_index=None,
    )
    signed = jws.sign(
        receipt.model_dump(mode="json"), broker.app.state.broker.signing_key, jws.TYP_RECEIPT
    )
    refused = await push(broker, node, {"envelope": other, "receipt": signed})
    assert refused.status_code == 400
    assert refused.json()["type"].endswith(":invalid-envelope")
    assert message_id in refused.json()["detail"]
    # The first envelope still gets its first answer.
    assert (await push(broker, node, body)).content == first.content
