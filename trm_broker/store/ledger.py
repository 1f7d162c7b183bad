"""Queries on the ledger: appending events, the sequencer's work, nodes, checkpoints, search.

``append`` is the one call every feature uses to record an event, inside the transaction of
the change it records (docs/design.md §9): the entry commits or rolls back with it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import ColumnElement, Select, and_, func, insert, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from trm_broker.crypto.canonical import canonical_json
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store.direct import Query
from trm_broker.store.models import (
    LedgerCheckpoint,
    LedgerDay,
    LedgerEntry,
    LedgerNode,
    table_of,
)


def _party(participant: str) -> ColumnElement[bool]:
    return or_(
        LedgerEntry.party1 == participant,
        LedgerEntry.party2 == participant,
        LedgerEntry.party3 == participant,
    )


#: The columns of an entry's row as :func:`entry_row` gives them.
ENTRY_COLUMNS = (
    "body",
    "type",
    "at",
    "case_ref",
    "party1",
    "party2",
    "party3",
    "country1",
    "country2",
)


def entry_row(event: LedgerEvent) -> dict[str, object]:
    """An event's row: its canonical body and the columns searches read."""
    body = canonical_json(event.claims())
    if len(event.parties) > 3:
        raise ValueError("a ledger entry names at most three parties")
    # The entry's countries as its body lists them (sorted, each once), all in the columns a
    # search by country reads: a case spans two countries, sending and return.
    found = sorted(set(event.countries))
    if len(found) > 2:
        raise ValueError("a ledger entry names at most two countries")
    parties = [*event.parties, None, None, None]
    countries = [*found, None, None]
    return {
        "body": body,
        "type": event.type,
        "at": event.at,
        "case_ref": event.case_ref,
        "party1": parties[0],
        "party2": parties[1],
        "party3": parties[2],
        "country1": countries[0],
        "country2": countries[1],
    }


def append(session: AsyncSession, event: LedgerEvent) -> LedgerEntry:
    """Queue an event for the tree in the caller's transaction; the sequencer gives it its
    index within a second of commit."""
    entry = LedgerEntry(**entry_row(event))
    session.add(entry)
    return entry


_INSERT = insert(table_of(LedgerEntry)).returning(table_of(LedgerEntry).c.seq)
_APPEND = Query(_INSERT)


async def append_now(session: AsyncSession, event: LedgerEvent) -> tuple[int, bytes]:
    """:func:`append`, inserted at once (one statement, no unit of work): the entry's ``seq``
    and body, for a row that records it (the accept path, issue 21)."""
    values = entry_row(event)
    seq = (await _APPEND.one(session, values))[0]
    return int(seq), cast(bytes, values["body"])


async def index_of(session: AsyncSession, seq: int) -> int | None:
    """The index the sequencer gave the entry queued as ``seq`` (None: not yet)."""
    return await session.scalar(select(LedgerEntry.idx).where(LedgerEntry.seq == seq))


async def pending(session: AsyncSession, limit: int) -> Sequence[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.idx.is_(None)).order_by(LedgerEntry.seq)
    return (await session.scalars(query.limit(limit))).all()


async def latest_checkpoint(session: AsyncSession) -> LedgerCheckpoint | None:
    query = select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1)
    return (await session.scalars(query)).first()


async def checkpoint_at(session: AsyncSession, size: int) -> LedgerCheckpoint | None:
    return await session.get(LedgerCheckpoint, size)


async def checkpoint_at_least(session: AsyncSession, size: int) -> LedgerCheckpoint | None:
    """The smallest signed checkpoint of ``size`` entries or more (the primary key's order)."""
    query = (
        select(LedgerCheckpoint)
        .where(LedgerCheckpoint.size >= size)
        .order_by(LedgerCheckpoint.size)
        .limit(1)
    )
    return (await session.scalars(query)).first()


# A proof's nodes in one statement of one shape, whatever their number: the keys travel as
# parameters (two arrays; one JSON array in SQLite), so the statement is compiled and
# prepared once and each key is one primary-key probe (issue 21: a proof in well under 2 ms
# at 10^7 entries). `CROSS JOIN` makes SQLite read the keys first, then probe the table.
_NODES = {
    "postgresql": text(
        "SELECT n.level, n.idx, n.hash "
        "FROM unnest(CAST(:levels AS integer[]), CAST(:idxs AS bigint[])) AS k(level, idx) "
        "JOIN ledger_nodes AS n ON n.level = k.level AND n.idx = k.idx"
    ),
    "sqlite": text(
        "SELECT n.level, n.idx, n.hash FROM json_each(:keys) AS k "
        "CROSS JOIN ledger_nodes AS n "
        "ON n.level = json_extract(k.value, '$[0]') AND n.idx = json_extract(k.value, '$[1]')"
    ),
}


async def nodes(
    session: AsyncSession, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the given (level, index) nodes, in one query."""
    keys = list(dict.fromkeys(wanted))
    if not keys:
        return {}
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        params: dict[str, object] = {
            "levels": [level for level, _ in keys],
            "idxs": [idx for _, idx in keys],
        }
    else:
        params = {"keys": json.dumps(keys)}
    rows = await connection.execute(_NODES[dialect], params)
    return {(level, idx): digest for level, idx, digest in rows.all()}


def add_nodes(session: AsyncSession, new: Iterable[tuple[tuple[int, int], bytes]]) -> None:
    session.add_all(LedgerNode(level=level, idx=idx, hash=digest) for (level, idx), digest in new)


def add_checkpoint(
    session: AsyncSession, size: int, root: bytes, note: str, issued_at: datetime
) -> None:
    session.add(LedgerCheckpoint(size=size, root=root, note=note, issued_at=issued_at))


async def entries(
    session: AsyncSession, start: int, end: int, reader: str | None
) -> Sequence[LedgerEntry]:
    """Integrated entries with start <= index < end, in index order; ``reader`` (a participant
    id) limits them to the entries it is party to, ``None`` (an auditor) sees all."""
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
        .order_by(LedgerEntry.idx)
    )
    if reader is not None:
        query = query.where(_party(reader))
    return (await session.scalars(query)).all()


_RAW_PAGE_POSTGRESQL = text(
    "SELECT count(*), "
    "string_agg(int8send(e.idx), ''::bytea ORDER BY e.idx), "
    "string_agg(coalesce(n.hash, :no_leaf), ''::bytea ORDER BY e.idx), "
    "string_agg(e.body || '\\x0a'::bytea, ''::bytea ORDER BY e.idx) "
    "FROM ledger_entries AS e "
    "LEFT JOIN ledger_nodes AS n ON n.level = 0 AND n.idx = e.idx "
    "WHERE e.idx >= :start AND e.idx < :end"
)


async def raw_entries(
    session: AsyncSession, start: int, end: int, no_leaf: bytes
) -> tuple[int, bytes, bytes, bytes]:
    """The integrated entries with start <= index < end, in index order, as `GET
    /v1/ledger/entries/raw` serves them: (how many; their indexes, 8 bytes each, big-endian;
    the leaf the tree holds for each, ``no_leaf`` where it holds none; their stored bytes,
    each followed by a line feed). PostgreSQL concatenates them itself: no row reaches
    Python (the auditor's whole-ledger read, issue 21)."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        params = {"start": start, "end": end, "no_leaf": no_leaf}
        count, indexes, leaves, bodies = (
            await connection.execute(_RAW_PAGE_POSTGRESQL, params)
        ).one()
        return int(count), bytes(indexes or b""), bytes(leaves or b""), bytes(bodies or b"")
    query = (
        select(LedgerEntry.idx, LedgerEntry.body, LedgerNode.hash)
        .outerjoin(LedgerNode, and_(LedgerNode.level == 0, LedgerNode.idx == LedgerEntry.idx))
        .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
        .order_by(LedgerEntry.idx)
    )
    rows = (await connection.execute(query)).all()
    return (
        len(rows),
        struct.pack(f">{len(rows)}Q", *(row[0] for row in rows)),
        b"".join(row[2] or no_leaf for row in rows),
        b"".join(row[1] + b"\n" for row in rows),
    )


async def entry_at(session: AsyncSession, index: int, reader: str | None) -> LedgerEntry | None:
    found = await entries(session, index, index + 1, reader)
    return found[0] if found else None


@dataclass(frozen=True)
class Search:
    """Filters of `GET /v1/ledger/search`; ``None`` means any."""

    case_ref: str | None = None
    participant: str | None = None
    country: str | None = None
    type: EventType | None = None
    since: datetime | None = None
    until: datetime | None = None


def _day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


async def span_of(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """The lowest and highest index an entry with ``since <= at < until`` can have (from
    ``ledger_days``, one row a day), or None when no integrated entry has such a time."""
    query = select(func.min(LedgerDay.first_idx), func.max(LedgerDay.last_idx))
    if since is not None:
        query = query.where(LedgerDay.day >= _day_of(since))
    if until is not None:
        query = query.where(LedgerDay.day <= _day_of(until))
    low, high = (await session.execute(query)).one()
    return None if low is None or high is None else (low, high)


def search_query(
    where: Search,
    reader: str | None,
    after: int,
    limit: int,
    below: int,
    span: tuple[int, int] | None = None,
) -> Select[LedgerEntry]:
    """The query of :func:`search`, for it and for checking its plan (bench/console.py);
    ``span`` (from :func:`span_of`) bounds the indexes of a search by time."""
    # The index bounds do not replace the time filters: they only spare reading outside
    # them, so the result is exactly the entries whose `at` is in range.
    # One bound each side, the tighter: SQLite searches an index with the first it meets.
    if span is not None:
        after, below = max(after, span[0] - 1), min(below, span[1] + 1)
    filters: list[ColumnElement[bool]] = [LedgerEntry.idx > after, LedgerEntry.idx < below]
    if where.case_ref is not None:
        filters.append(LedgerEntry.case_ref == where.case_ref)
    if where.participant is not None:
        filters.append(_party(where.participant))
    if where.type is not None:
        filters.append(LedgerEntry.type == where.type)
    if where.since is not None:
        filters.append(LedgerEntry.at >= where.since)
    if where.until is not None:
        filters.append(LedgerEntry.at < where.until)
    if reader is not None:
        filters.append(_party(reader))
    if where.country is None:
        return select(LedgerEntry).where(*filters).order_by(LedgerEntry.idx).limit(limit)
    # By country: a page from each country column, each read in index order from its
    # (country, idx) index, then the first `limit` of both. One query with an OR would make
    # the planner choose between walking the whole index order (slow for a rare country)
    # and sorting every entry of the country (slow for a common one); SQLite cannot tell.
    first = (
        select(LedgerEntry)
        .where(LedgerEntry.country1 == where.country, *filters)
        .order_by(LedgerEntry.idx)
        .limit(limit)
        .subquery()
    )
    second = (
        select(LedgerEntry)
        .where(
            LedgerEntry.country2 == where.country,
            # An entry naming the country in both columns is in the first page already.
            or_(LedgerEntry.country1 != where.country, LedgerEntry.country1.is_(None)),
            *filters,
        )
        .order_by(LedgerEntry.idx)
        .limit(limit)
        .subquery()
    )
    # The two pages' rows themselves, not `idx IN (…)`: PostgreSQL would check that by
    # walking the whole index order.
    entry = aliased(LedgerEntry, union_all(select(first), select(second)).subquery())
    return select(entry).order_by(entry.idx).limit(limit)


async def custom_plans(session: AsyncSession) -> None:
    """PostgreSQL: plan this transaction's statements for their values. A prepared
    statement run five times gets a generic plan, which guesses every ``idx`` range
    tiny and so walks the index order for a country no entry has (seconds on a million
    entries); the values show it a few index entries away."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def search_statement(
    session: AsyncSession, where: Search, reader: str | None, after: int, limit: int, below: int
) -> Select[LedgerEntry] | None:
    """The query :func:`search` runs (None: no entry can match, nothing to run)."""
    span = None
    if where.since is not None or where.until is not None:
        span = await span_of(session, where.since, where.until)
        if span is None:
            return None
    return search_query(where, reader, after, limit, below, span)


async def search(
    session: AsyncSession, where: Search, reader: str | None, after: int, limit: int, below: int
) -> Sequence[LedgerEntry]:
    """Integrated entries (index < ``below``, the checkpoint's size) matching ``where``, in
    index order after ``after``; scoped to ``reader`` as in :func:`entries`."""
    query = await search_statement(session, where, reader, after, limit, below)
    if query is None:
        return []
    await custom_plans(session)
    return (await session.scalars(query)).all()


async def checkpoints_before(
    session: AsyncSession, before: int | None, limit: int
) -> Sequence[LedgerCheckpoint]:
    """Signed checkpoints, largest first, smaller than ``before`` (the primary key's order)."""
    query = select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(limit)
    if before is not None:
        query = query.where(LedgerCheckpoint.size < before)
    return (await session.scalars(query)).all()
