"""`/v1/inbox`: fetch unacknowledged messages (long-poll) and acknowledge them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from trm_broker.api.auth import SignedCaller
from trm_broker.api.deps import Session, State
from trm_broker.api.inbox.schemas import AckIn, AckOut, InboxItemOut, InboxPage
from trm_broker.api.messages.schemas import SignedObject
from trm_broker.delivery import outcomes
from trm_broker.delivery.acknowledgement import AckRefused, verify_ack
from trm_broker.store import deliveries as outbox
from trm_broker.store import messages
from trm_broker.web.body import parse_json
from trm_broker.web.problems import InvalidAck, NotFound
from trm_broker.web.query import MAX_CURSOR

router = APIRouter(prefix="/v1/inbox", tags=["inbox"])


@router.get("", response_model=InboxPage)
async def fetch(
    caller: SignedCaller,
    state: State,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_CURSOR, description="The cursor of the last item already fetched."),
    ] = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=300,
            description="Seconds to wait for a message when there is none "
            "(long-poll), up to TRM_INBOX_MAX_WAIT_SECONDS.",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> InboxPage:
    """Your unacknowledged messages after ``after``, in acceptance order; if there are
    none, wait up to ``wait`` seconds for one. Nothing leaves the queue until you
    acknowledge it: fetching again without ``after`` returns everything still open."""
    deadline = time.monotonic() + min(wait, state.settings.inbox_max_wait_seconds)
    while True:
        arrived = state.inbox_signal()
        async with state.sessions() as session:
            items = await outbox.fetch(
                session, caller.participant_id, after, limit, datetime.now(UTC)
            )
            await session.commit()
        remaining = deadline - time.monotonic()
        if items or remaining <= 0:
            break
        # Woken at once by a message accepted here; others' (replicas) are seen by polling.
        # asyncio.timeout, not wait_for, which on 3.11 can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, state.settings.delivery_poll_seconds)):
                await arrived.wait()
    return InboxPage(
        items=[
            InboxItemOut(
                cursor=item.cursor,
                message_id=item.message_id,
                envelope=SignedObject(**json.loads(item.envelope)),
                receipt=SignedObject(**json.loads(item.receipt)),
            )
            for item in items
        ],
        next=items[-1].cursor if items else None,
    )


@router.post(
    "/{message_id}/ack",
    response_model=AckOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AckIn"}}},
        }
    },
)
async def acknowledge(
    message_id: Annotated[str, Path(max_length=64)],
    caller: SignedCaller,
    session: Session,
) -> AckOut:
    """Record your signed answer to a fetched message: it is then delivered (or rejected,
    for good). Idempotent: a repeat returns the first answer's outcome."""
    body = parse_json(AckIn, caller.body)
    message = await messages.get(session, message_id)
    delivery = await messages.delivery_of(session, message_id) if message else None
    if message is None or delivery is None or delivery.recipient_id != caller.participant_id:
        raise NotFound("No message with this id was sent to you.")
    if delivery.status == outbox.DROPPED:
        raise NotFound("No message with this id is waiting for you (its consent was withdrawn).")
    if delivery.status in (outbox.ACKNOWLEDGED, outbox.REJECTED):
        return AckOut(message_id=message_id, status=_outcome(delivery.status))
    now = datetime.now(UTC)
    ack = body.ack.model_dump()
    try:
        claims = await verify_ack(
            session, ack, message_id, caller.participant_id, message.envelope_digest, now
        )
    except AckRefused as refused:
        raise InvalidAck(
            "The acknowledgement does not verify for this message: sign its id, envelope "
            "digest and your participant id with your current signing key.",
            reason=refused.code,
        ) from None
    rejected = claims.status == "rejected"
    recorded = await outcomes.record_answer(
        session, delivery.id, message_id, ack, claims, delivery.attempts + 1, now, pulled=True
    )
    await session.commit()
    if not recorded:  # answered meanwhile (a push, or a concurrent ack): the first stands
        await session.refresh(delivery)
        return AckOut(message_id=message_id, status=_outcome(delivery.status))
    return AckOut(message_id=message_id, status="rejected" if rejected else "acknowledged")


def _outcome(status: str) -> Literal["acknowledged", "rejected"]:
    return "rejected" if status == outbox.REJECTED else "acknowledged"
