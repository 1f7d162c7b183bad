"""The auditors' console on a big ledger (issue 20): bulk-loads synthetic entries (10^6 by
default) with their Merkle nodes and a quarter as many messages into PostgreSQL and SQLite,
then times the queries each console page runs (the very store and report functions the
pages call), against a primary-key lookup measured in the same run, and checks the plans
of the ledger searches for full scans.

    python -m bench.console [--quick] [--entries N] [--backend postgresql|sqlite|both]

Targets (at 10^6 entries): every page's queries in under 100 ms (median of 5 runs), and no
ledger search whose plan reads the ledger table whole. ``--quick`` (10^4 entries) runs in
seconds and checks the plans only. PostgreSQL: TRM_BENCH_POSTGRES_URL (default the test
server's) names the server; a database ``trm_bench_console`` is made there and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.plans import full_scans, plan
from trm_broker.api.audit import service as audit
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import MessageType
from trm_broker.domain.participants import ParticipantKind
from trm_broker.ledger import merkle
from trm_broker.logs import configure_logging
from trm_broker.store import cases
from trm_broker.store import ledger as store
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.migrate import upgrade_async
from trm_broker.store.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerNode,
    Message,
    Participant,
)

TARGET_MS = 100.0
RUNS = 5
PAGE = 50
#: The ledger's span: entries spread evenly over these days before the bench's "now".
DAYS = 84
#: Entries per case: the steps of one case transfer, more or less.
PER_CASE = 8
COUNTRIES = ["AT", "NG", "FR", "DE", "IT", "ES", "RO", "BG", "AL", "VN"]
#: A country no entry has: the search must not read the ledger to learn it.
RARE = "ZZ"
BATCH = 10_000
POSTGRES = os.environ.get(
    "TRM_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
BENCH_DB = "trm_bench_console"
_TYPES = [
    EventType.MESSAGE_ACCEPTED,
    EventType.MESSAGE_ACKNOWLEDGED,
    EventType.CONSENT_REGISTERED,
    EventType.MESSAGE_ACCEPTED,
    EventType.MESSAGE_ACKNOWLEDGED,
    EventType.ALERT_RAISED,
    EventType.MESSAGE_ACCEPTED,
    EventType.ALERT_CLOSED,
]
_MESSAGE_TYPES = [t for t in MessageType]


@dataclass(frozen=True)
class World:
    size: int
    now: datetime
    start: datetime

    def at(self, i: int) -> datetime:
        return self.start + timedelta(days=DAYS) * (i / self.size)

    @staticmethod
    def case(i: int) -> str:
        return f"AT-2026-{i // PER_CASE:07d}"

    @staticmethod
    def pair(i: int) -> tuple[str, str]:
        case = i // PER_CASE
        origin = COUNTRIES[case % len(COUNTRIES)]
        destination = COUNTRIES[(case // len(COUNTRIES) + 1 + case) % len(COUNTRIES)]
        return origin, destination if destination != origin else COUNTRIES[0]

    @staticmethod
    def party(country: str) -> str:
        return f"{country.lower()}.focal-point"


def _entries(world: World, first: int, last: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(first, last):
        origin, destination = world.pair(i)
        at = world.at(i)
        kind = _TYPES[i % len(_TYPES)]
        parties = [world.party(origin), world.party(destination)]
        body = {
            "type": kind.value,
            "at": at.isoformat().replace("+00:00", "Z"),
            "case_ref": world.case(i),
            "parties": parties,
            "countries": [origin, destination],
        }
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        rows.append(
            {
                "idx": i,
                "body": data,
                "leaf_hash": merkle.leaf_hash(data),
                "type": kind,
                "at": at,
                "case_ref": world.case(i),
                "party1": parties[0],
                "party2": parties[1],
                "party3": None,
                "country1": origin,
                "country2": destination,
            }
        )
    return rows


def _messages(world: World, first: int, last: int) -> list[dict[str, Any]]:
    """A message for every entry recording an acceptance."""
    rows = []
    for i in range(first, last):
        if _TYPES[i % len(_TYPES)] is not EventType.MESSAGE_ACCEPTED:
            continue
        origin, destination = world.pair(i)
        at = world.at(i)
        rows.append(
            {
                "id": f"m-{i:012d}",
                "type": _MESSAGE_TYPES[(i // len(_TYPES)) % len(_MESSAGE_TYPES)],
                "case_ref": world.case(i),
                "sender_id": world.party(origin),
                "recipient_id": world.party(destination),
                "sender_kid": "bench",
                "created_at": at,
                "accepted_at": at,
                "envelope_digest": "sha-256:bench",
                "receipt": "bench",
                "ledger_seq": i + 1,
            }
        )
    return rows


async def load(session: AsyncSession, world: World) -> float:
    """Participants, entries with their nodes, messages and a checkpoint: seconds taken."""
    started = time.perf_counter()
    await session.execute(
        insert(Participant),
        [
            {
                "id": world.party(c),
                "kind": ParticipantKind.FOCAL_POINT,
                "country": c,
                "created_at": world.start,
            }
            for c in COUNTRIES
        ],
    )
    compact = merkle.CompactRange()
    for first in range(0, world.size, BATCH):
        last = min(first + BATCH, world.size)
        entries = _entries(world, first, last)
        await session.execute(insert(LedgerEntry), entries)
        nodes = [
            {"level": level, "idx": idx, "hash": digest}
            for entry in entries
            for (level, idx), digest in compact.append(entry["leaf_hash"])
        ]
        await session.execute(insert(LedgerNode), nodes)
        messages = _messages(world, first, last)
        if messages:
            await session.execute(insert(Message), messages)
        await session.commit()
    note = f"bench\n{world.size}\n{compact.root().hex()}\n"
    session.add(
        LedgerCheckpoint(size=world.size, root=compact.root(), note=note, issued_at=world.now)
    )
    await session.commit()
    await session.execute(text("ANALYZE"))  # both backends: the planner's statistics
    await session.commit()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Measured:
    name: str
    median_ms: float
    full_scans: list[str]


async def _timed(session: AsyncSession, work: Callable[[], Awaitable[object]]) -> float:
    await work()  # warm: the first run pays for the cache, the others are the page's
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await work()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


async def _ledger_page(session: AsyncSession, where: store.Search, after: int) -> int:
    """What /console/ledger asks: the checkpoint, a page of entries, their proofs' nodes."""
    latest = await store.latest_checkpoint(session)
    if latest is None:
        raise RuntimeError("the bench's checkpoint is missing")
    rows = await store.search(session, where, None, after, PAGE, latest.size)
    wanted = [
        n for r in rows if r.idx is not None for n in merkle.inclusion_nodes(r.idx, latest.size)
    ]
    await store.nodes(session, wanted)
    return len(rows)


async def measure(session: AsyncSession, world: World) -> tuple[float, list[Measured]]:
    """The baseline (ms) and each page's queries."""
    middle = world.size // 2
    by_key = select(LedgerEntry).where(LedgerEntry.seq == middle + 1)
    baseline = await _timed(session, lambda: session.scalars(by_key))
    day = (world.start + timedelta(days=DAYS // 2)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    origin, _ = world.pair(middle)
    searches: dict[str, tuple[store.Search, int]] = {
        "ledger: first page": (store.Search(), -1),
        "ledger: by case": (store.Search(case_ref=world.case(middle)), -1),
        "ledger: by participant": (store.Search(participant=world.party(origin)), -1),
        "ledger: by country": (store.Search(country=origin), -1),
        "ledger: by a country no entry has": (store.Search(country=RARE), -1),
        "ledger: by event type": (store.Search(type=EventType.ALERT_CLOSED), -1),
        "ledger: by a day": (store.Search(since=day, until=day + timedelta(days=1)), -1),
        "ledger: type and a day": (
            store.Search(type=EventType.ALERT_RAISED, since=day, until=day + timedelta(days=1)),
            -1,
        ),
        "ledger: deep page (last)": (store.Search(), world.size - PAGE - 1),
        "ledger: deep page by country": (store.Search(country=origin), middle),
    }
    found = []
    for name, (where, after) in searches.items():
        ms = await _timed(session, lambda w=where, a=after: _ledger_page(session, w, a))  # type: ignore[misc]
        query = await store.search_statement(session, where, None, after, PAGE, world.size)
        lines = [] if query is None else await plan(session, query)
        found.append(Measured(name, ms, full_scans(lines, "ledger_entries")))

    case = world.case(middle)

    async def timeline() -> None:
        await cases.get(session, case)
        await cases.timeline_of(session, case)
        await _ledger_page(session, store.Search(case_ref=case), -1)

    found.append(Measured("case timeline", await _timed(session, timeline), []))
    until = world.now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    since = until - timedelta(days=30)

    async def overview() -> None:
        await audit.report(session, since, until, 11)
        await store.latest_checkpoint(session)

    found.append(Measured("overview (30 days)", await _timed(session, overview), []))
    found.append(
        Measured(
            "checkpoints",
            await _timed(session, lambda: store.checkpoints_before(session, None, PAGE)),
            [],
        )
    )
    return baseline, found


async def _postgres_url(make: bool) -> str:
    admin = POSTGRES.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        if make:
            await connection.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await connection.close()
    return POSTGRES.rsplit("/", 1)[0] + f"/{BENCH_DB}"


async def run(url: str, world: World) -> tuple[float, float, list[Measured]]:
    await upgrade_async(url)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            seconds = await load(session, world)
        if engine.dialect.name == "postgresql":
            # What autovacuum does after a bulk load on a live server: clear the row versions
            # the load's counter updates left behind (PostgreSQL runs VACUUM outside a
            # transaction).
            async with engine.connect() as connection:
                vacuuming = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await vacuuming.execute(text("VACUUM ANALYZE"))
        async with session_factory(engine)() as session:
            baseline, found = await measure(session, world)
    finally:
        await engine.dispose()
    return seconds, baseline, found


def report(
    backend: str, size: int, seconds: float, baseline: float, found: list[Measured], timed: bool
) -> bool:
    print(f"\n{backend}: {size:,} ledger entries loaded in {seconds:.0f} s")
    print(f"  baseline (primary-key lookup): {baseline:.2f} ms")
    ok = True
    for m in found:
        slow = timed and m.median_ms >= TARGET_MS
        scanned = bool(m.full_scans)
        ok = ok and not slow and not scanned
        marks = (" SLOW" if slow else "") + (f" FULL SCAN {m.full_scans}" if scanned else "")
        print(f"  {m.name:<36} {m.median_ms:8.2f} ms  x{m.median_ms / baseline:7.1f}{marks}")
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="10^4 entries; plans checked, not times"
    )
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    args = parser.parse_args()
    size = args.entries or (10_000 if args.quick else 1_000_000)
    configure_logging("warning")
    now = datetime.now(UTC)
    world = World(size, now, now - timedelta(days=DAYS))
    timed = not args.quick
    ok = True
    if args.backend in ("postgresql", "both"):
        url = await _postgres_url(make=True)
        try:
            seconds, baseline, found = await run(url, world)
        finally:
            await _postgres_url(make=False)
        ok = report("PostgreSQL", size, seconds, baseline, found, timed) and ok
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'console.db'}"
            seconds, baseline, found = await run(url, world)
        ok = report("SQLite", size, seconds, baseline, found, timed) and ok
    target = f"every page's queries under {TARGET_MS:.0f} ms, " if timed else ""
    print(f"\ntargets ({target}no full scan of the ledger): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
