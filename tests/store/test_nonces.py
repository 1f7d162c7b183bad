"""The nonce store: a nonce counts once per key, even under concurrency, and is forgotten
only once its signature is too old to be accepted anyway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trm_broker.store import nonces
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import RequestNonce

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def remember(engine: AsyncEngine, keyid: str, nonce: str, expires: datetime) -> bool:
    async with session_factory(engine)() as session:
        fresh = await nonces.remember(session, keyid, nonce, expires)
        await session.commit()
        return fresh


async def test_a_nonce_counts_once_per_key(engine: AsyncEngine) -> None:
    expires = NOW + timedelta(minutes=10)
    assert await remember(engine, "key-a", "nonce-1", expires)
    assert not await remember(engine, "key-a", "nonce-1", expires)
    assert await remember(engine, "key-b", "nonce-1", expires)  # another key's nonce


async def test_concurrent_uses_of_one_nonce_count_once(engine: AsyncEngine) -> None:
    expires = NOW + timedelta(minutes=10)
    results = await asyncio.gather(
        *(remember(engine, "key-a", "same-nonce", expires) for _ in range(8))
    )
    assert sorted(results) == [False] * 7 + [True]


async def test_pruning_forgets_only_expired_nonces(engine: AsyncEngine) -> None:
    await remember(engine, "key-a", "old", NOW - timedelta(seconds=1))
    await remember(engine, "key-a", "live", NOW + timedelta(minutes=1))
    async with session_factory(engine)() as session:
        assert await nonces.prune(session, NOW) == 1
        await session.commit()
        left = (await session.scalars(select(RequestNonce.nonce))).all()
        assert left == ["live"]
        assert (await session.scalar(select(func.count()).select_from(RequestNonce))) == 1
