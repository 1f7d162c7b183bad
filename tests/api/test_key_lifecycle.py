"""Keys rotate with an overlap and are revoked at once; the broker enforces both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import EncryptionKey, KeySet, SigningKey


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        yield b


async def pair(broker: Broker) -> tuple[KeySet, KeySet]:
    at, ng = KeySet.generate("at.focal-point"), KeySet.generate("ng.naptip")
    assert (
        await broker.register(at, "AT", inbox_url="https://node-at.example/inbox")
    ).status_code == 201
    assert (
        await broker.register(ng, "NG", inbox_url="https://node-ng.example/inbox")
    ).status_code == 201
    return at, ng


async def rotate(broker: Broker, participant: str, body: dict[str, Any]) -> httpx.Response:
    return await broker.call(
        "POST", f"/v1/participants/{participant}/keys", broker.operator, json=body
    )


async def revoke(broker: Broker, participant: str, kid: str) -> httpx.Response:
    return await broker.call(
        "POST", f"/v1/participants/{participant}/keys/{kid}/revoke", broker.operator
    )


def sig_rotation(key: SigningKey, overlap: int) -> dict[str, Any]:
    return {"use": "sig", "alg": "Ed25519", "public": key.public_b64, "overlap_seconds": overlap}


async def test_old_and_new_signing_keys_both_work_during_the_overlap(broker: Broker) -> None:
    at, ng = await pair(broker)
    new_key = SigningKey.generate()
    response = await rotate(broker, at.participant, sig_rotation(new_key, 3600))
    assert response.status_code == 201, response.text
    keys = {k["kid"]: k for k in response.json()["keys"] if k["use"] == "sig"}
    assert keys[at.signing.kid]["valid_until"] is not None
    assert keys[new_key.kid]["valid_until"] is None

    assert (await broker.submit(referral(at, ng))).status_code == 202
    rotated = KeySet(at.participant, new_key, at.encryption)
    assert (await broker.submit(referral(rotated, ng))).status_code == 202


async def test_after_the_overlap_the_old_signing_key_is_refused_by_kid(broker: Broker) -> None:
    at, ng = await pair(broker)
    new_key = SigningKey.generate()
    assert (await rotate(broker, at.participant, sig_rotation(new_key, 0))).status_code == 201

    # A request signed with the expired key is refused, naming it ...
    response = await broker.submit(referral(at, ng), signer=at)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith(":key-not-usable")
    assert response.json()["kid"] == at.signing.kid
    assert at.signing.kid in response.json()["detail"]

    # ... and so is an envelope signed with it, even inside a request signed with the new key.
    response = await broker.submit(referral(at, ng), signer=new_key)
    assert response.status_code == 403
    assert response.json()["kid"] == at.signing.kid
    assert at.signing.kid in response.json()["detail"]
    assert await broker.stored_counts() == (0, 0)


async def test_a_revoked_signing_key_is_refused_at_once(broker: Broker) -> None:
    at, ng = await pair(broker)
    assert (await broker.submit(referral(at, ng))).status_code == 202
    response = await revoke(broker, at.participant, at.signing.kid)
    assert response.status_code == 200
    listed = {k["kid"]: k for k in response.json()["keys"]}
    assert listed[at.signing.kid]["revoked_at"] is not None

    refused = await broker.submit(referral(at, ng))
    assert refused.status_code == 401
    assert refused.json()["type"].endswith(":key-not-usable")
    assert refused.json()["kid"] == at.signing.kid
    assert await broker.stored_counts() == (1, 1)


async def test_senders_seal_to_the_newest_encryption_key_and_old_ones_end(broker: Broker) -> None:
    at, ng = await pair(broker)
    new_enc = EncryptionKey.generate()
    body = {"use": "enc", "alg": "X25519", "public": new_enc.public_b64, "overlap_seconds": 3600}
    assert (await rotate(broker, ng.participant, body)).status_code == 201

    # In flight during the overlap: sealed to the old key, still accepted.
    assert (await broker.submit(referral(at, ng))).status_code == 202
    assert (
        await broker.submit(referral(at, KeySet(ng.participant, ng.signing, new_enc)))
    ).status_code == 202

    assert (await revoke(broker, ng.participant, ng.encryption.kid)).status_code == 200
    refused = await broker.submit(referral(at, ng))
    assert refused.status_code == 400
    assert "current encryption key" in refused.json()["detail"]


@pytest.mark.parametrize("as_participant", [False, True], ids=["unsigned", "self-signed"])
async def test_key_changes_are_for_the_operator_only(broker: Broker, as_participant: bool) -> None:
    at, _ = await pair(broker)
    signer = at if as_participant else None  # a participant may not rotate its own keys
    rotation = await broker.call(
        "POST",
        f"/v1/participants/{at.participant}/keys",
        signer,
        json=sig_rotation(SigningKey.generate(), 0),
    )
    assert rotation.status_code == (403 if as_participant else 401)
    revoke_attempt = await broker.call(
        "POST", f"/v1/participants/{at.participant}/keys/{at.signing.kid}/revoke", signer
    )
    assert revoke_attempt.status_code == (403 if as_participant else 401)
    participants = (await broker.client.get("/v1/participants")).json()["participants"]
    keys = next(p for p in participants if p["id"] == at.participant)["keys"]
    assert all(k["revoked_at"] is None and k["valid_until"] is None for k in keys)


async def test_unknown_participant_or_key_and_mismatched_algorithms(broker: Broker) -> None:
    at, ng = await pair(broker)
    assert (
        await rotate(broker, "zz.nobody", sig_rotation(SigningKey.generate(), 0))
    ).status_code == 404
    assert (await revoke(broker, at.participant, ng.signing.kid)).status_code == 404  # not AT's key
    wrong = {"use": "enc", "alg": "Ed25519", "public": SigningKey.generate().public_b64}
    assert (await rotate(broker, at.participant, wrong)).status_code == 400
    reused = await rotate(broker, at.participant, sig_rotation(ng.signing, 0))
    assert reused.status_code == 409
