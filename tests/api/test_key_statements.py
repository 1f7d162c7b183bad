"""The operator's key statements (docs/design.md §4): sent with a registration or a new key,
checked against the request, and published with the change, where a node checks them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import OPERATOR_ID, Broker, broker_settings, running_broker
from trm_broker.crypto import key_statements
from trm_broker.crypto.keys import KeySet, SigningKey, load_ed25519_public

NOW = datetime.now(UTC)


@pytest.fixture
async def broker(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as b:
        yield b


def registration(keyset: KeySet, statements: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": keyset.participant,
        "kind": "focal_point",
        "country": "NG",
        "keys": keyset.public(),
        "statements": statements,
    }


async def changes_of(broker: Broker, participant: str) -> list[dict[str, Any]]:
    listed = (await broker.client.get("/v1/participants")).json()["participants"]
    entry = next(p for p in listed if p["id"] == participant)
    changes: list[dict[str, Any]] = entry["changes"]
    return changes


async def test_statements_are_published_with_their_change_and_verify_with_the_operators_key(
    broker: Broker,
) -> None:
    keyset = KeySet.generate("ng.naptip")
    assert (await broker.register(keyset, "NG")).status_code == 201
    new = KeySet.generate("ng.naptip").encryption
    rotation: dict[str, Any] = {"use": "enc", "alg": new.alg, "public": new.public_b64}
    rotation["kid"] = new.kid
    rotation["statement"] = key_statements.sign(
        broker.operator.signing, keyset.participant, rotation, NOW
    )
    path = f"/v1/participants/{keyset.participant}/keys"
    assert (await broker.call("POST", path, broker.operator, json=rotation)).status_code == 201

    changes = await changes_of(broker, keyset.participant)
    operator = {
        broker.operator.signing.kid: load_ed25519_public(broker.operator.signing.public_b64)
    }
    stated = {
        change["action"]: [
            key_statements.verify(s, operator).claims.kid for s in change["statements"]
        ]
        for change in changes
    }
    assert stated == {
        "participant.registered": [keyset.signing.kid, keyset.encryption.kid],
        "key.added": [new.kid],
    }
    bootstrap = await changes_of(broker, OPERATOR_ID)
    assert bootstrap[0]["statements"] == []  # nobody signs for the first operator


async def test_a_statement_signed_with_another_key_than_the_request_is_refused(
    broker: Broker,
) -> None:
    keyset = KeySet.generate("ng.naptip")
    other = SigningKey.generate()
    statements = key_statements.for_key_set(other, keyset.participant, keyset.public(), NOW)
    response = await broker.call(
        "POST", "/v1/participants", broker.operator, json=registration(keyset, statements)
    )
    assert response.status_code == 400, response.text
    assert "signed with the operator key that signs the request" in response.json()["detail"]
    assert (await broker.client.get("/v1/participants")).json()["participants"][1:] == []


@pytest.mark.parametrize("case", ["one key only", "another key", "another participant"])
async def test_statements_that_do_not_state_the_keys_added_are_refused(
    broker: Broker, case: str
) -> None:
    keyset, other = KeySet.generate("ng.naptip"), KeySet.generate("ng.other")
    operator = broker.operator.signing
    statements = key_statements.for_key_set(operator, keyset.participant, keyset.public(), NOW)
    if case == "one key only":
        statements = statements[:1]
    elif case == "another key":
        statements[1] = key_statements.for_key_set(
            operator, keyset.participant, other.public(), NOW
        )[1]
    else:
        statements = key_statements.for_key_set(operator, other.participant, keyset.public(), NOW)
    response = await broker.call(
        "POST", "/v1/participants", broker.operator, json=registration(keyset, statements)
    )
    assert response.status_code == 400, response.text
    assert "do not state the keys added to ng.naptip" in response.json()["detail"]


async def test_a_rotation_whose_statement_states_another_key_is_refused(broker: Broker) -> None:
    keyset = KeySet.generate("ng.naptip")
    assert (await broker.register(keyset, "NG")).status_code == 201
    new, other = SigningKey.generate(), SigningKey.generate()
    rotation: dict[str, Any] = {"use": "sig", "alg": "Ed25519", "public": new.public_b64}
    stated = {"use": "sig", "alg": "Ed25519", "public": other.public_b64, "kid": other.kid}
    rotation["statement"] = key_statements.sign(
        broker.operator.signing, keyset.participant, stated, NOW
    )
    path = f"/v1/participants/{keyset.participant}/keys"
    response = await broker.call("POST", path, broker.operator, json=rotation)
    assert response.status_code == 400, response.text
    changes = await changes_of(broker, keyset.participant)
    assert [c["action"] for c in changes] == ["participant.registered"]
