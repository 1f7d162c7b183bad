"""The JSON log of a submit and its delivery: every line of a request carries its request id,
every line about a message its message id, and nothing sent in an envelope ever appears."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import broker_settings, referral, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.logs import configure_logging

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
INBOX = "http://127.0.0.1:9/inbox"  # reached through the in-process node's transport
#: Stands for personal data a node might put anywhere it can write text.
CANARY = "Jane-Doe-1990-01-01"
#: Lines logged outside any request: start-up, the dispatcher, the background loops.
BACKGROUND = {
    "broker_started",
    "broker_stopped",
    "node_started",
    # A node's SQLite database brought to the schema's head at start (node/migrate.py).
    "node_schema_adopted",
    "node_schema_upgraded",
    # A node with nothing pinned says so at start (node/trust.py).
    "broker_keys_not_pinned",
    "operator_keys_not_pinned",
    "ledger_integrated",
    "alerts_updated",
    "delivery_acknowledged",
    "delivery_rejected",
    "delivery_failed",
    # Alembic's, while the app checks the schema at start-up.
    "Context impl SQLiteImpl.",
    "Context impl PostgresqlImpl.",
    "Will assume non-transactional DDL.",
    "Will assume transactional DDL.",
}


@pytest.fixture
def json_logs(database_url: str) -> Iterator[io.StringIO]:
    """The JSON lines logged once the database is migrated."""
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


def with_header_member(envelope: dict[str, str], key: KeySet) -> dict[str, str]:
    """The envelope re-signed with a header member no schema has, named and valued CANARY."""
    claims = jws.parse(envelope, jws.TYP_ENVELOPE).claims()
    claims["header"][CANARY] = CANARY
    return jws.sign(claims, key.signing, jws.TYP_ENVELOPE)


async def test_log_lines_carry_request_and_message_ids_and_no_data(
    json_logs: io.StringIO, database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=INBOX)).status_code == 201
        case_ref = "AT-case-log-0001"
        payload = {
            "destination_country": "NG",
            "identification_summary": f"Met {CANARY} at the border",
            "languages": ["en"],
        }
        accepted = await broker.submit(referral(AT, NG, payload=payload, case_ref=case_ref))
        assert accepted.status_code == 202
        message_id = accepted.json()["message_id"]
        # Refused by the workflow after its signature verified: the message is named.
        again = referral(AT, NG, payload=payload, case_ref=case_ref)
        refused = await broker.submit(again)
        assert refused.status_code == 409
        refused_id = jws.parse(again, jws.TYP_ENVELOPE).claims()["id"]
        # Refused before: an envelope that does not fit its schema is never named.
        odd = await broker.submit(with_header_member(referral(AT, NG), AT))
        assert odd.status_code == 400
        assert CANARY not in odd.text
        status = await broker.call(
            "GET",
            f"/v1/messages/{message_id}?note={CANARY}",
            AT,
            headers={"x-request-id": f"for {CANARY}"},  # not an id: replaced
        )
        assert status.status_code == 200
        assert (await broker.status(CANARY, AT)).status_code == 404  # the caller's text

        key_file = tmp_path / "ng.keys.json"
        NG.write(key_file)
        async with running_node(tmp_path, [key_file], broker.client, "token") as to_node:
            state = broker.app.state.broker
            dispatcher = DeliveryDispatcher(
                state.sessions,
                to_node,
                timeout=30,  # a push's deadline: room for a loaded machine
                poll_interval=0.1,
                backoff_cap=1,
                policy=InboxPolicy(allow_loopback=True),
                signing_key=state.signing_key,
            )
            assert await dispatcher.run_once() == 1

    text = json_logs.getvalue()
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line]
    assert CANARY not in text
    assert case_ref not in text  # pseudonymous, yet not for the logs either
    assert "languages" not in text

    for line in lines:
        if line["event"] not in BACKGROUND:
            assert "request_id" in line, line

    def named(event: str, **fields: Any) -> list[str | None]:
        """The message ids on the lines of ``event`` with ``fields``."""
        return [
            line.get("message_id")
            for line in lines
            if line["event"] == event and fields.items() <= line.items()
        ]

    assert named("message_accepted") == [message_id]
    submits = named("request", route="/v1/messages", method="POST")
    assert submits == [message_id, refused_id, None]
    assert named("request_refused", status=409) == [refused_id]
    assert named("request", route="/v1/messages/{message_id}") == [message_id, None]
    # The push: the node's lines (its own request), then the dispatcher's.
    assert named("message_received") == [message_id]
    assert named("request", route="/inbox") == [message_id]
    assert named("delivery_acknowledged") == [message_id]
    assert not any("request_id" in line for line in lines if line["event"].startswith("delivery"))
