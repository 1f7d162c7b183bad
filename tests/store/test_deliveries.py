"""Claiming due deliveries: two claimers never get the same row, on either database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from tests.support import broker_settings, referral, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.store import deliveries
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import Delivery

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


async def test_concurrent_claimers_get_disjoint_rows(database_url: str, tmp_path: Path) -> None:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        await broker.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        for _ in range(10):
            assert (await broker.submit(referral(AT, NG))).status_code == 202

    engines = [create_engine(database_url) for _ in range(4)]
    try:
        now = datetime.now(UTC)

        async def claim(engine_index: int) -> list[int]:
            async with session_factory(engines[engine_index])() as session:
                claimed = await deliveries.claim_due(session, now, now + timedelta(minutes=5), 10)
                await session.commit()
                return [c.delivery_id for c in claimed]

        results = await asyncio.gather(*(claim(i) for i in range(4)))
        every = [i for result in results for i in result]
        assert len(every) == len(set(every)) == 10

        async with session_factory(engines[0])() as session:
            leased = (await session.scalars(select(Delivery.next_attempt_at))).all()
        assert all(moment > now for moment in leased)
    finally:
        for engine in engines:
            await engine.dispose()
