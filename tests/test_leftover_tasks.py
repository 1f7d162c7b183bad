"""The suite's guard against a task that outlives its cancellation (tests/leftover_tasks.py)."""

from __future__ import annotations

import asyncio

from tests.leftover_tasks import finish_leftover_tasks


async def _survives_one_cancellation(never: asyncio.Future[None]) -> None:
    """As aiosqlite's close after stop: cancelled, it waits again on a future nobody sets."""
    try:
        await asyncio.sleep(3600)
    finally:
        await never


async def test_a_task_that_survives_one_cancellation_is_ended_and_named() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stubborn = asyncio.create_task(_survives_one_cancellation(never), name="stubborn")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    await asyncio.sleep(0)
    described = await finish_leftover_tasks()
    assert stubborn.done()
    assert polite.done()
    assert len(described) == 1
    assert described[0].startswith("stubborn waiting at ")
    assert "test_leftover_tasks.py" in described[0]
