"""structlog JSON logging. Events carry ids and codes only: never payloads, names or free text."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

import structlog

#: Ids bound while a request is handled, for its final ``request`` line: the middleware logs
#: it outside the handler's context (Starlette runs the handler in a task of its own).
_request_ids: ContextVar[dict[str, str] | None] = ContextVar("trm_request_ids", default=None)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or ``stream``) for our events and uvicorn's, with bound context."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before this call (a library importing ours, a
        # test) would otherwise keep structlog's default, printing plain text to stdout.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    # A failing handler would otherwise print a traceback with the exception being handled,
    # whose text may quote personal data, to stderr.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines would repeat paths and client addresses; our middleware logs requests.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs full URLs at INFO; keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Readiness checks read the schema revision through Alembic, which logs each time.
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def request_context(request_id: str) -> Iterator[dict[str, str]]:
    """Bind ``request_id`` to every line logged while a request is handled; yield the ids
    :func:`bind_ids` adds meanwhile. On leaving, the caller's own context comes back (an
    in-process client, such as a dispatcher pushing to a node in a test, keeps its ids)."""
    outer = structlog.contextvars.get_contextvars()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    ids: dict[str, str] = {}
    token = _request_ids.set(ids)
    try:
        yield ids
    finally:
        _request_ids.reset(token)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**outer)


def bind_ids(**ids: str) -> None:
    """Bind ids (``message_id``) to the following lines of this request or task, and to the
    request's final ``request`` line. Ids only: never names, payloads or free text."""
    structlog.contextvars.bind_contextvars(**ids)
    found = _request_ids.get()
    if found is not None:
        found.update(ids)
