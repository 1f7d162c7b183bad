"""Rotating the broker's own key: what the old key signed stays good. A node takes a message
accepted (and receipted) before the rotation, pushed after it with the new key; checkpoints
of both keys verify with the keys `GET /v1/broker` publishes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import broker_settings, polling, referral, running_broker, running_node
from trm_broker.api.app import create_app
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import broker_keys
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.ledger.note import NoteError, NoteVerifier, open_checkpoint
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
INBOX = "http://127.0.0.1:9/inbox"  # reached through the in-process node's transport


async def checkpoint_covering(client: httpx.AsyncClient, app: Any, sent_entries: int) -> str:
    """The latest checkpoint once it covers the message's acceptance (the sequencer runs
    beside the app)."""
    async for _ in polling():
        note = (await client.get("/v1/ledger/checkpoint")).text
        # registrations (3 entries: operator, AT, NG), consent, then the acceptance
        if int(note.split("\n")[1]) >= 4 + sent_entries:
            return note
        app.state.broker.wake_sequencer()
    raise AssertionError("the sequencer did not integrate the acceptance")


async def test_what_the_retired_key_signed_stays_good_after_a_rotation(
    database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as before:
        assert (await before.register(AT, "AT", inbox_url="http://127.0.0.1:9/at")).is_success
        assert (await before.register(NG, "NG", inbox_url=INBOX)).is_success
        old = (await before.client.get("/v1/broker")).json()
        sent = (await before.submit(referral(AT, NG))).json()
        old_note = await checkpoint_covering(before.client, before.app, sent_entries=1)

    rotated_at = datetime.now(UTC)
    _, after_keys = broker_keys.rotate(settings.broker_key_file, rotated_at)

    app = create_app(settings, run_dispatcher=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as b,
    ):
        info = (await b.get("/v1/broker")).json()
        assert info["signing_key"]["kid"] == after_keys.signing.kid != old["signing_key"]["kid"]
        assert [k["kid"] for k in info["retired_keys"]] == [old["signing_key"]["kid"]]
        assert info["ledger"]["retired_verifier_keys"] == [old["ledger"]["verifier_key"]]

        # The message accepted under the old key reaches the node, pushed with the new key.
        key_file = tmp_path / "ng.keys.json"
        NG.write(key_file)
        async with running_node(tmp_path, [key_file], b, "token") as node:
            dispatcher = DeliveryDispatcher(
                app.state.broker.sessions,
                node,
                timeout=30,  # a push's deadline: room for a loaded machine
                poll_interval=0.1,
                backoff_cap=0.1,
                policy=InboxPolicy(allow_loopback=True),
                signing_key=app.state.broker.signing_key,
            )
            assert await dispatcher.run_once() == 1
            auth = SignedRequests(AT.signing)
            status = (await b.get(f"/v1/messages/{sent['message_id']}", auth=auth)).json()
            assert status["status"] == "acknowledged", status

        # Its acknowledgement is a ledger entry: the next checkpoint is the new key's.
        new_note = old_note
        async for _ in polling():
            app.state.broker.wake_sequencer()
            await asyncio.sleep(0.05)
            new_note = (await b.get("/v1/ledger/checkpoint")).text
            if new_note != old_note:
                break

    current = NoteVerifier.from_vkey(info["ledger"]["verifier_key"])
    retired = NoteVerifier.from_vkey(info["ledger"]["retired_verifier_keys"][0])
    assert open_checkpoint(old_note, [current, retired]).size >= 3
    assert open_checkpoint(new_note, [current, retired]).size > 0
    with pytest.raises(NoteError):
        open_checkpoint(old_note, current)  # the old checkpoint needs the retired key
    with pytest.raises(NoteError):
        open_checkpoint(new_note, retired)
