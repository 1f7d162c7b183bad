"""The registry: only an operator changes it, with signed requests kept as proof;
everyone can read the public keys."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import OPERATOR_ID, PROBLEM, Broker, broker_settings, running_broker
from trm_broker.crypto.http_signatures import sign_request, verify_request
from trm_broker.crypto.keys import KeySet


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        yield b


def body(keyset: KeySet, **overrides: object) -> dict[str, object]:
    return {
        "id": keyset.participant,
        "kind": "focal_point",
        "country": "NG",
        "inbox_url": "https://node.example/inbox",
        "keys": keyset.public(),
        **overrides,
    }


async def registered(broker: Broker) -> list[dict[str, Any]]:
    """The registry's entries other than the bootstrapped operator."""
    listed: list[dict[str, Any]] = (await broker.client.get("/v1/participants")).json()[
        "participants"
    ]
    return [p for p in listed if p["id"] != OPERATOR_ID]


@pytest.mark.parametrize(
    "credentials", ["unsigned", "bearer", "focal_point", "unknown_key", "auditor"]
)
async def test_registration_needs_an_operators_signature(broker: Broker, credentials: str) -> None:
    at, auditor = KeySet.generate("at.focal-point"), KeySet.generate("at.rapporteur")
    assert (await broker.register(at, "AT")).status_code == 201
    assert (await broker.register(auditor, "AT", kind="auditor")).status_code == 201
    new = body(KeySet.generate("ng.naptip"))
    if credentials == "bearer":
        response = await broker.client.post(
            "/v1/participants", json=new, headers={"authorization": "Bearer anything"}
        )
    else:
        signer = {
            "unsigned": None,
            "focal_point": at,
            "auditor": auditor,
            "unknown_key": KeySet.generate("operator.test"),
        }[credentials]
        response = await broker.call("POST", "/v1/participants", signer, json=new)
    expected = 403 if credentials in {"focal_point", "auditor"} else 401
    assert response.status_code == expected, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "ng.naptip" not in [p["id"] for p in await registered(broker)]


async def test_every_registry_change_is_recorded_with_the_operators_signed_request(
    broker: Broker,
) -> None:
    keyset = KeySet.generate("ng.naptip")
    body = register_body(broker, keyset)
    assert (
        await broker.call("POST", "/v1/participants", broker.operator, json=body)
    ).status_code == 201
    new_key = KeySet.generate("ng.naptip").signing
    rotation = {"use": "sig", "alg": "Ed25519", "public": new_key.public_b64}
    path = "/v1/participants/ng.naptip/keys"
    assert (await broker.call("POST", path, broker.operator, json=rotation)).status_code == 201
    revoke = f"/v1/participants/ng.naptip/keys/{keyset.signing.kid}/revoke"
    assert (await broker.call("POST", revoke, broker.operator)).status_code == 200

    entry = (await registered(broker))[0]
    changes = entry["changes"]
    assert [c["action"] for c in changes] == ["participant.registered", "key.added", "key.revoked"]
    assert [c["kid"] for c in changes] == [None, new_key.kid, keyset.signing.kid]
    for change in changes:
        assert change["operator"] == OPERATOR_ID
        assert change["operator_kid"] == broker.operator.signing.kid
        proof = change["proof"]
        # Anyone holding the operator's public key can check the record afterwards.
        signed = verify_request(
            proof["method"],
            proof["target_uri"],
            [
                ("content-digest", proof["content_digest"]),
                ("signature-input", proof["signature_input"]),
                ("signature", proof["signature"]),
            ],
            None,  # the body is not published; the signature covers its digest
            broker.operator.signing.private.public_key(),
            broker.operator.signing.kid,
            now=datetime.fromisoformat(change["recorded_at"]),
            max_age=timedelta(minutes=5),
            skew=timedelta(minutes=5),
        )
        assert signed.keyid == broker.operator.signing.kid
    # The digest the operator signed is the one of the registration that was sent.
    sent = httpx.Request("POST", "/", json=register_body(broker, keyset)).content
    assert changes[0]["proof"]["content_digest"] == (
        "sha-256=:" + base64.b64encode(hashlib.sha256(sent).digest()).decode() + ":"
    )
    operator = next(
        p
        for p in (await broker.client.get("/v1/participants")).json()["participants"]
        if p["id"] == OPERATOR_ID
    )
    assert [c["action"] for c in operator["changes"]] == ["operator.bootstrapped"]
    assert operator["changes"][0]["proof"] is None


async def test_registered_participant_is_listed_with_its_keys_and_no_inbox_url(
    broker: Broker,
) -> None:
    keyset = KeySet.generate("ng.naptip")
    response = await broker.register(keyset, "NG", inbox_url="https://node.example/inbox")
    assert response.status_code == 201, response.text
    # Inbox URLs are for the broker alone: not in the entry, nor in its change's proof.
    assert "node.example" not in (await broker.client.get("/v1/participants")).text
    listed = await registered(broker)
    assert [p["id"] for p in listed] == ["ng.naptip"]
    entry = listed[0]
    assert entry["delivery"] == "push"
    assert "inbox_url" not in entry
    keys = {k["use"]: k for k in entry["keys"]}
    assert keys["sig"]["kid"] == keyset.signing.kid
    assert keys["sig"]["public"] == keyset.signing.public_b64
    assert keys["enc"]["kid"] == keyset.encryption.kid
    assert keys["sig"]["revoked_at"] is None


async def test_participant_without_inbox_is_in_pull_mode(broker: Broker) -> None:
    assert (await broker.register(KeySet.generate("ng.naptip"), "NG")).status_code == 201
    assert (await registered(broker))[0]["delivery"] == "pull"


async def test_duplicate_id_or_reused_key_conflicts(broker: Broker) -> None:
    keyset = KeySet.generate("ng.naptip")
    assert (await broker.register(keyset, "NG")).status_code == 201
    again = await broker.register(keyset, "NG")
    assert again.status_code == 409
    reused = KeySet("ng.other", keyset.signing, KeySet.generate("x").encryption)
    response = await broker.register(reused, "NG")
    assert response.status_code == 409
    assert keyset.signing.kid in response.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"country": "Nigeria"}, "body/country"),
        ({"country": "UK"}, "body/country"),  # ISO 3166-1 has GB, not UK
        ({"country": "ng"}, "body/country"),
        ({"kind": "king"}, "body/kind"),
        ({"id": "NG NAPTIP"}, "body/id"),
        ({"inbox_url": "ftp://node.example"}, "body/inbox_url"),
    ],
)
async def test_invalid_registration_names_the_member_to_fix(
    broker: Broker, overrides: dict[str, object], location: str
) -> None:
    response = await broker.call(
        "POST",
        "/v1/participants",
        broker.operator,
        json=body(KeySet.generate("ng.naptip"), **overrides),
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert location in [e["location"] for e in response.json()["errors"]]
    assert "input" not in str(response.json()["errors"])


async def test_a_kid_that_is_not_the_keys_thumbprint_is_refused(broker: Broker) -> None:
    keyset = KeySet.generate("ng.naptip")
    keys = keyset.public()
    keys["signing"]["kid"] = "not-the-thumbprint"
    response = await broker.call(
        "POST", "/v1/participants", broker.operator, json=body(keyset, keys=keys)
    )
    assert response.status_code == 400
    assert keyset.signing.kid in response.json()["detail"]


async def test_health_and_readiness(broker: Broker) -> None:
    assert (await broker.client.get("/healthz")).json() == {"status": "ok"}
    assert (await broker.client.get("/readyz")).json() == {"status": "ready"}


@pytest.mark.parametrize(
    "inbox_url",
    [
        "http://node.naptip.example/inbox",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/inbox",
        "https://localhost/inbox",
    ],
)
async def test_inbox_urls_pointing_inside_are_refused(broker: Broker, inbox_url: str) -> None:
    response = await broker.register(KeySet.generate("ng.naptip"), "NG", inbox_url=inbox_url)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("inbox_url refused")
    assert await registered(broker) == []


def register_body(broker: Broker, keyset: KeySet) -> dict[str, Any]:
    """The body `Broker.register` sends for a participant without an inbox."""
    return {
        "id": keyset.participant,
        "kind": "focal_point",
        "country": "NG",
        "keys": keyset.public(),
    }


async def test_a_proof_keeps_only_the_signature_that_was_verified(broker: Broker) -> None:
    keyset = KeySet.generate("ng.naptip")
    body = register_body(broker, keyset)
    request = httpx.Request("POST", "http://broker/v1/participants", json=body)
    signed = sign_request("POST", str(request.url), request.content, broker.operator.signing)
    # A proxy's signature beside ours, on separate field lines, first.
    headers = [
        ("content-type", "application/json"),
        ("content-digest", signed["Content-Digest"]),
        ("signature-input", 'proxy=("@method");created=1;keyid="proxy"'),
        ("signature-input", signed["Signature-Input"]),
        ("signature", "proxy=:" + "A" * 88 + ":"),
        ("signature", signed["Signature"]),
    ]
    response = await broker.client.post(
        "/v1/participants", content=request.content, headers=headers
    )
    assert response.status_code == 201, response.text
    proof = response.json()["changes"][0]["proof"]
    assert proof["signature_input"] == signed["Signature-Input"]
    assert proof["signature"] == signed["Signature"]
