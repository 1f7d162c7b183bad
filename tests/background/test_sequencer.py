"""The sequencer: batches of queued entries become leaves in one order, even with several
sequencers (replicas) on one database; each batch gets a signed checkpoint."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from tests.support import broker_settings, polling, referral, running_broker
from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger import merkle
from trm_broker.ledger.note import NoteSigner, open_checkpoint
from trm_broker.store import ledger
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import LedgerCheckpoint, LedgerEntry


async def test_concurrent_sequencers_integrate_each_entry_once_in_one_tree(
    database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(database_url, tmp_path)
    # The broker's own sequencer is off: four "replicas" below race for the work.
    async with running_broker(settings, run_sequencer=False) as broker:
        key: SigningKey = broker.app.state.broker.signing_key
    signer = NoteSigner(settings.ledger_origin, key)
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        async with session_factory(engines[0])() as session:
            for number in range(300):
                ledger.append(
                    session,
                    LedgerEvent(EventType.ALERT_RAISED, datetime.now(UTC), facts={"n": number}),
                )
            await session.commit()
        sequencers = [
            LedgerSequencer(session_factory(engine), signer, batch_size=37) for engine in engines
        ]

        queued = 301  # the bootstrap's entry and ours
        done = [0]

        async def drain(sequencer: LedgerSequencer) -> int:
            """Rounds until every entry is in, or a minute has passed (a slow machine)."""
            total = 0
            deadline = asyncio.get_running_loop().time() + 60
            while done[0] < queued and asyncio.get_running_loop().time() < deadline:
                try:
                    integrated = await sequencer.run_once()
                except Exception:  # a lost race on SQLite's write lock: the next round retries
                    integrated = 0
                total += integrated
                done[0] += integrated
                if not integrated:
                    await asyncio.sleep(0.01)
            return total

        integrated = await asyncio.gather(*(drain(s) for s in sequencers))
        assert sum(integrated) == queued  # each once
        assert [await s.run_once() for s in sequencers] == [0, 0, 0, 0]  # nothing left

        async with session_factory(engines[0])() as session:
            rows = (await session.scalars(select(LedgerEntry).order_by(LedgerEntry.idx))).all()
            latest = await ledger.latest_checkpoint(session)
            checkpoints = await session.scalar(select(func.count()).select_from(LedgerCheckpoint))
        assert [r.idx for r in rows] == list(range(301))
        assert latest is not None
        checkpoint = open_checkpoint(latest.note, signer.verifier())
        assert checkpoint.size == 301
        assert checkpoint.root == merkle.root_of([merkle.leaf_hash(r.body) for r in rows])
        assert (checkpoints or 0) >= 301 // 37
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_broker_integrates_what_it_accepts_by_itself(
    database_url: str, tmp_path: Path
) -> None:
    """The running broker's sequencer picks up a new entry without being asked (how fast is
    measured by `make bench`, not here)."""
    at, ng = KeySet.generate("at.focal-point"), KeySet.generate("ng.naptip")
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        await broker.register(at, "AT")
        await broker.register(ng, "NG")
        message_id = (await broker.submit(referral(at, ng))).json()["message_id"]
        async for _ in polling(interval=0.02):
            index = (await broker.status(message_id, at)).json()["ledger_index"]
            if index is not None:
                break
        assert index == 4  # after the bootstrap, the two registrations and the consent
