"""The node's client of the broker refuses every malformed answer with a BrokerError, never
another exception: what the parser fuzzing (tests/fuzz, target ``problem``) found raising
RecursionError, OverflowError, ValueError or KeyError instead."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from trm_broker.crypto import jws
from trm_broker.crypto.keys import SigningKey
from trm_broker.node.broker_client import BrokerClient, BrokerError, RegisteredKey

BROKER_KEY = SigningKey.generate()
SENDER_KEY = SigningKey.generate()
ENVELOPE = jws.sign({"v": 1, "id": "m-1"}, SENDER_KEY, jws.TYP_ENVELOPE)
DEEP = b"[" * 5000  # deeper than json's recursion limit


class Broker:
    """Answers `GET /v1/broker` with its key, every other call with ``status`` and ``body``."""

    status = 200
    body = b""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/broker":
            key = {"kid": BROKER_KEY.kid, "alg": "Ed25519", "public": BROKER_KEY.public_b64}
            return httpx.Response(200, json={"signing_key": key, "retired_keys": []})
        return httpx.Response(self.status, content=self.body)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[BrokerClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(broker.handle)) as http:
        yield BrokerClient("http://broker", http=http)


def _answer(broker: Broker, status: int, body: bytes | Any) -> None:
    broker.status = status
    broker.body = body if isinstance(body, bytes) else json.dumps(body).encode()


async def test_a_problem_nested_too_deep_is_an_error_of_its_status(
    broker: Broker, client: BrokerClient
) -> None:
    _answer(broker, 400, DEEP)
    with pytest.raises(BrokerError) as refused:
        await client.message_status("m-1", SENDER_KEY)
    assert refused.value.status == 400
    assert refused.value.problem == {"title": "HTTP 400"}


@pytest.mark.parametrize(
    "body",
    [b"<html>Created</html>", DEEP, [ENVELOPE], {"message": "accepted"}],
    ids=["not-json", "too-deep", "a-list", "no-receipt"],
)
async def test_an_acceptance_without_a_receipt_is_refused(
    broker: Broker, client: BrokerClient, body: bytes | Any
) -> None:
    _answer(broker, 201, body)
    with pytest.raises(BrokerError) as refused:
        await client.submit(ENVELOPE, SENDER_KEY)
    assert refused.value.status == 502
    assert refused.value.problem["title"] == "Invalid receipt"


async def test_a_broker_signed_receipt_missing_a_claim_is_refused(
    broker: Broker, client: BrokerClient
) -> None:
    claims = {"v": 1, "message_id": "m-1", "envelope_digest": jws.digest(ENVELOPE)}
    _answer(broker, 201, {"receipt": jws.sign(claims, BROKER_KEY, jws.TYP_RECEIPT)})
    with pytest.raises(BrokerError) as refused:
        await client.submit(ENVELOPE, SENDER_KEY)
    assert refused.value.problem["title"] == "Invalid receipt"
    assert "accepted_at" in refused.value.problem["detail"]


async def test_a_receipt_for_another_envelope_is_refused(
    broker: Broker, client: BrokerClient
) -> None:
    other = jws.sign({"v": 1, "id": "m-2"}, SENDER_KEY, jws.TYP_ENVELOPE)
    claims = {
        "v": 1,
        "message_id": "m-2",
        "envelope_digest": jws.digest(other),
        "accepted_at": "2025-03-01T12:00:01.000Z",
    }
    _answer(broker, 201, {"receipt": jws.sign(claims, BROKER_KEY, jws.TYP_RECEIPT)})
    with pytest.raises(BrokerError) as refused:
        await client.submit(ENVELOPE, SENDER_KEY)
    assert "digest-mismatch" in refused.value.problem["detail"]


async def test_a_whole_receipt_is_taken(broker: Broker, client: BrokerClient) -> None:
    claims = {
        "v": 1,
        "message_id": "m-1",
        "envelope_digest": jws.digest(ENVELOPE),
        "accepted_at": "2025-03-01T12:00:01.000Z",
        "ledger_index": None,
    }
    _answer(broker, 201, {"receipt": jws.sign(claims, BROKER_KEY, jws.TYP_RECEIPT)})
    receipt = await client.submit(ENVELOPE, SENDER_KEY)
    assert (receipt.message_id, receipt.envelope_digest) == ("m-1", jws.digest(ENVELOPE))


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"items": [], "next": Infinity}',
        b'{"items": [{"cursor": -Infinity, "message_id": "m-1", "envelope": {}, "receipt": {}}]}',
    ],
    ids=["too-deep", "infinite-next", "infinite-cursor"],
)
async def test_a_malformed_inbox_page_is_refused(
    broker: Broker, client: BrokerClient, body: bytes
) -> None:
    _answer(broker, 200, body)
    with pytest.raises(BrokerError) as refused:
        await client.fetch_inbox(SENDER_KEY, after=None, wait=0)
    assert refused.value.problem == {"title": "Malformed inbox page"}


def test_a_sender_key_is_trusted_only_inside_its_validity() -> None:
    """The node judges a sender's key at the broker's acceptance time as the broker did:
    not before the key's valid_from, not at or after its revocation or expiry."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    key = RegisteredKey(
        kid="k",
        participant="at.focal-point",
        use="sig",
        alg="Ed25519",
        public="",
        valid_from=start,
        valid_until=start + timedelta(days=30),
        revoked_at=start + timedelta(days=10),
    )
    assert not key.valid_at(start - timedelta(seconds=1))
    assert key.valid_at(start)
    assert key.valid_at(start + timedelta(days=9))
    assert not key.valid_at(start + timedelta(days=10))
    assert not key.valid_at(start + timedelta(days=31))
