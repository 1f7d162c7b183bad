"""RFC 9457 problem details: one exception family, one handler, stable ``type`` URIs.

A ``detail`` tells the caller what to fix. It never echoes request content, which may
hold personal data.
"""

from __future__ import annotations

import math
import traceback
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

# Re-exported: the one helper, kept in the pure layer so the envelope verifier uses it too.
from trm_broker.domain.schema_errors import error_location as error_location

PROBLEM_BASE = "urn:trm-broker:problem:"
MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("trm_broker.problems")


class Problem(Exception):
    """Base of every error the API answers with a problem+json body."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    #: Response header fields the problem carries (e.g. ``Retry-After``).
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class InvalidRequest(Problem):
    status, slug, title = 400, "invalid-request", "The request is not valid"


class InvalidEnvelope(Problem):
    status, slug, title = 400, "invalid-envelope", "The envelope is not valid"


class BadSignature(Problem):
    status, slug, title = 401, "bad-signature", "The signature does not verify"


class KeyNotUsable(Problem):
    status, slug, title = 401, "key-not-usable", "The signing key is revoked or expired"


class ReplayedRequest(Problem):
    status, slug, title = 401, "replayed-request", "The request was already received"


class Unauthenticated(Problem):
    status, slug, title = 401, "unauthenticated", "Authentication required"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"


class UnknownSender(Problem):
    status, slug, title = 403, "unknown-sender", "The sender is not registered"


class KeyNotProven(Problem):
    """A registry key no statement by a pinned operator key backs (docs/security.md): a
    node does not believe it, whoever serves it."""

    status, slug, title = 403, "key-not-proven", "The key is not proven by the operator"


class ConsentMissing(Problem):
    """No consent, or one whose scope does not cover the message (docs/design.md §7)."""

    status, slug, title = 403, "consent-refused", "Consent does not cover this message"
    #: What the auditors' report keeps of the refusal (set by the broker; never in the body).
    refusal: object | None = None


class WorkflowRule(Problem):
    """The message breaks a rule of the case-transfer workflow (docs/design.md §6)."""

    status, slug, title = 409, "workflow-rule", "The case's workflow does not allow this"
    refusal: object | None = None


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflicts with the current state"


class InvalidAck(Problem):
    status, slug, title = 422, "invalid-ack", "The acknowledgement does not verify"


class TooLarge(Problem):
    status, slug, title = 413, "too-large", "The request body is too large"


class TooDeep(Problem):
    status, slug, title = 400, "too-deep", "The JSON is nested too deeply"


class RequestTimeout(Problem):
    status, slug, title = 408, "request-timeout", "The request was not received in time"


class RateLimited(Problem):
    """Too many requests from one participant (or, unsigned, one address): wait and retry."""

    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(detail, retry_after=seconds)
        self.headers = {"retry-after": str(seconds)}


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unavailable(Problem):
    status, slug, title = 503, "unavailable", "Temporarily unavailable"


class NotConfigured(Problem):
    status, slug, title = 503, "not-configured", "Not configured"


def _instance() -> str | None:
    """The occurrence, named by its request id (the one in the log lines and in the
    x-request-id header), never by the request's path: a path is caller-chosen text."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return f"urn:trm-broker:request:{request_id}" if request_id else None


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=_instance()),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


async def send_problem(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with ``problem`` from ASGI middleware, before any route runs (the rest of the
    request is not read, so the connection is not kept)."""
    log.info("request_refused", problem=problem.slug, status=problem.status)
    response = JSONResponse(
        problem.body(instance=_instance()),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers={**(problem.headers or {}), "connection": "close"},
    )
    await response(scope, receive, send)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Location and message only: pydantic's "input" member would echo what was sent.
    return [
        {
            "location": error_location(error),
            "error": error.get("msg", ""),
        }
        for error in exc.errors()
    ]


#: SQLSTATE classes that mean "the database is not there for us now" (PostgreSQL appendix
#: A): connection exception, insufficient resources, operator intervention, system error.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "58")

#: SQLite's primary result codes that mean the same (https://sqlite.org/rescode.html): busy
#: or locked by another writer, the file not openable, an I/O error, the disk full, out of
#: memory. ``SQLITE_ERROR`` (a missing table, a bad statement) is a bug, not an outage.
_UNAVAILABLE_SQLITE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"}
    | {"SQLITE_NOMEM", "SQLITE_PROTOCOL", "SQLITE_READONLY"}
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (down, restarting, cut off, out of
    connections), rather than that the request or the code is wrong.

    A refused or reset connection surfaces as the driver's bare ``OSError`` (SQLAlchemy
    wraps only the driver's own exception types); a server going away mid-query, or
    refusing new sessions while it starts or stops, as a ``DBAPIError`` with its SQLSTATE.
    SQLite reports a missing table or a syntax error as an ``OperationalError`` too: its
    result code tells those (bugs) from a busy or unreadable file.
    """
    if isinstance(exc, OSError | sa_exc.TimeoutError):  # TimeoutError: the pool is exhausted
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    sqlite_code = getattr(exc.orig, "sqlite_errorname", None)
    if isinstance(sqlite_code, str):
        primary = sqlite_code.split("_")[:2]  # SQLITE_IOERR_READ -> SQLITE_IOERR
        return "_".join(primary) in _UNAVAILABLE_SQLITE
    # No code to go by: the DBAPI's own classes say whether it is the database's operation
    # (PEP 249: "not necessarily under the control of the programmer") or the statement.
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def error_trace(exc: BaseException) -> list[str]:
    """Where ``exc`` was raised, as ``file:line in function`` frames (innermost last) with
    the type of every exception in its chain: the exception's text and the frames' source
    lines and variables are left out, as they may quote the data being handled."""
    frames: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames.append(f"{type(current).__module__}.{type(current).__qualname__}")
        frames.extend(
            f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(current.__traceback__)
        )
        current = current.__cause__ or current.__context__
    return frames


def _short_path(filename: str) -> str:
    """A source file named from its package (``trm_broker/api/deps.py``, ``sqlalchemy/...``),
    not by where it is installed."""
    for marker in ("site-packages/", "/trm_broker/", "/tests/"):
        _, found, tail = filename.rpartition(marker)
        if found:
            return tail if marker == "site-packages/" else marker.lstrip("/") + tail
    return filename.rsplit("/", 1)[-1]


def _database_code(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return str(code) if code else None


def log_internal_error(exc: BaseException) -> None:
    """A bug, logged at error level with its trace (and a database's error code), so it
    is told from an outage; never the exception's text, which may quote data."""
    log.error(
        "unexpected_error",
        error_type=type(exc).__name__,
        database_code=_database_code(exc),
        trace=error_trace(exc),
    )


def unavailable_problem(exc: BaseException) -> Unavailable:
    """The 503 for a database out of reach, logged as a warning (an outage, not a bug)."""
    log.warning("database_unavailable", error_type=type(exc).__name__)
    # Fixed text: the driver's message may quote the query or its parameters.
    return Unavailable("The database is unreachable; nothing was applied. Retry later.")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        log.info("request_refused", problem=exc.slug, status=exc.status)
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problem = InvalidRequest(
            "The request does not match the API's schema; fix the listed members.",
            errors=_validation_errors(exc),
        )
        log.info("request_refused", problem=problem.slug, status=problem.status)
        return problem_response(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        problem = Problem(str(exc.detail) if exc.status_code != 404 else "No such resource.")
        problem.status = exc.status_code
        problem.slug = {404: "not-found", 405: "method-not-allowed"}.get(
            exc.status_code, "http-error"
        )
        problem.title = {404: "Not found", 405: "Method not allowed"}.get(
            exc.status_code, "HTTP error"
        )
        return problem_response(problem, request)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # Raised outside the request's session (authentication, a session of its own, the
        # pool's connect): a database outage is a 503 the caller retries, never a 500.
        if database_unavailable(exc):
            return problem_response(unavailable_problem(exc), request)
        log_internal_error(exc)
        return problem_response(internal_error(), request)

    for error in (OSError, sa_exc.DBAPIError, sa_exc.TimeoutError):
        app.add_exception_handler(error, _database)


def internal_error() -> Problem:
    problem = Problem("The server failed; the request was not applied. Try again later.")
    problem.status, problem.slug, problem.title = 500, "internal-error", "Internal error"
    return problem


#: The OpenAPI description of every error answer (RFC 9457; extension members allowed).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. `detail` says what to fix; some problems carry "
    "extension members (`errors`, `kid`, `retry_after`, ...).",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": f"`{PROBLEM_BASE}<slug>`"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
_PROBLEM_RESPONSE = {
    "description": "An error, as RFC 9457 problem details: 400 invalid request, 401 not "
    "authenticated, 403 not allowed, 404 not found, 408 too slow, 409 conflict, 413 too "
    "large, 415 unsupported media type, 422 invalid acknowledgement, 429 rate limited "
    "(with Retry-After), 503 unavailable.",
    "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"


def document(app: FastAPI) -> None:
    """Describe in ``app``'s OpenAPI the errors it really answers: every operation's
    ``default`` response is a problem, and FastAPI's own 422 (a shape this API never
    answers: its validation errors are 400 problems) is removed."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                unprocessable = responses.get("422", {})
                if _FASTAPI_VALIDATION in str(unprocessable):
                    del responses["422"]
                responses.setdefault("default", _PROBLEM_RESPONSE)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if _FASTAPI_VALIDATION not in str(schema.get("paths")):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
