"""Query plans of a SQLAlchemy statement, and whether they read a table whole.

PostgreSQL: ``EXPLAIN (FORMAT JSON)``, a sequential scan of the table is a full scan.
SQLite: ``EXPLAIN QUERY PLAN``, a ``SCAN <table>`` that names no index is one.
Used by bench/console.py and tests/store/test_ledger_search_plans.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Explain(Executable, ClauseElement):
    """``EXPLAIN`` of a statement, with its parameters bound as the statement's own."""

    inherit_cache = False

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain_postgresql(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.statement, **kw)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def plan(session: AsyncSession, statement: ClauseElement) -> list[str]:
    """One line per plan step: PostgreSQL's node types (with their relation and index),
    SQLite's details."""
    rows = (await session.execute(Explain(statement))).all()
    if session.get_bind().dialect.name == "postgresql":
        raw = rows[0][0]
        tree = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        return [
            " ".join(
                str(n[key]) for key in ("Node Type", "Relation Name", "Index Name") if key in n
            )
            for n in _nodes(tree)
        ]
    return [str(row[-1]) for row in rows]


def full_scans(lines: list[str], table: str) -> list[str]:
    """The steps of a plan that read ``table`` whole."""

    def whole(line: str) -> bool:
        words = line.split()
        return line == f"Seq Scan {table}" or (
            words[:2] == ["SCAN", table] and "USING" not in words
        )

    return [line for line in lines if whole(line)]
