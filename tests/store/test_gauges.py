"""The ledger gauges a scrape reads (store/gauges.py) never leave out an entry, even when the
sequencer integrates a batch between the scrape's two reads of the ledger."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger.note import NoteSigner
from trm_broker.store import gauges, ledger
from trm_broker.store.database import create_engine, session_factory


async def test_a_batch_integrated_between_the_two_ledger_reads_is_not_left_out(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    sequencer = LedgerSequencer(
        sessions, NoteSigner("broker.test/ledger", KeySet.generate("broker.test").signing)
    )

    async def append(count: int) -> None:
        async with sessions() as session:
            for number in range(count):
                event = LedgerEvent(EventType.ALERT_RAISED, datetime.now(UTC), facts={"n": number})
                ledger.append(session, event)
            await session.commit()

    try:
        await append(5)
        assert await sequencer.run_once() == 5  # a checkpoint of size 5
        await append(7)  # 7 more, waiting for the sequencer
        integrated: list[int] = []

        def integrating_after_first_ledger_read(
            read: Callable[..., Awaitable[Any]],
        ) -> Callable[..., Awaitable[Any]]:
            """``read``, after which the sequencer integrates once, as a concurrent one
            could: right after the scrape's first statement on a ledger table."""

            async def wrapped(statement: Any, *args: Any, **kwargs: Any) -> Any:
                result = await read(statement, *args, **kwargs)
                if not integrated and "ledger_" in str(statement):
                    integrated.append(await sequencer.run_once())
                return result

            return wrapped

        async with sessions() as scrape:
            for method in ("execute", "scalar"):
                wrapped = integrating_after_first_ledger_read(getattr(scrape, method))
                monkeypatch.setattr(scrape, method, wrapped)
            read = await gauges.read(scrape)
        assert integrated == [7]  # the race happened, between the two reads
        # Every one of the 12 entries is counted: in the checkpoint, or as unsequenced (an
        # entry may be counted in both; none may be in neither).
        assert (read.checkpoint_size or 0) + read.unsequenced >= 12
    finally:
        await engine.dispose()
