"""Every entry the broker really writes validates against its published JSON Schema
(`contracts/schemas/ledger/<type>.v1.json`, and `entry.v1.json` for any type): a broker runs
two cases through registration, keys, consent, sending, dead letters, a re-queue, answers by
acknowledgement and by rejection, alerts raised and closed, a withdrawal and a purge."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from jsonschema import Draft202012Validator
from sqlalchemy import select

from tests.security.world import AT, DE, FR, NG, World, build_world, integrated
from tests.support import broker_settings, running_broker
from trm_broker.background.retention import RetentionPurger
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store.models import LedgerEntry

LEDGER_SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas" / "ledger"


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((LEDGER_SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _answer(world: World, name: str, recipient: KeySet, **claims: Any) -> dict[str, Any]:
    """The recipient's signed answer to one message, as its node would sign it."""
    signed = AckClaims(
        v=1,
        message_id=world.messages[name],
        envelope_digest=jws.digest(world.envelopes[name]),
        recipient=recipient.participant,
        received_at="2026-11-23T09:40:27.293Z",
        **{"status": "received", **claims},
    ).signed_claims()
    return {"ack": jws.sign(signed, recipient.signing, jws.TYP_ACK)}


@pytest.fixture
def answers() -> dict[str, dict[str, str]]:
    """The signed answers the recipients gave, by message id."""
    return {}


@pytest.fixture
async def entries(
    database_url: str, tmp_path: Path, answers: dict[str, dict[str, str]]
) -> AsyncIterator[list[dict[str, Any]]]:
    settings = broker_settings(database_url, tmp_path, alert_check_seconds=3600)
    async with running_broker(settings) as broker:
        world = await build_world(broker)  # both referrals are dead letters, with alerts
        operator, now = broker.operator, datetime.now(UTC)
        requeued = f"/v1/deliveries/{world.messages['B.referral']}/requeue"
        assert (await broker.call("POST", requeued, operator)).status_code == 200
        for name, recipient, claims in [
            ("A.referral", NG, {}),  # closes case A's dead-letter alert
            ("B.referral", DE, {}),
            (
                "A.response",
                AT,
                {
                    "status": "rejected",
                    "reasons": ["payload/notes: too long"],
                    "code": "payload-invalid",
                },
            ),
        ]:
            path = f"/v1/inbox/{world.messages[name]}/ack"
            answer = _answer(world, name, recipient, **claims)
            answers[world.messages[name]] = answer["ack"]
            response = await broker.call("POST", path, recipient, json=answer)
            assert response.status_code == 200, response.text
        state = broker.app.state.broker
        assert await RetentionPurger(state.sessions, timedelta(0)).run_once(now + timedelta(1))
        withdraw = f"/v1/consents/{world.consents['spare consent B']}/withdraw"
        assert (await broker.call("POST", withdraw, FR)).status_code == 200
        await integrated(broker)
        async with state.sessions() as session:
            rows = (await session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))).all()
        yield [json.loads(row.body) for row in rows]


async def test_every_entry_the_broker_writes_fits_its_types_schema(
    entries: list[dict[str, Any]], answers: dict[str, dict[str, str]]
) -> None:
    any_entry = _validator("entry.v1.json")
    for entry in entries:
        by_type = _validator(f"{entry['type']}.v1.json")
        assert [e.message for e in by_type.iter_errors(entry)] == [], entry
        assert [e.message for e in any_entry.iter_errors(entry)] == [], entry
    assert {e["type"] for e in entries} == {t.value for t in EventType}, "not every type written"
    acknowledged = next(e for e in entries if e["type"] == "message.acknowledged")
    assert not _validator("message.rejected.v1.json").is_valid(acknowledged)
    # An answer's ack_digest: SHA-256 of the RFC 8785 JSON of the JWS object as signed.
    answered = [e for e in entries if e["type"] in ("message.acknowledged", "message.rejected")]
    assert len(answered) == len(answers) == 3
    for entry in answered:
        signed = rfc8785.dumps(answers[entry["message_id"]])  # {payload, protected, signature}
        digest = base64.urlsafe_b64encode(hashlib.sha256(signed).digest()).rstrip(b"=").decode()
        assert entry["ack_digest"] == "sha-256:" + digest
