"""The ledger search (the API's and the console's) reads the ledger through its indexes for
every filter, never the whole table (issue 20): checked on the query plans of the very
query the search runs, with PostgreSQL told to avoid sequential scans wherever an index
can serve (a filter with no index would still show one). A search by time runs between
the index bounds of its days (``ledger_days``); a search by country reads a page from each
country column's index in index order. `make bench` measures the same queries on a
million entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bench.plans import full_scans, plan
from trm_broker.domain.ledger_events import EventType
from trm_broker.store import ledger as store
from trm_broker.store.database import create_engine, session_factory

DAY = datetime(2026, 11, 2, tzinfo=UTC)
FILTERS = {
    "case": store.Search(case_ref="AT-2026-0001"),
    "participant": store.Search(participant="at.focal-point"),
    "country": store.Search(country="NG"),
    "event type": store.Search(type=EventType.MESSAGE_ACCEPTED),
    "time range": store.Search(since=DAY, until=DAY + timedelta(days=1)),
    "type and time": store.Search(
        type=EventType.ALERT_RAISED, since=DAY, until=DAY + timedelta(days=1)
    ),
    "a country no entry has": store.Search(country="ZZ"),
    "country and time": store.Search(country="NG", since=DAY, until=DAY + timedelta(days=1)),
    "time from": store.Search(since=DAY),
}
#: The index bounds :func:`store.span_of` gives a search by time.
SPAN = (200, 400)


@pytest.mark.parametrize("name", FILTERS)
async def test_each_search_filter_reads_an_index_not_the_table(
    database_url: str, name: str
) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            if database_url.startswith("postgresql"):
                await session.execute(text("SET enable_seqscan = off"))
            where = FILTERS[name]
            timed = where.since is not None or where.until is not None
            query = store.search_query(where, None, -1, 50, 1000, SPAN if timed else None)
            lines = await plan(session, query)
    finally:
        await engine.dispose()
    assert lines
    assert full_scans(lines, "ledger_entries") == [], lines
