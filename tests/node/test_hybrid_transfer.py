"""A recipient registered with an MLKEM768-X25519 key gets its messages sealed with the
post-quantum hybrid suite, chosen by the sending node from the registry, and opens them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.support import Broker, broker_settings, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.crypto.seal import SUITE_MLKEM768_X25519, SUITE_X25519
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.store.database import create_engine
from trm_broker.store.models import Message

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip", encryption_alg="MLKEM768-X25519")
PAYLOAD = {
    "destination_country": "NG",
    "form_of_exploitation": "forced_labour",
    "languages": ["en", "ha"],
}


def referral_request(
    recipient: str, case_ref: str = "AT-2026-0042", to: str = "NG"
) -> dict[str, Any]:
    return {
        "type": "referral",
        "case_ref": case_ref,
        "recipient": recipient,
        "payload": {**PAYLOAD, "destination_country": to},
        "consent_ref": f"consent-{case_ref}",
    }


async def consent(broker: Broker, sender: KeySet, case_ref: str, recipient: str) -> None:
    body = {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [recipient],
        "data_categories": ["identity", "other"],  # what PAYLOAD holds
        "valid_from": "2026-01-01T00:00:00Z",
        "form_digest": "sha-256:" + "E" * 43,
    }
    assert (await broker.call("POST", "/v1/consents", sender, json=body)).status_code == 201


async def stored_sealed(broker: Broker, message_id: str) -> dict[str, Any]:
    """The ``sealed`` member of the envelope the broker accepted."""
    engine = create_engine(broker.settings.database_url)
    try:
        async with engine.connect() as connection:
            envelope = (
                await connection.execute(select(Message.envelope).where(Message.id == message_id))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert envelope is not None
    sealed: dict[str, Any] = jws.parse(json.loads(envelope), jws.TYP_ENVELOPE).claims()["sealed"]
    return sealed


def key_file(tmp_path: Path, keyset: KeySet) -> Path:
    path = tmp_path / f"{keyset.participant}.keys.json"
    keyset.write(path)
    return path


async def test_a_message_to_a_hybrid_key_is_sealed_with_the_hybrid_suite_and_opens(
    database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        at_inbox, ng_inbox = "http://127.0.0.1:9/at-inbox", "http://127.0.0.1:9/inbox"
        assert (await broker.register(AT, "AT", inbox_url=at_inbox)).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=ng_inbox)).status_code == 201
        await consent(broker, AT, "AT-2026-0042", NG.participant)
        await consent(broker, NG, "NG-2026-0042", AT.participant)
        (tmp_path / "at").mkdir()
        (tmp_path / "ng").mkdir()
        async with (
            running_node(
                tmp_path / "at", [key_file(tmp_path, AT)], broker.client, "at-worker"
            ) as at_node,
            running_node(
                tmp_path / "ng", [key_file(tmp_path, NG)], broker.client, "ng-worker"
            ) as ng_node,
        ):
            # 1. A case worker at AT sends; the node seals to NG's registered hybrid key.
            sent = await at_node.post(
                "/messages",
                json=referral_request(NG.participant),
                headers={"authorization": "Bearer at-worker"},
            )
            assert sent.status_code == 201, sent.text
            message_id = sent.json()["message_id"]
            sealed = await stored_sealed(broker, message_id)
            assert (sealed["suite"], sealed["kid"]) == (SUITE_MLKEM768_X25519, NG.encryption.kid)

            # 2. The broker pushes it to NG's node, which opens it with its hybrid key.
            dispatcher = DeliveryDispatcher(
                broker.app.state.broker.sessions,
                ng_node,
                timeout=30,  # a push's deadline: room for a loaded machine
                poll_interval=0.1,
                backoff_cap=1,
                policy=InboxPolicy(allow_loopback=True),
                signing_key=broker.app.state.broker.signing_key,
            )
            assert await dispatcher.run_once() == 1
            received = await ng_node.get("/messages", headers={"authorization": "Bearer ng-worker"})
            assert [(m["message_id"], m["payload"]) for m in received.json()["messages"]] == [
                (message_id, PAYLOAD)
            ]

            # 3. The reply goes the other way with the classical suite: AT's key is X25519.
            reply = await ng_node.post(
                "/messages",
                json=referral_request(AT.participant, "NG-2026-0042", "AT"),
                headers={"authorization": "Bearer ng-worker"},
            )
            assert reply.status_code == 201, reply.text
            reply_sealed = await stored_sealed(broker, reply.json()["message_id"])
            assert (reply_sealed["suite"], reply_sealed["kid"]) == (SUITE_X25519, AT.encryption.kid)
