"""The accept path's statements sent to PostgreSQL through asyncpg directly (issue 21).

A statement sent through an SQLAlchemy session costs the broker about 190 µs of CPU (the
ORM's and the engine's execution paths, parameter and result handling) where asyncpg alone
needs about 50; an accepted message takes seven. A :class:`Query` is an SQLAlchemy Core
statement built once. It is compiled once per set of parameter names for the session's
dialect and, on PostgreSQL, sent on the session's own connection, inside the session's own
transaction (begun first if it has not been), with each column type's own parameter and
result processing (UTC datetimes, stored enums). An error becomes the SQLAlchemy exception
the session would have raised (an ``IntegrityError`` is still one; a lost connection is
invalidated), so callers handle it as before. Elsewhere (SQLite, another driver, a statement
whose columns need Python-side defaults) the statement goes through the session unchanged.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement, Executable
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor, ...]
    defaults: Mapping[str, Any]
    row: Callable[..., Any] | None  # a named tuple of the result's columns
    results: tuple[Processor, ...]


class Query:
    """A Core statement, sent directly on PostgreSQL (see the module's docstring)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[Any, tuple[str, ...]], _Compiled | None] = {}

    async def rows(self, session: AsyncSession, params: Mapping[str, Any]) -> Sequence[Any]:
        """Every row, each with its columns by name and by position."""
        direct = await _direct(session)
        if direct is None:
            return (await session.execute(self.statement, params)).all()
        connection, adapted = direct
        compiled = self._compile(connection, params)
        if compiled is None:
            return (await session.execute(self.statement, params)).all()
        records = await _send(connection, adapted, compiled, params, rows=True)
        if compiled.row is None:
            return []
        return [_row(compiled.row, compiled.results, record) for record in records]

    async def first(self, session: AsyncSession, params: Mapping[str, Any]) -> Any | None:
        """The first row, or ``None``."""
        found = await self.rows(session, params)
        return found[0] if found else None

    async def one(self, session: AsyncSession, params: Mapping[str, Any]) -> Any:
        """The one row (an error if there is none)."""
        found = await self.rows(session, params)
        if len(found) != 1:
            raise LookupError(f"expected one row, got {len(found)}")
        return found[0]

    async def run(self, session: AsyncSession, params: Mapping[str, Any]) -> int:
        """Run a statement without rows; the number of rows it changed."""
        direct = await _direct(session)
        compiled = None if direct is None else self._compile(direct[0], params)
        if direct is None or compiled is None:
            result = await session.execute(self.statement, params)
            return int(getattr(result, "rowcount", 0) or 0)
        connection, adapted = direct
        status = await _send(connection, adapted, compiled, params, rows=False)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    def _compile(self, connection: AsyncConnection, params: Mapping[str, Any]) -> _Compiled | None:
        key = (connection.dialect, tuple(params))
        if key in self._compiled:
            return self._compiled[key]
        found = self._compiled[key] = _compiled(self.statement, connection, tuple(params))
        return found


def _compiled(
    statement: Executable, connection: AsyncConnection, keys: tuple[str, ...]
) -> _Compiled | None:
    dialect = connection.dialect
    if not isinstance(statement, ClauseElement):
        return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.insert_prefetch or compiled.update_prefetch or not compiled.positional:
        return None  # Python-side defaults: the engine's execution computes them
    if "__[POSTCOMPILE_" in compiled.string:
        return None  # an expanding IN list or a literal rendered at execution: the engine's
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    processors = tuple(_type(binds[name], dialect).bind_processor(dialect) for name in names)
    defaults = {name: binds[name].value for name in names if not binds[name].required}
    columns = list(getattr(statement, "exported_columns", ()) or ())
    row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None
    results = tuple(_type(c, dialect).result_processor(dialect, None) for c in columns)
    return _Compiled(compiled.string, names, processors, defaults, row, results)


def _type(element: Any, dialect: Any) -> Any:
    """The element's type as the dialect handles it (a TypeDecorator with its impl)."""
    return element.type.dialect_impl(dialect)


def _row(row: Callable[..., Any], results: tuple[Processor, ...], record: Any) -> Any:
    values = zip(record, results, strict=True)
    return row(*(value if p is None else p(value) for value, p in values))


def _arguments(compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
    """The values in order, each processed by its column's type: a value the type refuses
    is a ``StatementError``, as the session raises it."""
    arguments = []
    try:
        for name, processor in zip(compiled.names, compiled.processors, strict=True):
            value = params[name] if name in params else compiled.defaults[name]
            arguments.append(value if processor is None else processor(value))
    except Exception as error:
        raise StatementError(str(error), compiled.sql, dict(params), error) from error
    return arguments


async def _direct(session: AsyncSession) -> tuple[AsyncConnection, Any] | None:
    """The session's connection and its asyncpg adapter, its transaction begun; ``None``
    where the statement must go through the session. Kept for the session's transaction:
    a new one (after a commit or a rollback) may be on another connection."""
    transaction = session.sync_session.get_transaction()
    kept = session.info.get(_KEPT)
    if kept is not None and transaction is not None and kept[0] is transaction:
        if kept[1] is None:
            return None
        if transaction.is_active and kept[2]._transaction is not None:
            return kept[1], kept[2]
    connection = await session.connection()
    direct: tuple[AsyncConnection, Any] | None = None
    if connection.dialect.driver == "asyncpg":
        adapted: Any = (await connection.get_raw_connection()).dbapi_connection
        if getattr(adapted, "_transaction", _MISSING) is not _MISSING and (
            getattr(adapted, "isolation_level", None) != "autocommit"
        ):
            if adapted._transaction is None:
                await adapted._start_transaction()
            direct = (connection, adapted)
    session.info[_KEPT] = (session.sync_session.get_transaction(), *(direct or (None, None)))
    return direct


_KEPT = "trm_direct_connection"
_MISSING = object()


def _arguments_seen(
    connection: AsyncConnection, compiled: _Compiled, params: Mapping[str, Any]
) -> list[Any]:
    """The statement's arguments, announced first to the engine's ``before_cursor_execute``
    listeners (without a cursor or context), so what counts or logs statements sees these
    as it sees the session's."""
    arguments = _arguments(compiled, params)
    sync = connection.sync_connection
    if sync is not None and sync.dispatch.before_cursor_execute:
        sync.dispatch.before_cursor_execute(sync, None, compiled.sql, arguments, None, False)
    return arguments


async def _send(
    connection: AsyncConnection,
    adapted: Any,
    compiled: _Compiled,
    params: Mapping[str, Any],
    *,
    rows: bool,
) -> Any:
    """Send the statement: its rows (``rows``), or asyncpg's status line ("UPDATE 1")."""
    arguments = _arguments_seen(connection, compiled, params)
    driver = adapted.driver_connection
    try:
        async with adapted._execute_mutex:
            if rows:
                return list(await driver.fetch(compiled.sql, *arguments))
            return str(await driver.execute(compiled.sql, *arguments))
    except Exception as error:
        raise await _translated(connection, adapted, compiled, arguments, error) from error


async def _translated(
    connection: AsyncConnection,
    adapted: Any,
    compiled: _Compiled,
    arguments: list[Any],
    error: Exception,
) -> Exception:
    """The exception the session would have raised for ``error``."""
    dialect = connection.dialect
    base = dialect.loaded_dbapi.Error
    try:
        adapted._handle_exception(error)
    except base as translated:
        lost = dialect.is_disconnect(translated, adapted, None)
        if lost:
            await connection.invalidate(translated)
        return DBAPIError.instance(
            compiled.sql, arguments, translated, base, connection_invalidated=lost
        )
    except Exception as other:  # not a database error: as raised
        return other
    return error
