"""Single sign-on (issue 18): the node takes bearer JWTs of an OpenID Connect provider, here a
small one the test runs on loopback (real HTTP, real signatures: discovery document, JWKS,
tokens signed with joserfc), and maps them to an organisation and a role. Every way a token
can be wrong is tried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.security.node_access_world import AT, NAPTIP, SHELTER, NodeWorld, node_world
from tests.support import broker_settings, running_broker
from trm_broker.crypto.encoding import b64url_encode

AUDIENCE = "trm-node-ng"


@dataclass
class Provider:
    """A tiny OpenID Connect provider: discovery, JWKS, and tokens it signs."""

    issuer: str = ""
    keys: list[RSAKey | ECKey] = field(default_factory=list)
    fetches: int = 0
    up: bool = True

    def app(self) -> Starlette:
        async def discovery(request: Request) -> JSONResponse:
            if not self.up:
                return JSONResponse({}, status_code=503)
            return JSONResponse({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"})

        async def jwks(request: Request) -> JSONResponse:
            self.fetches += 1
            return JSONResponse({"keys": [k.as_dict(private=False) for k in self.keys]})

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
            ]
        )

    def rotate(self) -> RSAKey:
        key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:8]})
        self.keys.append(key)
        return key

    def token(
        self,
        organisation: Any = "ng.shelter",
        role: Any = "case_worker",
        *,
        key: RSAKey | ECKey | None = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        key = key or self.keys[-1]
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "caseworker-0042",
            "iat": now,
            "exp": now + 300,
            "trm_organisation": organisation,
            "trm_role": role,
        } | claims
        return jwt.encode({"alg": alg, "kid": key.kid}, body, key, algorithms=[alg])


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider()
    provider.rotate()
    server = uvicorn.Server(
        uvicorn.Config(provider.app(), host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    provider.issuer = f"http://127.0.0.1:{port}"
    yield provider
    server.should_exit = True
    await task


@pytest.fixture
async def world(
    sqlite_database: str, tmp_path: Path, provider: Provider
) -> AsyncIterator[NodeWorld]:
    async with (
        running_broker(broker_settings(sqlite_database, tmp_path)) as broker,
        node_world(
            broker,
            tmp_path,
            node_oidc_issuer=provider.issuer,
            node_oidc_audience=AUDIENCE,
            node_oidc_cache_seconds=3600,
        ) as world,
    ):
        yield world


async def get(world: NodeWorld, token: str, path: str = "/messages") -> Any:
    return await world.node.get(path, headers={"authorization": f"Bearer {token}"})


async def test_a_signed_on_case_worker_reads_and_sends_for_their_organisation_only(
    world: NodeWorld, provider: Provider
) -> None:
    token = provider.token("ng.shelter", "case_worker")
    read = await get(world, token)
    assert read.status_code == 200, read.text
    assert {m["recipient"] for m in read.json()["messages"]} == {SHELTER.participant}
    as_naptip = await world.node.post(
        "/messages",
        json={
            "type": "referral_response",
            "case_ref": world.case["A"],
            "recipient": AT.participant,
            "sender": NAPTIP.participant,
            "payload": {"accepted": True},
        },
        headers={"authorization": f"Bearer {token}"},
    )
    assert as_naptip.status_code == 403
    assert as_naptip.json()["type"] == "urn:trm-broker:problem:forbidden"
    # A supervisor of NAPTIP signed on reads NAPTIP's audit log: not the shelter's person.
    supervisor = provider.token("ng.naptip", ["staff", "supervisor"], sub="sup-7")
    assert (await get(world, supervisor)).status_code == 200
    log = await get(world, supervisor, "/audit?limit=500")
    assert log.status_code == 200, log.text
    users = {e["user"] for e in log.json()["entries"]}
    assert "oidc:sup-7" in users
    assert "oidc:caseworker-0042" not in users
    shelter_log = await get(world, provider.token("ng.shelter", "supervisor"), "/audit?limit=500")
    entries = shelter_log.json()["entries"]
    assert ("oidc:caseworker-0042", "POST /messages", 403) in {
        (e["user"], e["action"], e["status"]) for e in entries
    }
    assert provider.fetches == 1  # the keys were fetched once, and cached


def _unsigned(provider: Provider) -> str:
    """The same claims with `alg: none` and no signature."""
    header = b64url_encode(b'{"alg":"none","typ":"JWT"}')
    claims = provider.token().split(".")[1]
    return f"{header}.{claims}."


def _hmac_with_the_public_key(provider: Provider) -> str:
    """Key confusion: HS256 keyed with the provider's public RSA key (its PEM), as a
    verifier that let the token choose the algorithm would check it."""
    public = provider.keys[-1].as_pem(private=False)
    header = b64url_encode(json.dumps({"alg": "HS256", "kid": provider.keys[-1].kid}).encode())
    claims = provider.token().split(".")[1]
    signature = hmac.new(public, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url_encode(signature)}"


def _signed_by_a_stranger(provider: Provider) -> str:
    """A key of the attacker's own, under the provider's key id."""
    stranger = RSAKey.generate_key(2048, parameters={"kid": str(provider.keys[-1].kid)})
    return provider.token(key=stranger)


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda p: p.token(exp=int(time.time()) - 3600), 401),  # expired
        (lambda p: p.token(nbf=int(time.time()) + 3600), 401),  # not yet valid
        (lambda p: p.token(aud="another-node"), 401),  # for another audience
        (lambda p: p.token(iss="https://impostor.example"), 401),  # another issuer
        (_unsigned, 401),  # alg: none
        (_hmac_with_the_public_key, 401),
        (_signed_by_a_stranger, 401),
        (lambda p: p.token()[:-4] + "AAAA", 401),  # a signature changed
        (lambda p: p.token(organisation="ng.elsewhere"), 403),  # an organisation not served
        (lambda p: p.token(organisation=["ng.naptip", "ng.shelter"]), 403),  # two at once
        (lambda p: p.token(role="director"), 403),  # a role the node does not know
        (lambda p: p.token(role=["case_worker", "supervisor"]), 403),  # two roles
        (lambda p: p.token(role=None), 403),  # no role
    ],
)
async def test_a_token_that_is_wrong_in_any_way_is_refused(
    world: NodeWorld, provider: Provider, make: Any, status: int
) -> None:
    response = await get(world, make(provider))
    assert response.status_code == status, response.text
    slug = "unauthenticated" if status == 401 else "forbidden"
    assert response.json()["type"] == f"urn:trm-broker:problem:{slug}"
    assert "messages" not in response.json()


async def test_a_key_the_provider_rotated_to_is_fetched_and_an_outage_keeps_the_known_keys(
    sqlite_database: str, tmp_path: Path, provider: Provider
) -> None:
    async with (
        running_broker(broker_settings(sqlite_database, tmp_path)) as broker,
        node_world(
            broker,
            tmp_path,
            node_oidc_issuer=provider.issuer,
            node_oidc_audience=AUDIENCE,
            node_oidc_cache_seconds=1,
        ) as world,
    ):
        assert (await get(world, provider.token())).status_code == 200
        provider.rotate()
        rotated = provider.token()
        await asyncio.sleep(1.1)  # an unknown kid refetches at most once per cache period
        assert (await get(world, rotated)).status_code == 200  # the new kid: fetched
        assert provider.fetches == 2
        provider.up = False
        await asyncio.sleep(1.1)  # the cache has expired, and the provider is down
        old = provider.token(key=provider.keys[0])
        assert (await get(world, old)).status_code == 200  # the known keys still serve


async def test_an_unreachable_provider_is_a_503_not_a_way_in(
    sqlite_database: str, tmp_path: Path, provider: Provider
) -> None:
    provider.up = False
    async with (
        running_broker(broker_settings(sqlite_database, tmp_path)) as broker,
        node_world(
            broker, tmp_path, node_oidc_issuer=provider.issuer, node_oidc_audience=AUDIENCE
        ) as world,
    ):
        response = await get(world, provider.token())
        assert response.status_code == 503
        assert response.json()["type"] == "urn:trm-broker:problem:unavailable"
        assert (await get(world, world.tokens["shelter.ro"])).status_code == 200  # users' tokens
