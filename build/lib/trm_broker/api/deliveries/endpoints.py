"""`/v1/deliveries`: dead letters for operators, and putting them back in the queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from trm_broker.api.auth import OperatorCaller
from trm_broker.api.deps import Session, State
from trm_broker.delivery import outcomes
from trm_broker.store import deliveries as outbox
from trm_broker.store import messages
from trm_broker.web.problems import Conflict, NotFound
from trm_broker.web.query import MAX_CURSOR

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


class DeadLetterOut(BaseModel):
    """A message that was not delivered within the maximum age: metadata only (no case
    reference, no content)."""

    cursor: int
    message_id: str
    type: str
    sender: str
    recipient: str
    accepted_at: datetime
    attempts: int
    last_error: str | None
    dead_lettered_at: datetime | None


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterOut]
    next: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class RequeuedOut(BaseModel):
    message_id: str
    status: str = "pending"


@router.get("", response_model=DeadLetterList)
async def dead_letters(
    _: OperatorCaller,
    session: Session,
    status: Annotated[
        str, Query(pattern="^dead_lettered$", description="Only dead_lettered is listed.")
    ] = "dead_lettered",
    recipient: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_CURSOR)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterList:
    """Dead letters in acceptance order (operators only): re-queue them, oldest first,
    once the recipient is reachable again."""
    rows = await outbox.dead_letters(session, limit, after, recipient)
    items = [
        DeadLetterOut(
            cursor=delivery.id,
            message_id=message.id,
            type=message.type,
            sender=message.sender_id,
            recipient=delivery.recipient_id,
            accepted_at=message.accepted_at,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            dead_lettered_at=delivery.dead_lettered_at,
        )
        for delivery, message in rows
    ]
    return DeadLetterList(
        dead_letters=items, next=items[-1].cursor if len(items) == limit else None
    )


@router.post("/{message_id}/requeue", response_model=RequeuedOut)
async def requeue(
    message_id: Annotated[str, Path(max_length=64)],
    caller: OperatorCaller,
    session: Session,
    state: State,
) -> RequeuedOut:
    """Put a dead letter back in the queue (operators only), with a new maximum age. The
    re-queue is a ledger entry naming the operator."""
    delivery = await messages.delivery_of(session, message_id)
    if delivery is None:
        raise NotFound("No message has this id.")
    if not await outcomes.requeue(session, delivery, caller.participant_id, datetime.now(UTC)):
        raise Conflict(f"Message {message_id} is {delivery.status}, not dead-lettered.")
    await session.commit()
    state.wake_dispatcher()
    state.notify_inbox()
    return RequeuedOut(message_id=message_id)
