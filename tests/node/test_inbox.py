"""The node's inbox takes only what the broker accepted, across key rotation and revocation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.support import (
    Broker,
    broker_settings,
    referral,
    running_broker,
    running_node,
)
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import EncryptionKey, KeySet, SigningKey
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@dataclass
class Setup:
    broker: Broker
    tmp_path: Path

    async def accepted(self, envelope: dict[str, str]) -> dict[str, Any]:
        """The push the broker would make: the envelope with its signed receipt."""
        response = await self.broker.submit(envelope)
        assert response.status_code == 202, response.text
        return {"envelope": envelope, "receipt": response.json()["receipt"]}

    async def messages(self, after: int | None) -> list[dict[str, Any]]:
        params = {} if after is None else {"after": after}
        async with self._node([NG]) as client:
            response = await client.get(
                "/messages", params=params, headers={"authorization": "Bearer t"}
            )
        result: list[dict[str, Any]] = response.json()["messages"]
        return result

    async def post(
        self, keysets: list[KeySet], push: object, signer: SigningKey | str | None = "broker"
    ) -> httpx.Response:
        """POST to the node's inbox, signed by the broker's key unless told otherwise."""
        key = self.broker.app.state.broker.signing_key if signer == "broker" else signer
        auth = SignedRequests(key) if isinstance(key, SigningKey) else None
        async with self._node(keysets) as client:
            response = await client.post("/inbox", json=push, auth=auth or httpx.USE_CLIENT_DEFAULT)
            stored = (await client.get("/messages", headers={"authorization": "Bearer t"})).json()
        self.stored = len(stored["messages"])
        return response

    def signed_by_broker(self, body: bytes) -> dict[str, str]:
        """The headers of a push of ``body`` to the inbox, signed with the broker's key."""
        key = self.broker.app.state.broker.signing_key
        headers = sign_request("POST", "http://node/inbox", body, key)
        return {**headers, "content-type": "application/json"}

    @asynccontextmanager
    async def _node(self, keysets: list[KeySet]) -> AsyncIterator[httpx.AsyncClient]:
        files = []
        for keyset in keysets:
            path = self.tmp_path / f"{keyset.participant}-{keyset.encryption.kid[:8]}.json"
            if not path.exists():
                keyset.write(path)
            files.append(path)
        async with running_node(self.tmp_path, files, self.broker.client, "t") as client:
            yield client


@pytest.fixture
async def setup(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201
        yield Setup(broker, tmp_path)


async def test_an_envelope_posted_without_the_brokers_receipt_is_refused(setup: Setup) -> None:
    envelope = referral(AT, NG)
    for push in (envelope, {"envelope": envelope, "receipt": None}):
        response = await setup.post([NG], push)
        assert response.status_code == 400
        assert setup.stored == 0


async def test_a_receipt_for_another_envelope_or_by_another_key_is_refused(setup: Setup) -> None:
    first = await setup.accepted(referral(AT, NG))
    second = referral(AT, NG)
    mixed = await setup.post([NG], {"envelope": second, "receipt": first["receipt"]})
    assert mixed.status_code == 401
    claims = json.loads(b64url_decode(first["receipt"]["payload"]))
    forged = jws.sign(claims, SigningKey.generate(), jws.TYP_RECEIPT)
    by_stranger = await setup.post([NG], {"envelope": first["envelope"], "receipt": forged})
    assert by_stranger.status_code == 401
    assert setup.stored == 0


async def test_a_tampered_envelope_is_refused_even_with_a_receipt(setup: Setup) -> None:
    push = await setup.accepted(referral(AT, NG))
    attacker = SigningKey.generate()
    envelope = push["envelope"]
    signing_input = f"{envelope['protected']}.{envelope['payload']}".encode()
    envelope = {**envelope, "signature": b64url_encode(attacker.sign(signing_input))}
    response = await setup.post([NG], {"envelope": envelope, "receipt": push["receipt"]})
    assert response.status_code == 401  # the digest no longer matches the receipt
    assert setup.stored == 0


async def test_node_holding_old_and_new_keys_opens_messages_sealed_to_either(setup: Setup) -> None:
    new_enc = EncryptionKey.generate()
    rotated = KeySet(NG.participant, NG.signing, new_enc)
    body = {"use": "enc", "alg": "X25519", "public": new_enc.public_b64, "overlap_seconds": 3600}
    response = await setup.broker.call(
        "POST", f"/v1/participants/{NG.participant}/keys", setup.broker.operator, json=body
    )
    assert response.status_code == 201
    to_old = await setup.accepted(referral(AT, NG))
    to_new = await setup.accepted(referral(AT, rotated))
    assert (await setup.post([NG, rotated], to_old)).status_code == 200
    assert (await setup.post([NG, rotated], to_new)).status_code == 200
    assert setup.stored == 2


async def test_node_without_the_key_a_payload_is_sealed_to_refuses_it(setup: Setup) -> None:
    push = await setup.accepted(referral(AT, NG))
    rotated = KeySet(NG.participant, NG.signing, EncryptionKey.generate())
    response = await setup.post([rotated], push)
    assert response.status_code == 400
    assert NG.encryption.kid in response.json()["detail"]


async def test_a_message_accepted_before_its_key_was_revoked_is_still_delivered(
    setup: Setup,
) -> None:
    push = await setup.accepted(referral(AT, NG))
    revoked = await setup.broker.call(
        "POST",
        f"/v1/participants/{AT.participant}/keys/{AT.signing.kid}/revoke",
        setup.broker.operator,
    )
    assert revoked.status_code == 200
    assert (await setup.post([NG], push)).status_code == 200
    assert setup.stored == 1


async def test_a_message_delivered_late_is_not_skipped_by_the_cursor(setup: Setup) -> None:
    created_first = await setup.accepted(
        referral(AT, NG, now=datetime.now(UTC) - timedelta(minutes=2))
    )
    created_later = await setup.accepted(referral(AT, NG))
    assert (await setup.post([NG], created_later)).status_code == 200
    page = await setup.messages(after=None)
    assert len(page) == 1
    # The earlier-created message arrives after a retry; paging on from the cursor finds it.
    assert (await setup.post([NG], created_first)).status_code == 200
    next_page = await setup.messages(after=page[-1]["seq"])
    assert [m["message_id"] for m in next_page] == [
        jws.parse(created_first["envelope"], jws.TYP_ENVELOPE).claims()["id"]
    ]


@pytest.mark.parametrize("signer", ["unsigned", "sender", "stranger"])
async def test_only_pushes_signed_by_the_broker_are_taken(setup: Setup, signer: str) -> None:
    push = await setup.accepted(referral(AT, NG))
    key = {"unsigned": None, "sender": AT.signing, "stranger": SigningKey.generate()}[signer]
    response = await setup.post([NG], push, signer=key)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert setup.stored == 0


async def test_a_replayed_or_altered_push_is_refused(setup: Setup) -> None:
    push = await setup.accepted(referral(AT, NG))
    body = json.dumps(push).encode()
    headers = setup.signed_by_broker(body)
    async with setup._node([NG]) as client:
        first = await client.post("/inbox", content=body, headers=headers)
        replayed = await client.post("/inbox", content=body, headers=headers)
        altered = await client.post("/inbox", content=body.replace(b"{", b"{ ", 1), headers=headers)
        elsewhere = await client.post("/inbox?x=1", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert replayed.status_code == 401
    assert replayed.json()["type"].endswith(":replayed-request")
    assert altered.status_code == 401
    assert altered.json()["type"].endswith(":bad-signature")
    assert elsewhere.status_code == 401


async def test_a_refused_push_cannot_be_replayed_either(setup: Setup) -> None:
    """A push's nonce is spent in the transaction that stores its message; a push refused
    (here: no envelope in it) still spends its nonce, on its own."""
    body = json.dumps({"envelope": {"protected": "e30"}, "receipt": {}}).encode()
    headers = setup.signed_by_broker(body)
    async with setup._node([NG]) as client:
        first = await client.post("/inbox", content=body, headers=headers)
        replayed = await client.post("/inbox", content=body, headers=headers)
    assert first.status_code == 400, first.text
    assert replayed.status_code == 401
    assert replayed.json()["type"].endswith(":replayed-request")


async def test_a_push_is_stored_with_its_nonce_in_one_commit(setup: Setup) -> None:
    """One transaction per push: the nonce, the message and its answer commit together
    (on SQLite each commit is a write to disk and a wait for it)."""
    push = await setup.accepted(referral(AT, NG))
    broker_key = setup.broker.app.state.broker.signing_key
    open_: dict[int, list[str]] = {}  # per connection: the statements since its last commit
    committed: list[list[str]] = []

    def statement(connection: object, _cursor: object, sql: str, *_: object) -> None:
        open_.setdefault(id(connection), []).append(" ".join(sql.split()[:3]))

    def commit(connection: object) -> None:
        committed.append(open_.pop(id(connection), []))

    async with setup._node([NG]) as client:
        node = client._transport.app  # type: ignore[attr-defined]
        engine = node.state.node.sessions.kw["bind"].sync_engine
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)
        response = await client.post("/inbox", json=push, auth=SignedRequests(broker_key))
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
        again = await client.post("/inbox", json=push, auth=SignedRequests(broker_key))
    assert response.status_code == 200, response.text
    spent = [t for t in committed if "INSERT INTO node_request_nonces" in t]
    assert len(spent) == 1  # the background loops commit too: only the push's is looked at
    # What it was answered before (stored or rejected: one query), whether its consent was
    # withdrawn, the message, expired nonces (once a minute), the nonce.
    assert spent[0] == [
        "SELECT node_received.envelope_digest, node_received.ack,",
        "SELECT node_withdrawn_consents.consent_ref FROM",
        "INSERT INTO node_received",
        "DELETE FROM node_request_nonces",
        "INSERT INTO node_request_nonces",
    ]
    assert again.json() == response.json()  # a repeat gets the very same answer


async def test_the_senders_key_is_judged_at_the_brokers_acceptance_not_at_created_at(
    setup: Setup,
) -> None:
    """contracts/README.md, Receiving step 2: the same envelope (created before the key was
    revoked) is refused with a receipt saying it was accepted after the revocation."""
    push = await setup.accepted(referral(AT, NG))
    revoked = await setup.broker.call(
        "POST",
        f"/v1/participants/{AT.participant}/keys/{AT.signing.kid}/revoke",
        setup.broker.operator,
    )
    assert revoked.status_code == 200
    claims = json.loads(b64url_decode(push["receipt"]["payload"]))
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat(timespec="milliseconds")
    claims["accepted_at"] = later.replace("+00:00", "Z")
    broker_key = setup.broker.app.state.broker.signing_key
    late_receipt = jws.sign(claims, broker_key, jws.TYP_RECEIPT)
    refused = await setup.post([NG], {**push, "receipt": late_receipt})
    assert refused.status_code in (401, 403), refused.text
    assert AT.signing.kid in refused.json()["detail"]
    assert setup.stored == 0
    assert (await setup.post([NG], push)).status_code == 200
