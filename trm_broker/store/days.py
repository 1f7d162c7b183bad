"""The UTC day of a stored time, as ``YYYY-MM-DD``, computed by the database on either
backend, so that counts by day (or week) are grouped there and not row by row in Python."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class utc_day(FunctionElement[str]):
    """``utc_day(column)``: the column's day in UTC, whatever the session's time zone."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # UTCDateTime stores UTC on SQLite ("YYYY-MM-DD HH:MM:SS…"): its date is the UTC day.
    return f"date({compiler.process(element.clauses, **kw)})"
