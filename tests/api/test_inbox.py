"""The pull inbox: a recipient the broker cannot reach fetches its messages (long-poll),
exactly as a push would carry them, and acknowledges them with its signed answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.store.models import LedgerEntry

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")  # pull mode: registered without an inbox URL


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, inbox_max_wait_seconds=5)
    async with running_broker(settings) as b:
        assert (await b.register(AT, "AT")).status_code == 201
        assert (await b.register(NG, "NG")).status_code == 201
        yield b


def ack(item: dict[str, Any], signer: KeySet = NG, **overrides: Any) -> dict[str, Any]:
    claims = {
        "v": 1,
        "message_id": item["message_id"],
        "envelope_digest": jws.digest(item["envelope"]),
        "recipient": NG.participant,
        "received_at": "2026-11-23T00:00:00.000Z",
        "status": "received",
        **overrides,
    }
    return {"ack": jws.sign(claims, signer.signing, jws.TYP_ACK)}


async def fetch(broker: Broker, who: KeySet = NG, query: str = "") -> dict[str, Any]:
    response = await broker.call("GET", f"/v1/inbox{query}", who)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_recipient_fetches_acknowledges_and_is_not_offered_it_again(
    broker: Broker,
) -> None:
    assert await fetch(broker) == {"items": [], "next": None}
    sent = referral(AT, NG)
    message_id = (await broker.submit(sent)).json()["message_id"]

    page = await fetch(broker)
    [item] = page["items"]
    assert item["message_id"] == message_id
    assert item["envelope"] == sent  # exactly what the sender signed
    assert jws.parse(item["receipt"], jws.TYP_RECEIPT).claims()["message_id"] == message_id
    assert page["next"] == item["cursor"]
    assert await fetch(broker, query=f"?after={item['cursor']}") == {"items": [], "next": None}
    status = (await broker.status(message_id, AT)).json()
    assert status["status"] == "delivered"  # fetched, not yet acknowledged
    assert status["delivery"]["fetched_at"] is not None

    # Not acknowledged yet: fetching from the start offers it again.
    assert [i["message_id"] for i in (await fetch(broker))["items"]] == [message_id]

    answered = await broker.call("POST", f"/v1/inbox/{message_id}/ack", NG, json=ack(item))
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"message_id": message_id, "status": "acknowledged"}
    again = await broker.call("POST", f"/v1/inbox/{message_id}/ack", NG, json=ack(item))
    assert again.json() == {"message_id": message_id, "status": "acknowledged"}
    assert await fetch(broker) == {"items": [], "next": None}
    status = (await broker.status(message_id, AT)).json()
    assert (status["status"], status["delivery"]["attempts"]) == ("acknowledged", 1)

    async with broker.app.state.broker.sessions() as session:
        bodies = (await session.scalars(select(LedgerEntry.body))).all()
    acknowledged = [json.loads(b) for b in bodies if b"message.acknowledged" in b]
    assert [e["message_id"] for e in acknowledged] == [message_id]  # one, not two


async def test_a_signed_rejection_through_the_pull_inbox_is_final(broker: Broker) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    [item] = (await fetch(broker))["items"]
    rejection = ack(
        item, status="rejected", reasons=["payload/person: unknown member"], code="payload-invalid"
    )
    answered = await broker.call("POST", f"/v1/inbox/{message_id}/ack", NG, json=rejection)
    assert answered.json() == {"message_id": message_id, "status": "rejected"}
    assert (await broker.status(message_id, AT)).json()["status"] == "rejected"
    assert await fetch(broker) == {"items": [], "next": None}


@pytest.mark.parametrize(
    ("make_ack", "reason"),
    [
        (lambda item: ack(item, signer=AT), "ack_unknown_key"),
        (lambda item: ack(item, envelope_digest="sha-256:" + "A" * 43), "ack_mismatch"),
        (lambda item: ack(item, status="lost"), "ack_mismatch"),
        (
            lambda item: {"ack": {"protected": "e30", "payload": "e30", "signature": ""}},
            "ack_malformed",
        ),
    ],
    ids=["sender-key", "other-digest", "unknown-status", "not-a-jws"],
)
async def test_an_ack_that_does_not_verify_is_refused_and_the_message_stays(
    broker: Broker, make_ack: Any, reason: str
) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    [item] = (await fetch(broker))["items"]
    refused = await broker.call("POST", f"/v1/inbox/{message_id}/ack", NG, json=make_ack(item))
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["reason"] == reason
    assert [i["message_id"] for i in (await fetch(broker))["items"]] == [message_id]


async def test_no_one_else_fetches_or_acknowledges_a_recipients_messages(broker: Broker) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    [item] = (await fetch(broker))["items"]
    assert await fetch(broker, AT) == {"items": [], "next": None}
    foreign = await broker.call("POST", f"/v1/inbox/{message_id}/ack", AT, json=ack(item, AT))
    assert foreign.status_code == 404
    unsigned = await broker.client.get("/v1/inbox")
    assert unsigned.status_code == 401
    assert (await broker.status(message_id, AT)).json()["status"] == "delivered"


async def test_a_long_poll_returns_the_message_that_arrives_while_it_waits(
    database_url: str, tmp_path: Path
) -> None:
    # A long poll far longer than sending takes, even on a loaded machine: the answer must
    # come with the message, well before the poll's end.
    settings = broker_settings(database_url, tmp_path, inbox_max_wait_seconds=120)
    async with running_broker(settings) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201
        waiting = asyncio.create_task(broker.call("GET", "/v1/inbox?wait=120", NG))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # nothing yet: it waits
        message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
        response = await asyncio.wait_for(waiting, timeout=100)
        assert [i["message_id"] for i in response.json()["items"]] == [message_id]


async def test_a_long_poll_waits_no_longer_than_the_setting(broker: Broker) -> None:
    response = await asyncio.wait_for(broker.call("GET", "/v1/inbox?wait=300", NG), timeout=30)
    assert response.json() == {"items": [], "next": None}
    too_long = await broker.call("GET", "/v1/inbox?wait=301", NG)
    assert too_long.status_code == 400
    assert too_long.headers["content-type"] == PROBLEM


async def test_the_dispatcher_never_pushes_to_a_recipient_in_pull_mode(broker: Broker) -> None:
    await broker.submit(referral(AT, NG))
    async with httpx.AsyncClient() as http:
        dispatcher = DeliveryDispatcher(
            broker.app.state.broker.sessions,
            http,
            timeout=1,
            poll_interval=0.1,
            backoff_cap=1,
            policy=InboxPolicy(allow_loopback=True),
            signing_key=broker.app.state.broker.signing_key,
        )
        assert await dispatcher.run_once() == 0
