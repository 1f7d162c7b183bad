"""Payloads leave the broker once acknowledged and past retention; the ledger records it and
still verifies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from tests.e2e.test_no_personal_data import sealed_pieces, sqlite_files_bytes
from tests.support import broker_settings, polling, referral, running_broker
from trm_broker.background.retention import RetentionPurger
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import KeySet
from trm_broker.ledger import merkle
from trm_broker.store.models import Delivery, LedgerEntry, Message

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
DAY = timedelta(days=1)


async def test_acknowledged_payloads_are_purged_after_retention_only(
    database_url: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        await broker.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        ids = [(await broker.submit(referral(AT, NG))).json()["message_id"] for _ in range(3)]
        now = datetime.now(UTC)
        sessions = broker.app.state.broker.sessions
        async with sessions() as session:
            # The first was acknowledged 31 days ago, the second an hour ago; the third waits.
            for message_id, acked in ((ids[0], now - 31 * DAY), (ids[1], now - DAY / 24)):
                await session.execute(
                    update(Delivery)
                    .where(Delivery.message_id == message_id)
                    .values(status="acknowledged", acknowledged_at=acked)
                )
            await session.commit()

        purger = RetentionPurger(sessions, 30 * DAY)
        assert await purger.run_once(now) == 1
        assert await purger.run_once(now) == 0  # nothing twice

        async with sessions() as session:
            stored = {m.id: m for m in (await session.scalars(select(Message))).all()}
        assert stored[ids[0]].envelope is None
        assert stored[ids[0]].purged_at is not None
        assert stored[ids[1]].envelope is not None
        assert stored[ids[2]].envelope is not None
        status = (await broker.status(ids[0], AT)).json()
        assert status["payload_purged_at"] is not None
        assert status["envelope_digest"] == stored[ids[0]].envelope_digest

        # The purge is a ledger entry, and the ledger still verifies with it.
        async for _ in polling():
            async with sessions() as session:
                entries = (
                    await session.scalars(
                        select(LedgerEntry)
                        .where(LedgerEntry.idx.is_not(None))
                        .order_by(LedgerEntry.idx)
                    )
                ).all()
            if entries and entries[-1].type == "payload.purged":
                break
        purged = entries[-1]
        assert purged.type == "payload.purged"
        assert ids[0].encode() in purged.body
        note = (await broker.client.get("/v1/ledger/checkpoint")).text
        size, root = note.split("\n")[1:3]
        assert int(size) == len(entries)
        leaves = [merkle.leaf_hash(e.body) for e in entries]
        assert base64.b64decode(root) == merkle.root_of(leaves)


async def test_on_sqlite_no_byte_of_a_purged_payload_stays_in_the_file_or_its_log(
    sqlite_database: str, tmp_path: Path
) -> None:
    """secure_delete zeroes what a purge frees, and the purger empties the write-ahead log
    after any purge, a withdrawal's too, where the pages from before the purge remain."""
    database = Path(make_url(sqlite_database).database or "")
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        await broker.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        # Payloads larger than a page: the database frees whole overflow pages when they go.
        large = {"notes": "n" * 4000, "identification_summary": "s" * 4000}
        kept, withdrawn = (referral(AT, NG, payload=large) for _ in range(2))
        ids = [(await broker.submit(e)).json()["message_id"] for e in (kept, withdrawn)]
        sessions = broker.app.state.broker.sessions
        async with sessions() as session:
            stored = {m.id: m.envelope for m in (await session.scalars(select(Message))).all()}
        pieces = {message_id: sealed_pieces(stored[message_id] or b"") for message_id in ids}
        assert all(any(p in sqlite_files_bytes(database) for p in pieces[i]) for i in ids)
        purger = RetentionPurger(sessions, 30 * DAY)

        # A consent withdrawal purges at once; the purger's next step empties the log.
        case_ref = json.loads(b64url_decode(withdrawn["payload"]))["case_ref"]
        answer = await broker.call("POST", f"/v1/consents/consent-{case_ref}/withdraw", AT)
        assert answer.status_code == 200, answer.text
        assert any(p in sqlite_files_bytes(database) for p in pieces[ids[1]])  # in the log
        assert await purger.run_once(datetime.now(UTC)) == 0
        assert not any(p in sqlite_files_bytes(database) for p in pieces[ids[1]])

        # Retention purges the other, and empties the log again.
        async with sessions() as session:
            await session.execute(
                update(Delivery)
                .where(Delivery.message_id == ids[0])
                .values(status="acknowledged", acknowledged_at=datetime.now(UTC) - 31 * DAY)
            )
            await session.commit()
        assert any(p in sqlite_files_bytes(database) for p in pieces[ids[0]])
        assert await purger.run_once(datetime.now(UTC)) == 1
        assert not any(p in sqlite_files_bytes(database) for p in pieces[ids[0]])


async def test_a_withdrawal_leaves_no_copy_in_sqlites_log_for_long(
    sqlite_database: str, tmp_path: Path
) -> None:
    """The withdrawal wakes the broker's own purger, which empties the write-ahead log at
    once instead of at its next interval (a minute)."""
    database = Path(make_url(sqlite_database).database or "")
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        await broker.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        signed = referral(AT, NG, payload={"notes": "n" * 4000, "identification_summary": "s"})
        message_id = (await broker.submit(signed)).json()["message_id"]
        async with broker.app.state.broker.sessions() as session:
            stored = await session.get(Message, message_id)
            assert stored is not None
            pieces = sealed_pieces(stored.envelope or b"")
        case_ref = json.loads(b64url_decode(signed["payload"]))["case_ref"]
        answer = await broker.call("POST", f"/v1/consents/consent-{case_ref}/withdraw", AT)
        assert answer.status_code == 200, answer.text
        async for _ in polling(interval=0.1):  # the purger runs as soon as it is woken
            if not any(p in sqlite_files_bytes(database) for p in pieces):
                break
        assert not any(p in sqlite_files_bytes(database) for p in pieces)
