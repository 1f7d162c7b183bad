"""The registry takes MLKEM768-X25519 (post-quantum hybrid) encryption keys, checked like
X25519 ones, and the broker accepts envelopes sealed to them with the hybrid suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.keys import HybridEncryptionKey, KeySet, key_id
from trm_broker.crypto.seal import SUITE_MLKEM768_X25519

HYBRID: Final = "MLKEM768-X25519"


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        yield b


async def enc_keys(broker: Broker, participant: str) -> list[dict[str, Any]]:
    listed = (await broker.client.get("/v1/participants")).json()["participants"]
    entry = next(p for p in listed if p["id"] == participant)
    return [k for k in entry["keys"] if k["use"] == "enc"]


async def register_with_encryption(
    broker: Broker, keyset: KeySet, encryption: dict[str, Any]
) -> httpx.Response:
    keys = {**keyset.public(), "encryption": encryption}
    body = {"id": keyset.participant, "kind": "focal_point", "country": "NG", "keys": keys}
    return await broker.call("POST", "/v1/participants", broker.operator, json=body)


async def rotate(broker: Broker, participant: str, body: dict[str, Any]) -> httpx.Response:
    return await broker.call(
        "POST", f"/v1/participants/{participant}/keys", broker.operator, json=body
    )


def assert_refused(response: httpx.Response, *phrases: str) -> None:
    # Every refusal of a request body is problem+json "invalid-request" (400) in this API.
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("invalid-request")
    for phrase in phrases:
        assert phrase in response.json()["detail"]


async def test_a_participant_registers_with_a_hybrid_encryption_key(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip", encryption_alg=HYBRID)
    response = await broker.register(ng, "NG")
    assert response.status_code == 201, response.text
    [enc] = await enc_keys(broker, ng.participant)
    assert (enc["alg"], enc["kid"], enc["public"]) == (
        HYBRID,
        ng.encryption.kid,
        ng.encryption.public_b64,
    )


@pytest.mark.parametrize("length", [32, 1184, 1215, 1217])
async def test_a_hybrid_key_of_the_wrong_length_is_refused(broker: Broker, length: int) -> None:
    ng = KeySet.generate("ng.naptip")
    whole = b64url_decode(HybridEncryptionKey.generate().public_b64)
    public = b64url_encode((whole + bytes(1))[:length])
    response = await register_with_encryption(broker, ng, {"alg": HYBRID, "public": public})
    assert_refused(response, "1216 bytes", f"has {length}")
    listed = (await broker.client.get("/v1/participants")).json()["participants"]
    assert ng.participant not in [p["id"] for p in listed]


async def test_a_hybrid_key_whose_ml_kem_half_is_invalid_is_refused(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip")
    raw = b64url_decode(HybridEncryptionKey.generate().public_b64)
    public = b64url_encode(bytes([0xFF]) * 1184 + raw[1184:])  # coefficients >= q
    response = await register_with_encryption(broker, ng, {"alg": HYBRID, "public": public})
    assert_refused(response, "weak or invalid", "trm-broker keys new")


async def test_a_hybrid_key_with_a_low_order_x25519_half_is_refused(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip")
    raw = b64url_decode(HybridEncryptionKey.generate().public_b64)
    public = b64url_encode(raw[:1184] + bytes(32))
    response = await register_with_encryption(broker, ng, {"alg": HYBRID, "public": public})
    assert_refused(response, "weak or invalid")


async def test_a_claimed_kid_must_be_the_akp_thumbprint(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip", encryption_alg=HYBRID)
    public = ng.encryption.public_b64
    okp_kid = key_id("X25519", b64url_decode(public))  # the thumbprint of the wrong key type
    response = await register_with_encryption(
        broker, ng, {"alg": HYBRID, "public": public, "kid": okp_kid}
    )
    assert_refused(response, ng.encryption.kid)


async def test_a_hybrid_key_registered_as_x25519_is_refused(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip", encryption_alg=HYBRID)
    encryption = {"alg": "X25519", "public": ng.encryption.public_b64}
    assert_refused(await register_with_encryption(broker, ng, encryption), "32 bytes")


async def test_an_encryption_key_rotates_from_x25519_to_hybrid(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip")
    assert (await broker.register(ng, "NG")).status_code == 201
    new = HybridEncryptionKey.generate()
    body = {"use": "enc", "alg": HYBRID, "public": new.public_b64, "overlap_seconds": 3600}
    response = await rotate(broker, ng.participant, body)
    assert response.status_code == 201, response.text
    keys = {k["kid"]: k for k in await enc_keys(broker, ng.participant)}
    assert keys[new.kid]["alg"] == HYBRID
    assert keys[new.kid]["valid_until"] is None
    assert keys[ng.encryption.kid]["valid_until"] is not None


async def test_a_signing_key_cannot_be_a_hybrid_key(broker: Broker) -> None:
    ng = KeySet.generate("ng.naptip")
    assert (await broker.register(ng, "NG")).status_code == 201
    public = HybridEncryptionKey.generate().public_b64
    body = {"use": "sig", "alg": HYBRID, "public": public, "overlap_seconds": 0}
    assert_refused(await rotate(broker, ng.participant, body), "Ed25519")
    keys = {**KeySet.generate("at.focal-point").public()}
    keys["signing"] = {"alg": HYBRID, "public": public}
    body = {"id": "at.focal-point", "kind": "focal_point", "country": "AT", "keys": keys}
    assert_refused(await broker.call("POST", "/v1/participants", broker.operator, json=body))


async def test_an_envelope_sealed_to_a_hybrid_key_is_accepted(broker: Broker) -> None:
    at = KeySet.generate("at.focal-point")
    ng = KeySet.generate("ng.naptip", encryption_alg=HYBRID)
    assert (await broker.register(at, "AT")).status_code == 201
    assert (await broker.register(ng, "NG")).status_code == 201
    envelope = referral(at, ng)
    sealed = jws.parse(envelope, jws.TYP_ENVELOPE).claims()["sealed"]
    assert (sealed["suite"], sealed["kid"]) == (SUITE_MLKEM768_X25519, ng.encryption.kid)
    response = await broker.submit(envelope)
    assert response.status_code == 202, response.text
