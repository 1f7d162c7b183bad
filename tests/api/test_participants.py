"""The registry: only the operator registers; everyone can read the public keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import PROBLEM, Broker, broker_settings, running_broker
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


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dGVzdA=="])
async def test_registration_needs_the_operator_token(
    broker: Broker, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = await broker.client.post(
        "/v1/participants", json=body(KeySet.generate("ng.naptip")), headers=headers
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert (await broker.client.get("/v1/participants")).json() == {"participants": []}


async def test_registration_is_refused_when_no_operator_token_is_configured(
    tmp_path: Path, sqlite_database: str
) -> None:
    settings = broker_settings(sqlite_database, tmp_path, operator_token=None)
    async with running_broker(settings) as broker:
        response = await broker.client.post(
            "/v1/participants",
            json=body(KeySet.generate("ng.naptip")),
            headers={"authorization": "Bearer anything"},
        )
        assert response.status_code == 503
        assert "TRM_OPERATOR_TOKEN" in response.json()["detail"]


async def test_registered_participant_is_listed_with_its_keys_and_no_inbox_url(
    broker: Broker,
) -> None:
    keyset = KeySet.generate("ng.naptip")
    response = await broker.register(keyset, "NG", inbox_url="https://node.example/inbox")
    assert response.status_code == 201, response.text
    listed = (await broker.client.get("/v1/participants")).json()["participants"]
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
    assert (await broker.client.get("/v1/participants")).json()["participants"][0][
        "delivery"
    ] == "pull"


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
    response = await broker.client.post(
        "/v1/participants",
        json=body(KeySet.generate("ng.naptip"), **overrides),
        headers={"authorization": "Bearer test-operator-token"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert location in [e["location"] for e in response.json()["errors"]]
    assert "input" not in str(response.json()["errors"])


async def test_a_kid_that_is_not_the_keys_thumbprint_is_refused(broker: Broker) -> None:
    keyset = KeySet.generate("ng.naptip")
    keys = keyset.public()
    keys["signing"]["kid"] = "not-the-thumbprint"
    response = await broker.client.post(
        "/v1/participants",
        json=body(keyset, keys=keys),
        headers={"authorization": "Bearer test-operator-token"},
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
    assert (await broker.client.get("/v1/participants")).json() == {"participants": []}
