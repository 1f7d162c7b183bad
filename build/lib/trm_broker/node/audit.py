"""The node's audit log: every action a user of the local API takes, allowed or refused.

A row says who (the user, their organisation and role), what (the route: ``POST
/cases/{case_ref}/referral``), which case and message where there is one, when, and how it
ended (``ok``, ``refused`` or ``failed``, with the HTTP status). Never any content: no
payload, no header, no query text. Supervisors read their organisation's rows
(``GET /audit``).

It is kept by one ASGI middleware, :class:`AuditTrail`, around every route. The access
check (:mod:`trm_broker.node.access`) tells it who the caller is; the middleware writes the
row once the route has answered and before the answer leaves, so an audited read is never
seen before its row is committed: a read whose row cannot be written is answered 503
instead, with nothing handed out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.node.store import NodeBase
from trm_broker.store.models import UTCDateTime
from trm_broker.web.problems import Unavailable, send_problem

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

log = structlog.get_logger("trm_broker.node.audit")

#: Where the access check leaves the caller for the middleware, in the request's scope.
SCOPE_KEY = "trm.audit"
_CASE_REF = re.compile(CASE_REF_PATTERN)
_MESSAGE_ID = re.compile(r"^[0-9a-fA-F-]{36}$")
#: Request bodies above this are not read for a case reference (the limits refuse them).
_MAX_BODY_READ = 4 * 1024 * 1024


class AuditEntry(NodeBase):
    __tablename__ = "node_audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: The user's name; ``admin`` for the administrator's token (TRM_NODE_API_TOKEN);
    #: ``oidc:<subject>`` for a single sign-on.
    user_name: Mapped[str] = mapped_column(String(255))
    #: NULL for the administrator's token, which acts for every organisation.
    organisation: Mapped[str | None] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    #: The route: method and path template, never the path as sent.
    action: Mapped[str] = mapped_column(String(128))
    case_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    message_id: Mapped[str | None] = mapped_column(String(36))
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))


@dataclass
class Caller:
    """Who the access check found the caller to be (set before any refusal of theirs)."""

    user_name: str
    organisation: str | None
    role: str


@dataclass
class _Exchange:
    """What one request and its answer tell the audit log, gathered as they pass."""

    method: str
    path_params: dict[str, Any] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    start: Message | None = None
    answer: bytearray = field(default_factory=bytearray)


def note_caller(scope: Scope, caller: Caller) -> None:
    """Called by the access check: this request's actions are ``caller``'s."""
    scope[SCOPE_KEY] = caller


class AuditTrail:
    """The ASGI middleware that writes one audit row per request of a known caller."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope["method"])
        reads_body = exchange.method not in ("GET", "HEAD")

        async def receiving() -> Message:
            message = await receive()
            readable = reads_body and len(exchange.body) <= _MAX_BODY_READ
            if readable and message["type"] == "http.request":
                exchange.body += message.get("body", b"")
            return message

        async def sending(message: Message) -> None:
            caller = scope.get(SCOPE_KEY)
            if caller is None:  # not a user's request (the inbox, health): pass it on
                await send(message)
                return
            if message["type"] == "http.response.start":
                exchange.start = message
                return
            if message["type"] == "http.response.body":
                exchange.answer += message.get("body", b"")
                if message.get("more_body", False):
                    return
                await self._finish(scope, receive, send, caller, exchange)
                return
            await send(message)

        await self.app(scope, receiving, sending)

    async def _finish(
        self, scope: Scope, receive: Receive, send: Send, caller: Caller, exchange: _Exchange
    ) -> None:
        start = exchange.start
        if start is None:  # not ASGI (a body comes after its start): nothing to audit
            return
        status = int(start["status"])
        headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        route = getattr(scope.get("route"), "path", "unmatched")
        answer = _json(bytes(exchange.answer), headers.get("content-type", ""))
        request = _json(bytes(exchange.body), "application/json") if exchange.body else None
        params = scope.get("path_params", {})
        entry = AuditEntry(
            at=datetime.now(UTC),
            user_name=caller.user_name[:255],
            organisation=caller.organisation,
            role=caller.role,
            action=f"{exchange.method} {route}"[:128],
            case_ref=_case_ref(params, request, answer),
            message_id=_message_id(params, answer, exchange.method),
            outcome="ok" if status < 400 else "refused" if status < 500 else "failed",
            status=status,
            request_id=headers.get("x-request-id", "")[:64] or None,
        )
        state: NodeState = scope["app"].state.node
        try:
            await write(state.sessions, entry)
        except Exception as exc:
            log.error("audit_write_failed", error_type=type(exc).__name__, action=entry.action)
            if exchange.method in ("GET", "HEAD") and status < 400:
                # Nothing is handed out that the audit log does not show.
                problem = Unavailable("The audit log cannot be written; retry later.")
                await send_problem(problem, scope, receive, send)
                return
        await send(start)
        await send({"type": "http.response.body", "body": bytes(exchange.answer)})


async def write(sessions: async_sessionmaker[AsyncSession], entry: AuditEntry) -> None:
    async with sessions() as session:
        session.add(entry)
        await session.commit()


def _json(body: bytes, content_type: str) -> dict[str, Any] | None:
    if "json" not in content_type or not body or len(body) > _MAX_BODY_READ:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _case_ref(
    params: dict[str, Any], request: dict[str, Any] | None, answer: dict[str, Any] | None
) -> str | None:
    """The case acted on: in the path, the request (a message, a consent) or the answer (a
    consent withdrawn by id). Only a well-formed reference is kept: never free text."""
    consent = request.get("consent") if request else None
    for found in (
        params.get("case_ref"),
        request.get("case_ref") if request else None,
        consent.get("case_ref") if isinstance(consent, dict) else None,
        answer.get("case_ref") if answer else None,
    ):
        if isinstance(found, str) and len(found) <= 64 and _CASE_REF.match(found):
            return found
    return None


def _message_id(params: dict[str, Any], answer: dict[str, Any] | None, method: str) -> str | None:
    """The message acted on: in the path, or the one a send made (its answer)."""
    for found in (
        params.get("message_id"),
        answer.get("message_id") if answer and method != "GET" else None,
    ):
        if isinstance(found, str) and _MESSAGE_ID.match(found):
            return found
    return None


async def entries(
    session: AsyncSession,
    *,
    organisation: str | None,
    after: int | None,
    limit: int,
    case_ref: str | None = None,
) -> Sequence[AuditEntry]:
    """Audit rows in order; ``organisation`` ``None``: every row (the administrator)."""
    query = select(AuditEntry).order_by(AuditEntry.seq).limit(limit)
    if organisation is not None:
        query = query.where(AuditEntry.organisation == organisation)
    if after is not None:
        query = query.where(AuditEntry.seq > after)
    if case_ref is not None:
        query = query.where(AuditEntry.case_ref == case_ref)
    return (await session.scalars(query)).all()
