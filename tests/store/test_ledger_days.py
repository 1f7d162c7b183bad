"""A ledger search by time or by country (issue 20) finds exactly the entries a plain filter
of the whole ledger finds, page after page, though the times of entries are not in the
order of their indexes: the search reads only the indexes between each day's first and last
(``ledger_days``, kept by the database as the sequencer gives indexes) and each country's
entries in index order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from sqlalchemy import select

from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger.note import NoteSigner
from trm_broker.store import ledger
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import LedgerDay, LedgerEntry

START = datetime(2026, 11, 2, tzinfo=UTC)
COUNTRIES = ["AT", "NG", "FR"]


def _event(rng: random.Random, number: int) -> LedgerEvent:
    # Mostly in order, some hours early or late, a few days late: as a slow transaction's.
    at = START + timedelta(hours=number / 4 + rng.choice([0, 0, -5, 7, 50]))
    countries = tuple(rng.sample(COUNTRIES, rng.choice([0, 1, 1, 2])))
    return LedgerEvent(
        rng.choice([EventType.ALERT_RAISED, EventType.MESSAGE_ACCEPTED]),
        at,
        countries=countries,
        facts={"n": number},
    )


async def test_searches_by_time_and_country_find_exactly_the_matching_entries(
    database_url: str,
) -> None:
    rng = random.Random(20)  # noqa: S311 - test data, not cryptography
    engine = create_engine(database_url)
    sequencer = LedgerSequencer(
        session_factory(engine), NoteSigner("trm.test/ledger", SigningKey.generate()), batch_size=70
    )
    try:
        async with session_factory(engine)() as session:
            for batch in range(4):  # queued and integrated in several rounds
                for number in range(batch * 100, batch * 100 + 100):
                    ledger.append(session, _event(rng, number))
                await session.commit()
                while await sequencer.run_once():
                    pass
            every = (await session.scalars(select(LedgerEntry).order_by(LedgerEntry.idx))).all()
            days = {
                d.day: (d.first_idx, d.last_idx) for d in await session.scalars(select(LedgerDay))
            }
            size = len(every)
            searches = [ledger.Search(country=c) for c in [*COUNTRIES, "ZZ"]]
            for _ in range(12):
                since = START + timedelta(minutes=rng.randrange(-600, 5 * 24 * 60))
                until = since + timedelta(minutes=rng.randrange(1, 3 * 24 * 60))
                searches += [
                    ledger.Search(since=since, until=until),
                    ledger.Search(since=since),
                    ledger.Search(until=until),
                    ledger.Search(since=since, until=until, country=rng.choice(COUNTRIES)),
                    ledger.Search(since=since, until=until, type=EventType.ALERT_RAISED),
                ]
            for where in searches:
                expected = [
                    e.idx
                    for e in every
                    if (where.since is None or e.at >= where.since)
                    and (where.until is None or e.at < where.until)
                    and (where.country is None or where.country in (e.country1, e.country2))
                    and (where.type is None or e.type is where.type)
                ]
                found: list[int | None] = []
                after = -1
                while page := await ledger.search(session, where, None, after, 7, size):
                    found += [e.idx for e in page]
                    after = page[-1].idx or 0
                assert found == expected, where
    finally:
        await engine.dispose()
    # The days' bounds are each day's true first and last index, entries out of order too.
    by_day: dict[str, list[int]] = {}
    for e in every:
        assert e.idx is not None
        by_day.setdefault(e.at.date().isoformat(), []).append(e.idx)
    assert days == {day: (min(found), max(found)) for day, found in by_day.items()}
    assert any(a.at > b.at for a, b in pairwise(every))
