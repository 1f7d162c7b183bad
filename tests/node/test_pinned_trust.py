"""A node that pins the broker's keys (TRM_NODE_BROKER_KEYS) and the operator's
(TRM_NODE_OPERATOR_KEYS) believes only those: a broker whose key was swapped is refused, a
rotation works once the new key is pinned, and a key written straight into the broker's
database, with no operator's statement behind it, is neither sealed to nor believed for a
signature. With nothing pinned, the node trusts on first use, and says so at start.

Real broker and node apps, real signatures, HTTP through ASGI transports."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.node.harness import TOKEN, node_settings, running_node, stored_messages
from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.api.app import create_app
from trm_broker.crypto import broker_keys, jws
from trm_broker.crypto.keys import KeySet, SigningKey, generate_encryption_key
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.participants import KeyUse
from trm_broker.logs import configure_logging
from trm_broker.node.trust import pin_entry
from trm_broker.settings import Settings
from trm_broker.store.models import Message, ParticipantKey
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
AUTH = {"authorization": f"Bearer {TOKEN}"}
INBOX = "http://127.0.0.1:9/inbox"  # reached through the node's own transport
PAYLOAD = {"destination_country": "NG", "languages": ["en"]}


def pins(*keys: SigningKey) -> str:
    return ",".join(pin_entry(key.kid, key.public_b64) for key in keys)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


def events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


async def registered(broker: Broker) -> None:
    for keyset, country in ((AT, "AT"), (NG, "NG")):
        response = await broker.register(keyset, country, inbox_url=INBOX)
        assert response.status_code == 201, response.text


async def consent(broker: Broker, case_ref: str) -> None:
    body = {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": [NG.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "P" * 43,
    }
    response = await broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text


async def send(node: httpx.AsyncClient, case_ref: str) -> httpx.Response:
    """A case worker at AT's node sends a referral to NG."""
    body = {
        "type": "referral",
        "case_ref": case_ref,
        "recipient": NG.participant,
        "payload": PAYLOAD,
        "consent_ref": f"consent-{case_ref}",
    }
    return await node.post("/messages", json=body, headers=AUTH)


async def accepted(broker_app: Any, message_id: str) -> dict[str, Any]:
    """The push the broker makes of an accepted message: its envelope and its receipt."""
    async with broker_app.state.broker.sessions() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        assert message.envelope is not None
        return {"envelope": json.loads(message.envelope), "receipt": json.loads(message.receipt)}


async def push(node: httpx.AsyncClient, body: dict[str, Any], key: SigningKey) -> httpx.Response:
    """POST /inbox as the broker's dispatcher does, signed with ``key``."""
    return await node.post("/inbox", json=body, auth=SignedRequests(key))


def problem_type(response: httpx.Response) -> str:
    return str(response.json()["type"]).removeprefix("urn:trm-broker:problem:")


class Switch(httpx.AsyncBaseTransport):
    """The nodes' way to the broker, moved to a restarted broker app."""

    def __init__(self, target: httpx.AsyncBaseTransport) -> None:
        self.target = target

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.target.handle_async_request(request)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Any]:
    """A broker app on an existing database (its operator already there)."""
    app = create_app(settings, run_dispatcher=False)
    async with app.router.lifespan_context(app):
        yield app


# --- the broker's keys -----------------------------------------------------------------------


async def test_a_node_pinning_the_brokers_and_operators_keys_sends_and_receives(
    sqlite_database: str, tmp_path: Path
) -> None:
    settings = broker_settings(sqlite_database, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        await registered(broker)
        await consent(broker, "AT-PIN-0001")
        key = broker.app.state.broker.signing_key
        pinned = {
            "node_broker_keys": pins(key),
            "node_operator_keys": pins(broker.operator.signing),
        }
        at_db, ng_db = (f"sqlite+aiosqlite:///{tmp_path / n}" for n in ("at.db", "ng.db"))
        async with (
            running_node(node_settings(tmp_path, [AT], at_db, **pinned), broker.client) as at,
            running_node(node_settings(tmp_path, [NG], ng_db, **pinned), broker.client) as ng,
        ):
            sent = await send(at, "AT-PIN-0001")
            assert sent.status_code == 201, sent.text  # the receipt is the pinned key's
            answer = await push(ng, await accepted(broker.app, sent.json()["message_id"]), key)
            assert answer.status_code == 200, answer.text
            assert [m["payload"] for m in await stored_messages(ng)] == [PAYLOAD]
            health = (await ng.get("/healthz")).json()
            assert health == {
                "status": "ok",
                "broker_keys": "pinned",
                "registry_keys": "operator-signed",
            }


async def test_a_broker_whose_key_was_swapped_is_refused_whatever_it_serves(
    sqlite_database: str, tmp_path: Path, json_logs: io.StringIO
) -> None:
    # The nodes pin the key the broker's operator published; the broker now signs with
    # another one, which `GET /v1/broker` serves as its own.
    published = SigningKey.generate()
    settings = broker_settings(sqlite_database, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        await registered(broker)
        await consent(broker, "AT-SWAP-0001")
        swapped = broker.app.state.broker.signing_key
        served = (await broker.client.get("/v1/broker")).json()["signing_key"]
        assert served["kid"] == swapped.kid != published.kid
        pinned = {
            "node_broker_keys": pins(published),
            "node_operator_keys": pins(broker.operator.signing),
        }
        at_db, ng_db = (f"sqlite+aiosqlite:///{tmp_path / n}" for n in ("at.db", "ng.db"))
        async with (
            running_node(node_settings(tmp_path, [AT], at_db, **pinned), broker.client) as at,
            running_node(node_settings(tmp_path, [NG], ng_db, **pinned), broker.client) as ng,
        ):
            # The receipt the broker answers a send with is not believed.
            sent = await send(at, "AT-SWAP-0001")
            assert sent.status_code == 502, sent.text
            assert problem_type(sent) == "broker-failed"
            assert "not-broker-key" in sent.json()["detail"]

            # Nor is a push signed with the served key, nor one carrying its receipt.
            envelope = referral(AT, NG, case_ref="AT-SWAP-0002")
            submitted = await broker.submit(envelope)
            assert submitted.status_code == 202, submitted.text
            body = await accepted(broker.app, submitted.json()["message_id"])
            refused = await push(ng, body, swapped)
            assert refused.status_code == 401, refused.text
            assert problem_type(refused) == "unauthenticated"
            assert await stored_messages(ng) == []
    logged = events(json_logs, "broker_key_not_pinned")
    assert logged
    assert {line["kid"] for line in logged} == {swapped.kid}


async def test_a_rotation_is_believed_once_the_next_key_is_pinned(
    sqlite_database: str, tmp_path: Path
) -> None:
    settings = broker_settings(sqlite_database, tmp_path, allow_loopback_inboxes=True)
    before = broker_keys.load(settings.broker_key_file, create=True)
    prepared = broker_keys.prepare(settings.broker_key_file)  # published before the rotation
    assert prepared.next is not None
    old, new = before.signing, prepared.next
    async with AsyncExitStack() as nodes:
        async with running_broker(settings) as broker:
            info = (await broker.client.get("/v1/broker")).json()
            assert info["next_key"] == {"kid": new.kid, "alg": "Ed25519", "public": new.public_b64}
            await registered(broker)
            await consent(broker, "AT-ROT-0001")
            await consent(broker, "AT-ROT-0002")
            operator = pins(broker.operator.signing)
            switch = Switch(httpx.ASGITransport(app=broker.app))
            to_broker = await nodes.enter_async_context(
                httpx.AsyncClient(transport=switch, base_url="http://broker")
            )
            at, ng, ng_old = [
                await nodes.enter_async_context(
                    running_node(
                        node_settings(
                            tmp_path,
                            [keys],
                            f"sqlite+aiosqlite:///{tmp_path / name}.db",
                            node_broker_keys=pinned,
                            node_operator_keys=operator,
                        ),
                        to_broker,
                    )
                )
                for name, keys, pinned in (
                    ("at", AT, pins(old, new)),
                    ("ng", NG, pins(old, new)),
                    ("ng-old", NG, pins(old)),  # its operator did not pin the new key
                )
            ]
            sent = await send(at, "AT-ROT-0001")  # receipted with the old key
            assert sent.status_code == 201, sent.text
            message_id = sent.json()["message_id"]

        # The rotation: the prepared key signs from now on; the broker restarts with it.
        broker_keys.rotate(settings.broker_key_file, datetime.now(UTC))
        async with serving(settings) as restarted:
            assert restarted.state.broker.signing_key.kid == new.kid
            switch.target = httpx.ASGITransport(app=restarted)
            await asyncio.sleep(1.1)  # a pinned kid not seen yet: read again after 1 s

            # The message accepted under the old key, pushed with the new one.
            body = await accepted(restarted, message_id)
            answered = await push(ng, body, new)
            assert answered.status_code == 200, answered.text
            assert [m["message_id"] for m in await stored_messages(ng)] == [message_id]
            refused = await push(ng_old, body, new)
            assert refused.status_code == 401, refused.text
            assert await stored_messages(ng_old) == []

            # A message sent now is receipted with the new key, which the node believes.
            again = await send(at, "AT-ROT-0002")
            assert again.status_code == 201, again.text
            assert jws.parse(again.json()["receipt"], jws.TYP_RECEIPT).kid == new.kid


async def test_a_node_with_nothing_pinned_trusts_on_first_use_and_warns_at_start(
    sqlite_database: str, tmp_path: Path, json_logs: io.StringIO
) -> None:
    settings = broker_settings(sqlite_database, tmp_path)
    async with running_broker(settings) as broker:
        db = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
        async with running_node(node_settings(tmp_path, [AT], db), broker.client) as node:
            health = (await node.get("/healthz")).json()
        assert health == {"status": "ok", "broker_keys": "first-use", "registry_keys": "as-served"}
        assert len(events(json_logs, "broker_keys_not_pinned")) == 1
        assert len(events(json_logs, "operator_keys_not_pinned")) == 1

        json_logs.truncate(0)
        json_logs.seek(0)
        pinned = {
            "node_broker_keys": pins(broker.app.state.broker.signing_key),
            "node_operator_keys": pins(broker.operator.signing),
        }
        db = f"sqlite+aiosqlite:///{tmp_path / 'pinned.db'}"
        async with running_node(node_settings(tmp_path, [AT], db, **pinned), broker.client):
            pass
        assert events(json_logs, "broker_keys_not_pinned") == []
        assert events(json_logs, "operator_keys_not_pinned") == []


async def test_a_pinned_key_copied_wrong_stops_the_node_at_start(
    sqlite_database: str, tmp_path: Path
) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    wrong = pin_entry(key.kid, other.public_b64)  # a kid that is not its key's thumbprint
    db = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    settings = node_settings(tmp_path, [AT], db, node_broker_keys=wrong)
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        with pytest.raises(SystemExit, match=f"TRM_NODE_BROKER_KEYS: {key.kid} is not the key id"):
            async with running_node(settings, broker.client):
                pass


# --- the registry's keys ---------------------------------------------------------------------


async def written_into_the_database(broker: Broker, participant: str, use: KeyUse) -> Any:
    """A key row added straight into the broker's database (no signed request, no
    statement): what someone holding the database, not the operator's key, can do."""
    key: Any = SigningKey.generate() if use is KeyUse.SIG else generate_encryption_key()
    async with broker.app.state.broker.sessions() as session:
        session.add(
            ParticipantKey(
                kid=key.kid,
                participant_id=participant,
                use=use,
                alg="Ed25519" if use is KeyUse.SIG else "X25519",
                public_key=key.public_b64,
                valid_from=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
        await session.commit()
    return key


async def test_a_key_written_straight_into_the_brokers_database_is_not_believed(
    sqlite_database: str, tmp_path: Path, json_logs: io.StringIO
) -> None:
    settings = broker_settings(sqlite_database, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        await registered(broker)
        await consent(broker, "AT-DB-0001")
        broker_key = broker.app.state.broker.signing_key
        pinned = {
            "node_broker_keys": pins(broker_key),
            "node_operator_keys": pins(broker.operator.signing),
        }
        dbs = {n: f"sqlite+aiosqlite:///{tmp_path / n}.db" for n in ("at", "ng", "ng-tofu")}
        forged_sig = await written_into_the_database(broker, AT.participant, KeyUse.SIG)
        forged_enc = await written_into_the_database(broker, NG.participant, KeyUse.ENC)
        async with (
            running_node(node_settings(tmp_path, [AT], dbs["at"], **pinned), broker.client) as at,
            running_node(node_settings(tmp_path, [NG], dbs["ng"], **pinned), broker.client) as ng,
            running_node(node_settings(tmp_path, [NG], dbs["ng-tofu"]), broker.client) as tofu,
        ):
            # 1. Sealing: the newer key in the registry is passed over for NG's proven one.
            sent = await send(at, "AT-DB-0001")
            assert sent.status_code == 201, sent.text
            body = await accepted(broker.app, sent.json()["message_id"])
            sealed = jws.parse(body["envelope"], jws.TYP_ENVELOPE).claims()["sealed"]
            assert sealed["kid"] == NG.encryption.kid != forged_enc.kid

            # 2. A signature: an envelope signed with the written key, which the broker (its
            #    database tampered with) accepts and pushes with its own key and receipt.
            forged = KeySet(AT.participant, forged_sig, AT.encryption)
            envelope = referral(forged, NG, case_ref="AT-DB-0002")
            submitted = await broker.submit(envelope, signer=forged)
            assert submitted.status_code == 202, submitted.text
            pushed = await accepted(broker.app, submitted.json()["message_id"])
            refused = await push(ng, pushed, broker_key)
            assert refused.status_code == 403, refused.text
            assert problem_type(refused) == "key-not-proven"
            assert refused.json()["kid"] == forged_sig.kid
            assert await stored_messages(ng) == []
            # A node that pins nothing believes it: the pin is what refuses it.
            assert (await push(tofu, pushed, broker_key)).status_code == 200

            # 3. With NG's proven key expired, nothing is left to seal to: refused.
            async with broker.app.state.broker.sessions() as session:
                await session.execute(
                    update(ParticipantKey)
                    .where(ParticipantKey.kid == NG.encryption.kid)
                    .values(valid_until=datetime.now(UTC) - timedelta(seconds=1))
                )
                await session.commit()
            again = await send(at, "AT-DB-0003")
            assert again.status_code == 502, again.text
            assert problem_type(again) == "key-not-proven"
            assert again.json()["rule"] == "registry_key_not_proven"
            assert again.json()["kid"] == forged_enc.kid

    logged = events(json_logs, "registry_key_not_proven")
    assert {(line["participant"], line["kid"], line["reason"]) for line in logged} == {
        (NG.participant, forged_enc.kid, "no_operator_statement"),
        (AT.participant, forged_sig.kid, "no_operator_statement"),
    }
    # Ids only: nothing of the message, its payload or its keys' material.
    for line in logged:
        assert set(line) <= {
            "event",
            "participant",
            "kid",
            "use",
            "reason",
            "action",
            "level",
            "timestamp",
            "request_id",
            "message_id",
        }
