"""The node's routes of received messages: ``GET /messages`` and ``GET /messages/{id}``,
each message with the consent it came under and its recipient's next steps in the case."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.logs import bind_ids
from trm_broker.node import received, store
from trm_broker.node.access import Principal, Reader
from trm_broker.node.schemas import ReceivedList, ReceivedMessageOut
from trm_broker.web.problems import NotFound
from trm_broker.web.query import MAX_CURSOR

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

router = APIRouter(tags=["case workers"])


def _node(request: Request) -> NodeState:
    state: NodeState = request.app.state.node
    return state


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _node(request).sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session)]
WithNextSteps = Annotated[
    bool,
    Query(
        alias="next_steps",
        description="Read each message's case at the broker for the recipient's next steps "
        "(one signed read per case); `false` leaves them out.",
    ),
]


@router.get("/messages", response_model=ReceivedList)
async def received_messages(
    request: Request,
    session: Session,
    principal: Reader,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_CURSOR, description="The last seq already read.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    with_next_steps: WithNextSteps = True,
) -> ReceivedList:
    """Messages received for your organisation, decrypted, in arrival order: each with the
    consent it came under (`consent_ref`) and what you may send next in its case."""
    state = _node(request)
    rows = await store.list_received(session, limit, after, principal.participants(state.keys))
    steps = _next_steps(request, principal) if with_next_steps else None
    retention = state.settings.node_withdrawn_retention
    return ReceivedList(messages=await received.views(rows, retention, steps))


@router.get("/messages/{message_id}", response_model=ReceivedMessageOut)
async def received_message(
    message_id: Annotated[str, Path(pattern=UUID7_PATTERN, description="The message's id.")],
    request: Request,
    session: Session,
    principal: Reader,
    with_next_steps: WithNextSteps = True,
) -> ReceivedMessageOut:
    """One message received for your organisation, decrypted: the consent it came under
    (`consent_ref`) and what you may send next in its case, each step with the consents
    that would cover it (with one, leave consent_ref out of the reply: the node fills it in)."""
    state = _node(request)
    row = await received.addressed_to(session, message_id, principal.participants(state.keys))
    if row is None:
        raise NotFound("No message of that id was received for your organisation.")
    bind_ids(message_id=row.id)
    steps = _next_steps(request, principal) if with_next_steps else None
    return await received.view(row, state.settings.node_withdrawn_retention, steps)


def _next_steps(request: Request, principal: Principal) -> received.NextSteps:
    state = _node(request)
    return received.NextSteps(state.broker, principal.keyring(state.keys))
