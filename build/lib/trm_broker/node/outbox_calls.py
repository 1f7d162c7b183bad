"""The send calls over the outbox: check and compose, store before the broker is called,
answer ``202 queued``, or, with ``Prefer: wait=<seconds>`` (RFC 7240 §4.3), wait that long
for the background sender's outcome and answer it as a synchronous send would (201 with the
receipt, or the broker's refusal). ``Idempotency-Key`` makes a retry answer the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.domain.messages import MessageType
from trm_broker.node import idempotency, outbox, return_plan, withdrawals
from trm_broker.node.access import Principal
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.idempotency import Answer, Keyed
from trm_broker.node.keyring import Keyring
from trm_broker.node.outbox_sender import OutboxSender
from trm_broker.node.return_plan import PlanOn
from trm_broker.node.schemas import (
    QueuedOut,
    QueuedPlanOut,
    ReturnPreparationSentOut,
    SendRequest,
)
from trm_broker.node.sending import compose_message, refused
from trm_broker.node.store import OutboxState
from trm_broker.settings import Settings

log = structlog.get_logger("trm_broker.node")

Prefer = Annotated[
    str | None,
    Header(
        max_length=1024,
        description="`wait=<seconds>` (RFC 7240): wait that long (at most "
        "TRM_NODE_PREFER_WAIT_MAX_SECONDS, 30 by default) for the broker's receipt or refusal "
        "and answer it (201, or the refusal); without it, or if neither came in time, the "
        "answer is 202 queued.",
    ),
]

_WAIT = re.compile(r'^\s*wait\s*=\s*"?(\d{1,9})"?\s*$', re.IGNORECASE)
#: How often a waiting call looks at the outbox even without a signal (a sender elsewhere).
_LOOK_EVERY = 0.5


def wait_asked(prefer: str | None, limit: float) -> float:
    """The seconds a ``Prefer`` header asks to wait (its first ``wait``), cut to ``limit``;
    0 without one. Preferences the node does not know are ignored (RFC 7240 §2)."""
    for preference in (prefer or "").split(","):
        found = _WAIT.match(preference.split(";", 1)[0])
        if found:
            return min(float(found.group(1)), limit)
    return 0.0


@dataclass(frozen=True)
class Sending:
    """What the send calls need: the node's settings, database, keys, broker and sender."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    keys: Keyring
    broker: BrokerClient
    sender: OutboxSender

    @property
    def key_lifetime(self) -> timedelta:
        return timedelta(seconds=self.settings.node_idempotency_key_seconds)


async def send(
    sending: Sending,
    session: AsyncSession,
    principal: Principal,
    message: SendRequest,
    request: Request,
    *,
    route: str,
    key: str | None,
    prefer: str | None,
    plan: bool = False,
) -> JSONResponse:
    """Queue ``message`` (a return plan: and its second message), signed with the caller's
    organisation's keys alone, and answer as the headers ask."""
    keyed = await idempotency.keyed(request, key, route, _caller(principal))
    if keyed is not None:
        earlier = await idempotency.previous(session, keyed, datetime.now(UTC))
        if earlier is not None:
            return earlier.response(replayed=True)
    keys = principal.keyring(sending.keys)
    first = await compose_message(keys, sending.broker, message)
    on, second = (
        await return_plan.plan_on(keys, sending.broker, message, first) if plan else (None, None)
    )
    now = datetime.now(UTC)
    session.add(outbox.queued_row(first, now))
    if second is not None:
        await session.flush()  # the plan to the focal point first: ``seq`` is the case's order
        session.add(outbox.queued_row(second, now, after_id=first.envelope.id))
    if message.type is MessageType.CONSENT_WITHDRAWAL and message.consent_ref:
        # The person withdrew: what came under the consent is restricted now, not once the
        # broker is reached (it may be down for hours).
        await withdrawals.learned(
            session, message.case_ref, message.consent_ref, now, withdrawals.FROM_CASE_WORKER
        )
    queued = _queued(first.envelope.id, on)
    if keyed is not None:
        await idempotency.remember(session, keyed, queued, now, sending.key_lifetime)
    try:
        await session.commit()
    except IntegrityError:  # the same key, concurrently: answer as the first was answered
        await session.rollback()
        earlier = await idempotency.previous(session, keyed, now) if keyed else None
        if earlier is None:
            raise
        return earlier.response(replayed=True)
    structlog.contextvars.bind_contextvars(message_id=first.envelope.id)
    log.info("message_queued", type=message.type.value)
    sending.sender.wake()
    answer = queued
    wait = wait_asked(prefer, sending.settings.node_prefer_wait_max_seconds)
    if wait > 0:
        answer = await _outcome(sending, first.envelope.id, on, wait)
        if keyed is not None and answer != queued:
            await idempotency.settle(session, keyed, answer)
            await session.commit()
    location = {"location": f"/outbox/{first.envelope.id}"} if answer.status == 202 else None
    return answer.response(headers=location)


def _queued(message_id: str, on: PlanOn | None) -> Answer:
    if on is None:
        return Answer(202, QueuedOut(message_id=message_id).model_dump(mode="json"))
    to_org = return_plan.queued_to_org(on, message_id)
    body = QueuedPlanOut(message_id=message_id, to_receiving_org=to_org)
    return Answer(202, body.model_dump(mode="json"))


async def _outcome(sending: Sending, message_id: str, on: PlanOn | None, wait: float) -> Answer:
    """Wait up to ``wait`` seconds for the message (and a plan's second) to be settled; the
    answer as it stands then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        changed = sending.sender.changes()
        async with sending.sessions() as session:
            answer, settled = await current_answer(session, message_id, on)
        remaining = deadline - loop.time()
        if settled or remaining <= 0:
            return answer
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, _LOOK_EVERY)):
                await changed.wait()


async def current_answer(
    session: AsyncSession, message_id: str, on: PlanOn | None
) -> tuple[Answer, bool]:
    """The answer to a send as its message stands now, and whether that is final."""
    row = await outbox.get(session, message_id)
    if row is None:  # pragma: no cover - it was committed before
        raise LookupError(message_id)
    if row.state is OutboxState.REFUSED:
        problem = outbox.refusal(row) or {}
        return Answer(int(problem.get("status", 502)), problem), True
    if row.state is OutboxState.QUEUED:
        return _queued(message_id, on), False
    sent = await outbox.sent(session, message_id)
    if sent is None:  # pragma: no cover - written with the receipted state
        raise LookupError(message_id)
    if on is None:
        return Answer(201, sent.model_dump(mode="json")), True
    to_org, settled = await return_plan.to_org(session, sent, on)
    body = ReturnPreparationSentOut(**sent.model_dump(), to_receiving_org=to_org)
    return Answer(201, body.model_dump(mode="json")), settled


async def once(
    sending: Sending,
    session: AsyncSession,
    principal: Principal,
    request: Request,
    *,
    route: str,
    key: str | None,
    status: int,
    call: Callable[[], Awaitable[dict[str, Any]]],
) -> JSONResponse:
    """A call that reaches the broker synchronously (a consent registered or withdrawn),
    done once per ``Idempotency-Key``: the key is reserved first, then the answer kept; a
    refusal frees the key again."""
    keyed = await idempotency.keyed(request, key, route, _caller(principal))
    if keyed is None:
        return await _call(call, status)
    now = datetime.now(UTC)
    earlier = await idempotency.previous(session, keyed, now)
    if earlier is not None:
        return earlier.response(replayed=True)
    await idempotency.remember(session, keyed, None, now, sending.key_lifetime)
    try:
        await session.commit()
    except IntegrityError:  # reserved concurrently
        await session.rollback()
        earlier = await idempotency.previous(session, keyed, now)
        if earlier is None:
            raise
        return earlier.response(replayed=True)
    try:
        response = await _call(call, status)
    except BaseException:
        await _release(session, keyed)
        raise
    body: dict[str, Any] = json_body(response)
    await idempotency.settle(session, keyed, Answer(status, body))
    await session.commit()
    return response


async def _call(call: Callable[[], Awaitable[dict[str, Any]]], status: int) -> JSONResponse:
    try:
        return JSONResponse(await call(), status_code=status)
    except BrokerError as exc:
        raise refused(exc) from exc


async def _release(session: AsyncSession, keyed: Keyed) -> None:
    with contextlib.suppress(Exception):  # the reservation then lapses by itself
        await session.rollback()
        await idempotency.release(session, keyed)
        await session.commit()


def _caller(principal: Principal) -> str:
    """Whose keys these are: the user (or the administrator), in their organisation."""
    return f"{principal.user}\n{principal.organisation or ''}"


def json_body(response: JSONResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bytes(response.body))
    return body
