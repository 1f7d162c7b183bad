"""Jobs that one process at a time runs, among a broker's replicas and workers sharing one
PostgreSQL database: each takes a transaction-scoped advisory lock first, and a process
that finds it taken skips its round (another one is doing the work). SQLite serves one
broker process, whose jobs each run in one loop."""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


class Job(IntEnum):
    """The advisory lock key of each job (four ASCII letters)."""

    SEQUENCER = 0x74726D6C  # "trml": integrating the ledger
    RETENTION = 0x74726D72  # "trmr": purging payloads past retention
    ALERTS = 0x74726D61  # "trma": raising and closing the workflow's alerts


async def try_turn(session: AsyncSession, job: Job) -> bool:
    """Take ``job``'s lock until the session's transaction ends, or learn that another
    process holds it (False: skip this round)."""
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return True
    return bool(await session.scalar(text(f"SELECT pg_try_advisory_xact_lock({int(job)})")))
