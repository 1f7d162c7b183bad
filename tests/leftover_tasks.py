"""Tasks a test leaves behind end with the test, and never hang the suite.

pytest-asyncio closes each test's event loop by cancelling the tasks still pending, once,
and waiting for them without a bound. A task that survives one cancellation then hangs the
run until pytest-timeout kills it (300 s). One way that happens here: an in-process broker and
node share a loop, a task of one is cancelled inside SQLAlchemy's aiosqlite adapter, and the
connection's close waits for a worker thread that has already stopped (aiosqlite 0.22:
``close()`` after ``stop()`` awaits a future nobody resolves).

So every coroutine test ends with :func:`finish_leftover_tasks`: cancel what is left, again
while it does not end, for a bounded time. A task that needed more than one cancellation is
reported as a warning with its name and where it waited, so it is seen, not hidden.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import AsyncIterator

import pytest

#: How many rounds of cancellation, and how long each waits for the tasks to end.
ROUNDS = 20
ROUND_SECONDS = 0.5


class LeftoverTaskWarning(UserWarning):
    """A task outlived its first cancellation at the end of a test."""


async def finish_leftover_tasks() -> list[str]:
    """Cancel the loop's other pending tasks until they end; the ones that needed more than
    one cancellation, described."""
    current = asyncio.current_task()
    stubborn: dict[asyncio.Task[object], str] = {}
    for attempt in range(ROUNDS):
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            break
        for task in pending:
            if attempt > 0 and task not in stubborn:
                stubborn[task] = _describe(task)
            task.cancel()
        await asyncio.wait(pending, timeout=ROUND_SECONDS)
    return list(stubborn.values())


def _describe(task: asyncio.Task[object]) -> str:
    frames = task.get_stack(limit=8)
    where = " <- ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}" for f in frames)
    return f"{task.get_name()} waiting at {where or 'an unknown place'}"


@pytest.fixture
async def _leftover_tasks_end() -> AsyncIterator[None]:
    yield
    for description in await finish_leftover_tasks():
        warnings.warn(description, LeftoverTaskWarning, stacklevel=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Coroutine tests use the fixture first, so that it is torn down last, after the
    fixtures that run brokers and nodes."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.function):
            item.fixturenames.insert(0, "_leftover_tasks_end")
