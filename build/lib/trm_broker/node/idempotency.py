"""``Idempotency-Key`` on the node's POST calls (draft-ietf-httpapi-idempotency-key-header).

A client that sends the header gets, for a retry with the same key, the first answer again:
its status and body, with ``Idempotent-Replayed: true``, and nothing is done a second time.
Keys are scoped per caller (the user, or the administrator's token, and the organisation
they act for) and route, and bound to the first
request's fingerprint: the same key with another body or path is refused (422, the draft's
§2.7). A key is kept ``TRM_NODE_IDEMPOTENCY_KEY_SECONDS`` (a day by default), then forgotten.

Only answers that did something are kept: a request refused before anything was stored
(a payload that does not fit, say) leaves the key free, so the fixed request may use it.
A send keeps its answer in the transaction that queues the message, so a crash between the
two cannot make a retry send a second message; a call that reaches the broker synchronously
(consents) reserves the key first, and a second request meanwhile is told to wait (409).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import and_, delete, or_
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node.store import IdempotentAnswer
from trm_broker.web.problems import MEDIA_TYPE, Problem

log = structlog.get_logger("trm_broker.node")

#: A key as the draft writes it (a structured-field string, in quotes) or bare: printable
#: ASCII, at most 255 characters. A UUID is a good key.
KEY_PATTERN = r'^(?:"[ !#-\[\]-~]{1,255}"|[!-~]{1,255})$'
#: A key reserved by a call that never finished (its process killed) is free again after this.
ABANDONED_AFTER = timedelta(minutes=2)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        max_length=257,
        description="Makes a retry safe: a request with the key of an earlier one is answered "
        "that earlier answer (with `Idempotent-Replayed: true`) and does nothing again; the "
        "same key with another request is refused (422). Kept for "
        "TRM_NODE_IDEMPOTENCY_KEY_SECONDS (a day by default). A UUID is a good key.",
    ),
]


class IdempotencyKeyReused(Problem):
    status, slug, title = (
        422,
        "idempotency-key-reused",
        "The Idempotency-Key was used for another request",
    )


class IdempotencyKeyInUse(Problem):
    status, slug, title = (
        409,
        "idempotency-key-in-use",
        "A request with this Idempotency-Key is still being answered",
    )


@dataclass(frozen=True)
class Keyed:
    """A request sent with an ``Idempotency-Key``: who sent it, to which route, and what."""

    caller: str
    route: str
    key: str
    fingerprint: str

    @property
    def primary_key(self) -> tuple[str, str, str]:
        return (self.caller, self.route, self.key)


@dataclass(frozen=True)
class Answer:
    """An answer as it was given: its status and JSON body."""

    status: int
    body: dict[str, Any]

    def response(
        self, *, replayed: bool = False, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        extra = dict(headers or {})
        if replayed:
            extra["idempotent-replayed"] = "true"
        return JSONResponse(
            self.body,
            status_code=self.status,
            media_type=MEDIA_TYPE if self.status >= 400 else "application/json",
            headers=extra or None,
        )


async def keyed(request: Request, key: str | None, route: str, caller: str) -> Keyed | None:
    """The request's key, scope (``caller``: who is calling, e.g. the user and their
    organisation) and fingerprint; None without the header."""
    if key is None:
        return None
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        body = raw.decode("utf-8", errors="replace")
    what = {
        "method": request.method,
        "path": request.url.path,
        "query": sorted(request.query_params.multi_items()),
        "body": body,
    }
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return Keyed(
        caller=hashlib.sha256(caller.encode()).hexdigest(),
        route=route,
        key=key,
        fingerprint=hashlib.sha256(text.encode()).hexdigest(),
    )


async def previous(session: AsyncSession, keyed: Keyed, now: datetime) -> Answer | None:
    """The answer a request with this key was given; None if there was none (or it expired,
    or its call was abandoned). A key used for another request: 422; one still being
    answered: 409."""
    row = await session.get(IdempotentAnswer, keyed.primary_key)
    if row is None or row.expires_at <= now:
        return None
    if row.fingerprint != keyed.fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for another request (another body, path or query) "
            "and is kept for TRM_NODE_IDEMPOTENCY_KEY_SECONDS: send that request again "
            "unchanged, or use a new key for a new request."
        )
    if row.status is None or row.body is None:
        if row.created_at > now - ABANDONED_AFTER:
            raise IdempotencyKeyInUse(
                "The first request with this Idempotency-Key is still being answered; "
                "retry in a few seconds."
            )
        return None
    body: dict[str, Any] = json.loads(row.body)
    return Answer(row.status, body)


async def remember(
    session: AsyncSession,
    keyed: Keyed,
    answer: Answer | None,
    now: datetime,
    lifetime: timedelta,
) -> None:
    """Keep ``answer`` for the key (None: reserve it), in the caller's transaction, in place
    of an expired or abandoned one. Two requests with one key racing here: the second
    commit fails on the primary key, and its caller answers from the first."""
    await session.execute(
        delete(IdempotentAnswer)
        .where(
            IdempotentAnswer.caller == keyed.caller,
            IdempotentAnswer.route == keyed.route,
            IdempotentAnswer.key == keyed.key,
            or_(
                IdempotentAnswer.expires_at <= now,
                and_(
                    IdempotentAnswer.status.is_(None),
                    IdempotentAnswer.created_at <= now - ABANDONED_AFTER,
                ),
            ),
        )
        .execution_options(synchronize_session=False)
    )
    session.add(
        IdempotentAnswer(
            caller=keyed.caller,
            route=keyed.route,
            key=keyed.key,
            fingerprint=keyed.fingerprint,
            status=answer.status if answer is not None else None,
            body=json.dumps(answer.body) if answer is not None else None,
            created_at=now,
            expires_at=now + lifetime,
        )
    )


async def settle(session: AsyncSession, keyed: Keyed, answer: Answer) -> None:
    """Replace the kept (or reserved) answer with the one finally given."""
    row = await session.get(IdempotentAnswer, keyed.primary_key)
    if row is not None and row.fingerprint == keyed.fingerprint:
        row.status, row.body = answer.status, json.dumps(answer.body)


async def release(session: AsyncSession, keyed: Keyed) -> None:
    """Free a reserved key whose call did nothing (refused, or the broker unreachable)."""
    await session.execute(
        delete(IdempotentAnswer)
        .where(
            IdempotentAnswer.caller == keyed.caller,
            IdempotentAnswer.route == keyed.route,
            IdempotentAnswer.key == keyed.key,
            IdempotentAnswer.status.is_(None),
        )
        .execution_options(synchronize_session=False)
    )


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    """Forget the keys whose lifetime has passed; how many."""
    result = await session.execute(
        delete(IdempotentAnswer)
        .where(IdempotentAnswer.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
