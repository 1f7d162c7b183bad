"""The loops' common shape (background/loop.py): work found while a step runs is not
left until the next interval."""

from __future__ import annotations

import asyncio

from trm_broker.background.loop import BackgroundLoop


class _Queue(BackgroundLoop):
    """A loop over an in-memory queue whose step looks, then (slowly) does nothing."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        self.items: list[str] = []
        self.done: list[str] = []
        self.looking = asyncio.Event()
        self.go_on = asyncio.Event()

    async def step(self) -> bool:
        found = list(self.items)
        self.items.clear()
        self.done.extend(found)
        if not self.done:  # the first step: stay inside it until told
            self.looking.set()
            await self.go_on.wait()
        return False


async def test_a_wake_while_a_step_runs_starts_another_step_at_once() -> None:
    """A message accepted while the dispatcher's claim was already reading (so the claim
    did not see it) must not wait for the next interval: the accept path's wake counts."""
    loop = _Queue(interval=30)
    task = asyncio.create_task(loop.run_forever())
    try:
        await asyncio.wait_for(loop.looking.wait(), 5)
        loop.items.append("accepted meanwhile")  # after the step looked
        loop.wake()
        loop.go_on.set()
        for _ in range(200):
            if loop.done:
                break
            await asyncio.sleep(0.01)
        assert loop.done == ["accepted meanwhile"]  # within 2 s, not the 30 s interval
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)
