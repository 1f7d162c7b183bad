"""Ledger figures for `make bench` (issue 21): the sequencer's integration rate, inclusion
and consistency proof times as the ledger grows, and `trm-broker ledger verify`'s rate
against raw SHA-256 of the same bytes, measured in the same run.

Proof times, on PostgreSQL and SQLite: the Merkle node table is filled by the database
itself (``generate_series`` in PostgreSQL, a recursive query in SQLite; synthetic hashes,
since a proof's cost is its reads of O(log n) nodes by primary key and the hashing of them,
not the hashes' values), so 10^7 entries take a minute or two, not an hour. Real proofs
over a real tree are checked by bench/ledger.py and the test suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bench import servers
from tests.support import broker_settings, running_broker
from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger import merkle
from trm_broker.store import ledger
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.migrate import upgrade_async
from trm_broker.store.models import LedgerEntry

SAMPLES = 25
WARMUP = 5  # proofs first asked at each size, not counted: a serving broker is warm
_FILL = text(
    "INSERT INTO ledger_nodes (level, idx, hash) "
    "SELECT l, i, sha256(int8send((l::bigint << 48) | i)) "
    "FROM generate_series(0, :levels) AS l, "
    "LATERAL generate_series(:first >> l, (:size >> l) - 1) AS i "
    "WHERE (:size >> l) > (:first >> l)"
)
_FILL_SQLITE = text(
    "WITH RECURSIVE i(n) AS (SELECT :low UNION ALL SELECT n + 1 FROM i WHERE n + 1 < :high) "
    "INSERT INTO ledger_nodes (level, idx, hash) SELECT :level, n, randomblob(32) FROM i"
)


async def _fill(session: AsyncSession, first: int, size: int) -> None:
    """The nodes of a tree grown from ``first`` to ``size`` leaves."""
    if session.get_bind().dialect.name == "postgresql":
        params = {"levels": size.bit_length(), "first": first, "size": size}
        await session.execute(_FILL, params)
        await session.commit()
        await session.execute(text("ANALYZE ledger_nodes"))
    else:
        for level in range(size.bit_length()):
            low, high = first >> level, size >> level
            if high > low:
                await session.execute(_FILL_SQLITE, {"low": low, "high": high, "level": level})
        await session.commit()
        await session.execute(text("ANALYZE"))
    await session.commit()


async def integration_rate(url: str, workdir: Path, entries: int) -> float:
    """Entries per second the sequencer integrates (hashes, stores its nodes, signs)."""
    async with running_broker(broker_settings(url, workdir), run_sequencer=False) as b:
        state = b.app.state.broker
        async with state.sessions() as session:
            for number in range(entries):
                ledger.append(
                    session,
                    LedgerEvent(EventType.ALERT_RAISED, datetime.now(UTC), facts={"n": number}),
                )
            await session.commit()
        sequencer = LedgerSequencer(state.sessions, state.note_signer(), batch_size=5000)
        started = time.perf_counter()
        while await sequencer.run_once():
            pass
        return entries / (time.perf_counter() - started)


async def proof_times(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Median inclusion and consistency proof time (ms) at each size, over random indices."""
    rng = random.Random(21)  # noqa: S311 - which entries to prove, not cryptography
    engine = create_engine(url)
    backend = engine.dialect.name
    results = []
    try:
        async with session_factory(engine)() as session:
            first = 0
            for size in sizes:
                started = time.perf_counter()
                await _fill(session, first, size)
                load = time.perf_counter() - started
                first = size
                inclusion, consistency = [], []
                for _ in range(WARMUP):
                    index, older = rng.randrange(size), rng.randrange(1, size)
                    await ledger.nodes(session, merkle.inclusion_nodes(index, size))
                    await ledger.nodes(session, merkle.consistency_nodes(older, size))
                for _ in range(SAMPLES):
                    index = rng.randrange(size)
                    started = time.perf_counter()
                    nodes = await ledger.nodes(session, merkle.inclusion_nodes(index, size))
                    merkle.inclusion_proof(index, size, nodes)
                    inclusion.append(1000 * (time.perf_counter() - started))
                    older = rng.randrange(1, size)
                    started = time.perf_counter()
                    nodes = await ledger.nodes(session, merkle.consistency_nodes(older, size))
                    merkle.consistency_proof(older, size, nodes)
                    consistency.append(1000 * (time.perf_counter() - started))
                results.append(
                    {
                        "backend": backend,
                        "entries": size,
                        "load_seconds": round(load, 1),
                        "inclusion_ms": round(statistics.median(inclusion), 3),
                        "consistency_ms": round(statistics.median(consistency), 3),
                    }
                )
                print(
                    f"  proofs ({backend}) at {size:>10,} entries: inclusion "
                    f"{results[-1]['inclusion_ms']:.2f} ms, consistency "
                    f"{results[-1]['consistency_ms']:.2f} ms (nodes loaded in {load:.0f} s)"
                )
    finally:
        await engine.dispose()
    return results


async def raw_sha256_rate(url: str) -> tuple[int, float]:
    """Entries per second that SHA-256 alone hashes, over the ledger's own entry bytes."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            bodies = (await connection.execute(select(LedgerEntry.body))).scalars().all()
    finally:
        await engine.dispose()
    started = time.perf_counter()
    for body in bodies:
        hashlib.sha256(b"\x00" + body).digest()
    return len(bodies), len(bodies) / (time.perf_counter() - started)


def verify_rate(broker_url: str, verifier_key: str, auditor_keys: Path) -> dict[str, float]:
    """`trm-broker ledger verify` against the broker: entries per second, peak RSS (MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "trm_broker.cli",
            "ledger",
            "verify",
            "--url",
            broker_url,
            "--broker-key",
            verifier_key,
            "--key",
            str(auditor_keys),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRM_")},
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    if status != 0 or "ledger verified" not in out:
        raise RuntimeError(f"ledger verify failed: {out[-500:]} {err[-1000:]}")
    size = int(out.split(" entries,")[0].rsplit(" ", 1)[1])
    return {
        "entries": size,
        "seconds": round(seconds, 2),
        "rate": size / seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def ledger_figures(sizes: list[int], integrate: int) -> dict[str, Any]:
    """Integration rate and proof times, each on a fresh PostgreSQL database; proof times
    on a fresh SQLite file too."""
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        with servers.database("postgresql", Path(tmp)) as url:
            if url is None:
                raise RuntimeError("no url")
            asyncio.run(upgrade_async(url))
            rate = asyncio.run(integration_rate(url, Path(tmp), integrate))
        print(f"  ledger integration: {rate:,.0f} entries/s ({integrate:,} entries)")
        with servers.database("postgresql", Path(tmp)) as url:
            if url is None:
                raise RuntimeError("no url")
            asyncio.run(upgrade_async(url))
            proofs = asyncio.run(proof_times(url, sizes))
        lite = f"sqlite+aiosqlite:///{Path(tmp) / 'proofs.db'}"
        asyncio.run(upgrade_async(lite))
        proofs += asyncio.run(proof_times(lite, sizes))
    return {"integration_rate": rate, "proofs": proofs}
