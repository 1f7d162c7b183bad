"""The broker and a node verify envelopes with the same verifier and answer the same fault
with the same problem (status and type), from the one table in ``web/refusals.py``.

The node is handed each faulty envelope with a receipt the broker's key really signed for
it, as if the broker had accepted it, so it gets to its own checks. Freshness is the one
check only the broker makes: a node takes a message delivered late (docs/design.md §8).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker, running_node
from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.signed_objects import ReceiptClaims
from trm_broker.web.signed_requests import SignedRequests

AT_FIRST = KeySet.generate("at.focal-point")
AT = KeySet(AT_FIRST.participant, SigningKey.generate(), AT_FIRST.encryption)
NG = KeySet.generate("ng.naptip")


@pytest.fixture
async def broker(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as b:
        assert (await b.register(AT_FIRST, "AT")).status_code == 201
        assert (await b.register(NG, "NG")).status_code == 201
        # AT's first signing key is replaced at once: it expires now (key-not-usable).
        rotation = {"use": "sig", "alg": "Ed25519", "public": AT.signing.public_b64}
        response = await b.call(
            "POST",
            f"/v1/participants/{AT.participant}/keys",
            b.operator,
            json=rotation | {"overlap_seconds": 0},
        )
        assert response.status_code == 201, response.text
        b.keysets[AT.participant] = AT
        yield b


def claims_of(envelope: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(envelope["payload"]))
    return result


def signed_raw(header: dict[str, Any], payload: bytes, key: SigningKey) -> dict[str, str]:
    protected, body = b64url_encode(canonical_json(header)), b64url_encode(payload)
    signature = b64url_encode(key.sign(f"{protected}.{body}".encode()))
    return {"protected": protected, "payload": body, "signature": signature}


def _flipped_signature() -> dict[str, str]:
    envelope = referral(AT, NG)
    raw = bytearray(b64url_decode(envelope["signature"]))
    raw[3] ^= 0x01
    return {**envelope, "signature": b64url_encode(bytes(raw))}


def _header(kid: str, **changes: str) -> dict[str, str]:
    return {"alg": "EdDSA", "kid": kid, "typ": jws.TYP_ENVELOPE} | changes


#: name -> (the faulty envelope, the status and problem type both must answer)
FAULTS: dict[str, tuple[Callable[[], dict[str, str]], int, str]] = {
    # NG signs, with its own registered key, an envelope naming AT as its sender.
    "key-not-the-senders": (
        lambda: jws.sign(claims_of(referral(AT, NG)), NG.signing, jws.TYP_ENVELOPE),
        403,
        "forbidden",
    ),
    "bad-signature": (_flipped_signature, 401, "bad-signature"),
    "unknown-key": (
        lambda: jws.sign(claims_of(referral(AT, NG)), SigningKey.generate(), jws.TYP_ENVELOPE),
        403,
        "unknown-sender",
    ),
    "expired-key": (lambda: referral(AT_FIRST, NG), 403, "unknown-sender"),
    "schema-mismatch": (
        lambda: jws.sign(claims_of(referral(AT, NG)) | {"extra": 1}, AT.signing, jws.TYP_ENVELOPE),
        400,
        "invalid-envelope",
    ),
    "not-canonical": (
        lambda: signed_raw(
            _header(AT.signing.kid),
            json.dumps(claims_of(referral(AT, NG)), indent=1).encode(),
            AT.signing,
        ),
        400,
        "invalid-envelope",
    ),
    "unsupported-alg": (
        lambda: signed_raw(
            _header(AT.signing.kid, alg="HS256"),
            b64url_decode(referral(AT, NG)["payload"]),
            AT.signing,
        ),
        400,
        "invalid-envelope",
    ),
    "wrong-typ": (
        lambda: jws.sign(claims_of(referral(AT, NG)), AT.signing, jws.TYP_ACK),
        400,
        "invalid-envelope",
    ),
}


def receipt_for(broker: Broker, envelope: dict[str, str]) -> dict[str, str]:
    """A receipt the broker's key signs for ``envelope``, as if the broker had accepted it."""
    claims = ReceiptClaims(
        v=1,
        message_id=claims_of(envelope)["id"],
        envelope_digest=jws.digest(envelope),
        accepted_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        ledger_index=None,
    )
    key = broker.app.state.broker.signing_key
    return jws.sign(claims.model_dump(mode="json"), key, jws.TYP_RECEIPT)


def answer(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert body["status"] == response.status_code
    return response.status_code, body["type"].removeprefix("urn:trm-broker:problem:")


async def test_the_broker_and_a_node_answer_each_fault_with_the_same_problem(
    broker: Broker, tmp_path: Path
) -> None:
    key_file = tmp_path / "ng.json"
    NG.write(key_file)
    auth = SignedRequests(broker.app.state.broker.signing_key)
    async with running_node(tmp_path, [key_file], broker.client, "t") as node:
        valid = referral(AT, NG)
        accepted = await broker.submit(valid, signer=AT.signing)
        assert accepted.status_code == 202, accepted.text  # the setup itself is sound
        for name, (make, status, slug) in FAULTS.items():
            envelope = make()
            at_broker = await broker.submit(envelope, signer=AT.signing)
            push = {"envelope": envelope, "receipt": receipt_for(broker, envelope)}
            at_node = await node.post("/inbox", json=push, auth=auth)
            assert answer(at_broker) == answer(at_node) == (status, slug), name
            assert at_broker.json()["detail"], name
        stored = await node.get("/messages", headers={"authorization": "Bearer t"})
        assert stored.json()["messages"] == []
    assert await broker.stored_counts() == (1, 1)
