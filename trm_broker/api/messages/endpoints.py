"""`/v1/messages`: submit a signed envelope, follow its delivery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import SignedCaller, defers_nonce, spend_after_refusal, spend_nonce
from trm_broker.api.deps import BrokerState, Session, State, WriteTurn
from trm_broker.api.messages import service
from trm_broker.api.messages.schemas import MessageStatusOut, ReceiptOut
from trm_broker.store import cases
from trm_broker.store.models import Refusal
from trm_broker.web.problems import Conflict, ConsentMissing, Problem, WorkflowRule

router = APIRouter(prefix="/v1/messages", tags=["messages"])
log = structlog.get_logger("trm_broker.messages")

_ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The envelope: a JWS (flattened JSON, alg EdDSA, typ trm-envelope+jws) "
        "whose payload is the RFC 8785 JSON of the envelope (docs/design.md §5).",
        "content": {
            "application/jose+json": {
                "schema": {
                    "type": "object",
                    "required": ["protected", "payload", "signature"],
                    "additionalProperties": False,
                    "properties": {
                        "protected": {"type": "string"},
                        "payload": {"type": "string"},
                        "signature": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=ReceiptOut,
    openapi_extra=_ENVELOPE_BODY,
    responses={
        200: {"model": ReceiptOut, "description": "Already accepted: the original receipt."}
    },
)
@defers_nonce
async def submit_message(
    caller: SignedCaller, response: Response, session: Session, state: State
) -> ReceiptOut:
    """Accept a signed envelope: verify it, store it with its delivery, answer a signed receipt.

    The request is signed by the sender (RFC 9421); the receipt is sent only after the
    transaction has committed (principle 4). The request's nonce is spent in that same
    transaction (one commit per accepted message), or on its own when the answer is
    anything else.
    """
    body = caller.body
    skew = timedelta(seconds=state.settings.clock_skew_seconds)
    seen = service.Submission()

    async def accept() -> tuple[ReceiptOut, bool]:
        return await service.accept(
            session,
            body,
            state.signing_key,
            datetime.now(UTC),
            skew,
            caller.participant_id,
            state.rules(),
            registry=caller.registry,
            before_writes=spend,
            seen=seen,
        )

    turn = state.write_turn()

    async def spend() -> None:
        await turn.take()
        await spend_nonce(session, caller)

    try:
        try:
            receipt, created = await _accept_once(session, state, accept, spend)
        except Problem:
            await turn.take()
            await spend_after_refusal(session, caller)  # a replay's 401 instead, if it is one
            raise
    except Problem as problem:
        state.metrics.refused(seen.message_type, problem)
        raise
    finally:
        await _end_turn(session, turn)
    if not created:
        response.status_code = 200
        return receipt
    state.metrics.accepted(seen.message_type)
    log.info("message_accepted", message_type=seen.message_type)
    if seen.pushed:
        state.wake_dispatcher()
    state.wake_sequencer()
    state.notify_inbox()
    return receipt


async def _accept_once(
    session: AsyncSession,
    state: BrokerState,
    accept: Callable[[], Awaitable[tuple[ReceiptOut, bool]]],
    spend: Callable[[], Awaitable[None]],
) -> tuple[ReceiptOut, bool]:
    """Run ``accept`` and commit; a concurrent request storing the same envelope makes this
    one a repeat (the original receipt), never a refusal. A repeat spends the request's
    nonce and commits that alone."""
    try:
        try:
            receipt, created = await accept()
            if not created:
                await spend()
            await session.commit()
        except IntegrityError:
            # The same id was stored concurrently (at flush or commit): answer as for a repeat.
            await session.rollback()
            receipt, created = await accept()
            if created:
                raise Conflict("The message could not be stored; send it again.") from None
            await spend()
            await session.commit()
    except (ConsentMissing, WorkflowRule, Conflict) as problem:
        # The same envelope may have been accepted meanwhile (its case then looks referred
        # already, or changed): a repeat gets the original receipt, not a refusal.
        await session.rollback()
        try:
            receipt, created = await accept()
        except (ConsentMissing, WorkflowRule, Conflict, IntegrityError):
            created = True
        if created:
            await session.rollback()
            await _record_refusal(state, problem)
            raise problem from None
        await spend()
        await session.commit()
    return receipt, created


async def _end_turn(session: AsyncSession, turn: WriteTurn) -> None:
    """Release the request's turn to write once nothing is left open (a refusal's rollback
    may have been interrupted: end it first)."""
    try:
        if session.in_transaction():
            await session.rollback()
    finally:
        turn.release()


async def _record_refusal(state: BrokerState, problem: Problem) -> None:
    """Keep the refused rule (type and countries only) for the auditors' report: in its own
    transaction, since the message's was rolled back."""
    refusal = getattr(problem, "refusal", None)
    if not isinstance(refusal, Refusal):
        return
    async with state.sessions() as session:
        cases.add_refusal(session, refusal)
        await session.commit()


@router.get("/{message_id}", response_model=MessageStatusOut)
async def message_status(
    message_id: str, caller: SignedCaller, session: Session
) -> MessageStatusOut:
    """A message's acceptance and delivery state, without any of its content, for its
    sender and recipient only."""
    return await service.status(session, message_id, caller.participant_id)
