"""Small-order public keys are refused at registration and rotation.

The Ed25519 identity point (0x01 then 31 zero bytes) as a signing key would let anyone
forge that participant's envelopes: OpenSSL accepts ``identity || 32 zero bytes`` as its
signature over any message. The registry must never hold such a key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    OPERATOR_ID,
    PROBLEM,
    Broker,
    broker_settings,
    referral,
    running_broker,
)
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.keys import KeySet, key_id

IDENTITY = bytes([1]) + bytes(31)
FORGED_SIGNATURE = IDENTITY + bytes(32)
WEAK_X25519 = bytes(32)  # u = 0, a point of order 2


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        yield b


def weak_public(keyset: KeySet, *, signing: bytes | None, encryption: bytes | None) -> Any:
    keys = keyset.public()
    if signing is not None:
        keys["signing"] = {
            "kid": key_id("Ed25519", signing),
            "alg": "Ed25519",
            "public": b64url_encode(signing),
        }
    if encryption is not None:
        keys["encryption"] = {
            "kid": key_id("X25519", encryption),
            "alg": "X25519",
            "public": b64url_encode(encryption),
        }
    return keys


async def register_with(broker: Broker, keyset: KeySet, keys: Any) -> httpx.Response:
    body = {"id": keyset.participant, "kind": "focal_point", "country": "AT", "keys": keys}
    return await broker.call("POST", "/v1/participants", broker.operator, json=body)


def assert_weak_key_problem(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    detail = response.json()["detail"]
    assert "weak or invalid" in detail
    assert "trm-broker keys new" in detail


async def listed(broker: Broker) -> list[dict[str, Any]]:
    participants: list[dict[str, Any]] = (await broker.client.get("/v1/participants")).json()[
        "participants"
    ]
    return [p for p in participants if p["id"] != OPERATOR_ID]


@pytest.mark.parametrize(
    ("signing", "encryption"),
    [(IDENTITY, None), (None, WEAK_X25519), (None, (1).to_bytes(32, "little"))],
    ids=["ed25519-identity", "x25519-zero", "x25519-u1"],
)
async def test_registration_with_a_small_order_key_is_refused(
    broker: Broker, signing: bytes | None, encryption: bytes | None
) -> None:
    keyset = KeySet.generate("at.focal-point")
    keys = weak_public(keyset, signing=signing, encryption=encryption)
    assert_weak_key_problem(await register_with(broker, keyset, keys))
    assert await listed(broker) == []


async def test_the_identity_point_forgery_cannot_get_an_envelope_accepted(broker: Broker) -> None:
    attacker, victim = KeySet.generate("at.focal-point"), KeySet.generate("ng.naptip")
    assert (await broker.register(victim, "NG")).status_code == 201
    weak_kid = key_id("Ed25519", IDENTITY)

    # The attack: register the identity point as at.focal-point's signing key ...
    keys = weak_public(attacker, signing=IDENTITY, encryption=None)
    assert_weak_key_problem(await register_with(broker, attacker, keys))
    assert [p["id"] for p in await listed(broker)] == ["ng.naptip"]

    # ... then sign anything with the constant signature identity || 32 zero bytes.
    envelope = referral(attacker, victim)
    header = {"alg": "EdDSA", "kid": weak_kid, "typ": "trm-envelope+jws"}
    envelope["protected"] = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    envelope["signature"] = b64url_encode(FORGED_SIGNATURE)

    response = await broker.submit(envelope)
    assert response.status_code != 202
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM
    assert await broker.stored_counts() == (0, 0)


@pytest.mark.parametrize(
    ("use", "alg", "public"),
    [("sig", "Ed25519", IDENTITY), ("enc", "X25519", WEAK_X25519)],
    ids=["sig-identity", "enc-zero"],
)
async def test_rotation_to_a_small_order_key_is_refused(
    broker: Broker, use: str, alg: str, public: bytes
) -> None:
    keyset = KeySet.generate("at.focal-point")
    assert (await broker.register(keyset, "AT")).status_code == 201
    before = await listed(broker)
    response = await broker.call(
        "POST",
        f"/v1/participants/{keyset.participant}/keys",
        broker.operator,
        json={"use": use, "alg": alg, "public": b64url_encode(public), "overlap_seconds": 0},
    )
    assert_weak_key_problem(response)
    assert await listed(broker) == before
    assert public not in [b64url_decode(k["public"]) for k in before[0]["keys"]]
