"""Background loops beside the API (ledger sequencer, dispatcher, retention, alerts): one
shape for all: do a step, and when it found nothing to do, sleep until woken or the interval
has passed. A failed step (the database briefly away, a conflict) is logged and retried."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

import structlog

log = structlog.get_logger("trm_broker.background")


class BackgroundLoop(ABC):
    #: Names the loop in logs (``<name>_error``).
    name: str = "background"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wake(self) -> None:
        """Look for work now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the step under way, then leave :meth:`run_forever`."""
        self._stopping.set()
        self._wake.set()

    @abstractmethod
    async def step(self) -> bool:
        """Do one batch of work; ``True`` if more may be waiting (the loop goes on at once)."""

    async def run_forever(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            # Cleared before the step, not after: a wake while it runs (a message accepted
            # after its query looked) starts the next step at once instead of being lost.
            self._wake.clear()
            try:
                busy = await self.step()
                failures = 0
            except Exception as exc:  # keep going: the next step may well succeed
                failures += 1
                log.warning(f"{self.name}_error", error_type=type(exc).__name__, failures=failures)
                busy = False
            if not busy and not self._stopping.is_set():
                # After failures (a database outage), wait longer each time, up to 30 s.
                wait = min(max(self._interval, 30.0), self._interval * 2 ** min(failures, 10))
                # asyncio.timeout, not wait_for, which on 3.11 can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
