"""The node's inbox across key rotation and revocation, with the broker's real registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import OPERATOR_TOKEN, Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import EncryptionKey, KeySet
from trm_broker.node.app import create_node_app
from trm_broker.settings import Settings

OPERATOR = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@dataclass
class Setup:
    broker: Broker
    tmp_path: Path


@pytest.fixture
async def setup(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201
        yield Setup(broker, tmp_path)


async def post_to_node(
    setup: Setup, keysets: list[KeySet], envelope: dict[str, str]
) -> httpx.Response:
    files = []
    for index, keyset in enumerate(keysets):
        path = setup.tmp_path / f"key-{index}-{keyset.encryption.kid[:8]}.json"
        if not path.exists():
            keyset.write(path)
        files.append(path)
    settings = Settings(
        node_database_url=f"sqlite+aiosqlite:///{setup.tmp_path / 'node.db'}",
        node_key_files=files,
        node_api_token="t",
        node_broker_url="http://broker",
    )
    node = create_node_app(settings, broker_http=setup.broker.client)
    async with (
        node.router.lifespan_context(node),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node), base_url="http://node"
        ) as client,
    ):
        return await client.post(
            "/inbox", content=httpx.Request("POST", "/", json=envelope).content
        )


async def test_node_holding_old_and_new_keys_opens_messages_sealed_to_either(setup: Setup) -> None:
    new_enc = EncryptionKey.generate()
    rotated = KeySet(NG.participant, NG.signing, new_enc)
    body = {"use": "enc", "alg": "X25519", "public": new_enc.public_b64, "overlap_seconds": 3600}
    response = await setup.broker.client.post(
        f"/v1/participants/{NG.participant}/keys", json=body, headers=OPERATOR
    )
    assert response.status_code == 201
    to_old, to_new = referral(AT, NG), referral(AT, rotated)
    assert (await post_to_node(setup, [NG, rotated], to_old)).status_code == 200
    assert (await post_to_node(setup, [NG, rotated], to_new)).status_code == 200


async def test_node_without_the_key_a_payload_is_sealed_to_refuses_it(setup: Setup) -> None:
    rotated = KeySet(NG.participant, NG.signing, EncryptionKey.generate())
    response = await post_to_node(setup, [rotated], referral(AT, NG))
    assert response.status_code == 400
    assert NG.encryption.kid in response.json()["detail"]


async def test_revocation_refuses_envelopes_made_after_it_but_not_those_made_before(
    setup: Setup,
) -> None:
    made_before = referral(AT, NG, now=datetime.now(UTC) - timedelta(seconds=30))
    revoked = await setup.broker.client.post(
        f"/v1/participants/{AT.participant}/keys/{AT.signing.kid}/revoke", headers=OPERATOR
    )
    assert revoked.status_code == 200
    made_after = referral(AT, NG, now=datetime.now(UTC) + timedelta(seconds=1))

    assert (await post_to_node(setup, [NG], made_before)).status_code == 200
    refused = await post_to_node(setup, [NG], made_after)
    assert refused.status_code == 403
    assert refused.json()["kid"] == AT.signing.kid
